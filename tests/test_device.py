"""The device helper: CUDA when present, else CPU; MPS only on request. Its check mode (run in a child process,
since it patches torch for the process): a model called with tensors never moved to its device fails."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from llmcourse.device import CHECK_ENV, DEVICE_ENV, describe_devices, pick_device


def test_default_is_cuda_or_cpu_never_mps(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_environment_variable_and_argument_choose(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert pick_device().type == "cpu"
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.backends.mps.is_available() or torch.cuda.is_available(), reason="needs a CPU-only machine")
@pytest.mark.parametrize("device", ["mps", "cuda"])
def test_asking_for_a_missing_accelerator_says_what_to_use(device):
    with pytest.raises(RuntimeError, match="use 'cpu'"):
        pick_device(device)


def test_description_names_every_backend():
    text = describe_devices()
    assert "CPU" in text and "CUDA" in text and "MPS" in text


CHECK_MODE_SESSION = """
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from llmcourse.device import DeviceNotFollowed, watch_device_use

torch.manual_seed(0)
model = watch_device_use(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11)).eval())
ids = torch.tensor([[1, 2, 3]])

def fails(call, *words):
    try:
        call()
    except DeviceNotFollowed as err:
        assert all(w in str(err) for w in words), str(err)
        return
    raise AssertionError("no DeviceNotFollowed")

fails(lambda: model(ids), "never moved", "positional argument 1", ".to(model.device)")
moved = ids.to(model.device)
fails(lambda: model(moved, labels=ids), "`labels`")
fails(lambda: model.generate(ids, max_new_tokens=2, do_sample=False), "positional argument 1")
out = model(moved, labels=moved)  # moved, and made on the device: both pass
model(torch.tensor([[4, 5]], device=model.device))
model(moved[:, :2])  # what is computed from a moved tensor stays on the device
assert type(model.generate(moved, max_new_tokens=2, do_sample=False)).__name__ == "MovedTensor"
probs = out.logits[0, -1].softmax(-1)  # the model's outputs are on its device
fails(lambda: torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0)), "Generator(device=")
torch.multinomial(probs, 1, generator=torch.Generator(device=probs.device).manual_seed(0))
torch.multinomial(torch.ones(3), 1, generator=torch.Generator().manual_seed(0))  # CPU data: no model involved
assert repr(moved) == "tensor([[1, 2, 3]])" and f"{moved[0, 1]:.1f}" == "2.0"
import copy
twin = copy.deepcopy(moved)  # a deep copy (of a KV cache, say) stays marked
assert type(twin).__name__ == "MovedTensor" and twin is not moved and torch.equal(twin, moved)
with torch.no_grad():  # a cache that carries gradients cannot be deep-copied, marked or not
    cached = model(moved, use_cache=True)
    again = model(moved[:, -1:], past_key_values=copy.deepcopy(cached.past_key_values), use_cache=True)
    whole = model(torch.cat([moved, moved[:, -1:]], 1)).logits[0, -1]
assert torch.allclose(again.logits[0, -1], whole, atol=1e-5)
print("ok")
"""


def test_the_check_mode_fails_model_calls_and_samplers_that_do_not_follow_the_model_device():
    env = dict(os.environ, **{CHECK_ENV: "1", "PYTHONWARNINGS": "ignore"})
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(CHECK_MODE_SESSION)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_without_the_check_mode_a_model_is_left_alone(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmcourse.device import watch_device_use

    monkeypatch.delenv(CHECK_ENV, raising=False)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11))
    assert watch_device_use(model) is model and not model._forward_pre_hooks and "generate" not in vars(model)
