"""The device helper: CUDA when present, else CPU; MPS only on request."""

import pytest
import torch

from llmcourse.device import DEVICE_ENV, describe_devices, pick_device


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
