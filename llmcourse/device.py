"""The one place that picks the device every lesson runs on.

CUDA when present, else the CPU. Apple's MPS only when asked for (``pick_device("mps")`` or
``LLMCOURSE_DEVICE=mps``): it gives different numbers for some of the course's models.
"""

import os

import torch

DEVICE_ENV = "LLMCOURSE_DEVICE"


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """``requested``, else ``$LLMCOURSE_DEVICE``, else CUDA if available, else CPU."""
    choice = requested if requested is not None else os.environ.get(DEVICE_ENV) or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} was asked for, but PyTorch sees no CUDA GPU here; use 'cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {choice!r} was asked for, but MPS is not available here; use 'cpu'.")
    return device


def describe_devices() -> str:
    """One line: which accelerators PyTorch sees."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"
    mps = "yes" if torch.backends.mps.is_available() else "no"
    return f"CPU ({os.cpu_count()} cores), CUDA: {cuda}, MPS: {mps}"
