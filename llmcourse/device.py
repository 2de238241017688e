"""The one place that picks the device every lesson runs on.

CUDA when present, else the CPU. Apple's MPS only when asked for (``pick_device("mps")`` or
``LLMCOURSE_DEVICE=mps``): it gives different numbers for some of the course's models.
"""

import copy
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


# ---------------------------------------------------------------- the check mode of the test suite
#
# On a GPU, a model called with tensors the code never moved to ``model.device`` fails; on the CPU, ``.to(cpu)``
# returns the very tensor it was given, so nothing shows the omission. With ``LLMCOURSE_DEVICE_CHECK=1`` (the
# notebook tests set it) the loaders watch their models: a tensor moved with ``.to(device)``, or made with
# ``device=...``, is marked (a subclass that every operation on it passes on, as a CUDA tensor's device is), and
# a model called with an unmarked tensor, or a sampler drawing from a marked tensor with a generator made
# without a device, raises an error that names the fix.

CHECK_ENV = "LLMCOURSE_DEVICE_CHECK"
_FACTORIES = ("tensor", "as_tensor", "arange", "zeros", "ones", "full", "empty", "rand", "randn", "randint",
              "randperm", "linspace", "eye")


class DeviceNotFollowed(RuntimeError):
    """Code called a model with a tensor it never moved to the model's device."""


class MovedTensor(torch.Tensor):
    """A tensor the check mode saw moved to a device; the results of operations on it are marked too."""

    def __repr__(self, **kwargs):  # printed and formatted as the tensor it stands for (f"{loss:.2f}")
        return self.as_subclass(torch.Tensor).__repr__(**kwargs)

    def __format__(self, spec):
        return self.as_subclass(torch.Tensor).__format__(spec)

    def __deepcopy__(self, memo):  # a KV cache is deep-copied to be reused for several continuations: stays marked
        if id(self) not in memo:
            memo[id(self)] = _mark(copy.deepcopy(self.as_subclass(torch.Tensor), memo))
        return memo[id(self)]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in (*args, *kwargs.values()):
            if isinstance(value, _Generator) and not value.device_given:
                raise DeviceNotFollowed(
                    f"`{getattr(func, '__name__', func)}` draws from a tensor on the model's device with a "
                    "generator made without one: on a GPU a CPU generator cannot sample CUDA probabilities. "
                    "Make it with `torch.Generator(device=logits.device)`.")
        return super().__torch_function__(func, types, args, kwargs)


class _Generator(torch.Generator):
    """``torch.Generator`` that remembers whether it was made on a named device."""

    def __new__(cls, device=None):
        return super().__new__(cls, "cpu" if device is None else device)

    def __init__(self, device=None):
        self.device_given = device is not None


def _names_a_device(args, kwargs) -> bool:
    """Whether a ``Tensor.to`` call moves to a device (not only to a dtype)."""
    if kwargs.get("device") is not None:
        return True
    for arg in args:
        if isinstance(arg, (torch.device, int)) or isinstance(arg, MovedTensor):
            return True
        if isinstance(arg, str):
            try:
                torch.device(arg)
                return True
            except RuntimeError:
                pass
    return False


def _mark(value):
    if type(value) is torch.Tensor or isinstance(value, torch.nn.Parameter):
        return value.as_subclass(MovedTensor)
    return value


def _install_marking() -> None:
    """Once per process: ``Tensor.to`` and the factories mark what they put on a device."""
    if getattr(torch.Tensor.to, "_marks_devices", False):
        return
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        out = original_to(self, *args, **kwargs)
        return _mark(out) if _names_a_device(args, kwargs) else out

    to._marks_devices = True
    torch.Tensor.to = to
    for name in _FACTORIES:
        factory = getattr(torch, name)

        def made(*args, _factory=factory, **kwargs):
            out = _factory(*args, **kwargs)
            return _mark(out) if kwargs.get("device") is not None else out

        setattr(torch, name, made)
    torch.Generator = _Generator


def _unmarked(value, where: str) -> list[str]:
    """The places in a model call's arguments that hold a tensor never moved to a device."""
    if isinstance(value, torch.Tensor):
        return [] if isinstance(value, MovedTensor) else [where]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in _unmarked(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _unmarked(v, f"{where}[{k!r}]")]
    return []


def _plain(value):
    """The call's arguments as plain tensors, so that the model runs at full speed inside."""
    if isinstance(value, MovedTensor):
        return value.as_subclass(torch.Tensor)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


def _marked_output(value):
    if isinstance(value, torch.Tensor):
        return _mark(value)
    if isinstance(value, dict):  # a ModelOutput is a dict: set its fields in place
        for key in list(value.keys()):
            value[key] = _marked_output(value[key])
        return value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_marked_output(v) for v in value)
    return value


def _check_call(model, args, kwargs) -> None:
    bad = [bad for i, arg in enumerate(args) for bad in _unmarked(arg, f"positional argument {i + 1}")]
    bad += [bad for key, value in kwargs.items() for bad in _unmarked(value, f"`{key}`")]
    if bad:
        where = ", ".join(bad)
        raise DeviceNotFollowed(
            f"{type(model).__name__} was called with a tensor never moved to the model's device ({where}): on a "
            "GPU this call fails. Move the inputs with `.to(model.device)` (a tokenizer's output has "
            "`.to(model.device)` too), or make them with `device=model.device`.")


def watch_device_use(model):
    """With ``$LLMCOURSE_DEVICE_CHECK`` set, make ``model`` (and ``model.generate``) refuse inputs never moved to
    a device; without it, do nothing. Returns the model."""
    if not os.environ.get(CHECK_ENV) or getattr(model, "_device_watched", False):
        return model
    _install_marking()
    inside = []  # the calls under way; generate calls the model itself: only the outermost call is checked

    def before(module, args, kwargs):
        if inside:
            return None
        _check_call(module, args, kwargs)
        inside.append(("forward", module))
        return _plain(args), _plain(kwargs)

    def after(module, args, kwargs, output):
        if inside and inside[-1] == ("forward", module):
            inside.pop()
            return _marked_output(output)
        return None

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True, always_call=True)
    if hasattr(model, "generate"):
        generate = model.generate

        def checked_generate(*args, **kwargs):
            _check_call(model, args, kwargs)
            inside.append(("generate", model))
            try:
                return _marked_output(generate(*_plain(args), **_plain(kwargs)))
            finally:
                inside.pop()

        model.generate = checked_generate
    model._device_watched = True
    return model
