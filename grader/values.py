"""Plain values: what comes back from a learner's function, safe to pass between processes.

Tensors become ``TensorData`` (a NumPy array plus the torch dtype), containers keep their kind,
anything else becomes ``Opaque``. The JSON codec never unpickles, so a submission cannot smuggle
code into the process that gives the verdict.
"""

import base64
import json
from dataclasses import dataclass

import numpy as np


class AttrDict(dict):
    """A dict that also reads as attributes (``d.input_ids``), as a tokenizer's output or a notebook node does."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class TensorData:
    """A torch.Tensor seen as data: its values and its torch dtype name (``"torch.float32"``)."""

    array: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)


@dataclass
class Opaque:
    """A value of a type the checks do not read (kept by type name and a short repr)."""

    type_name: str
    text: str


def to_plain(value):
    """Convert a learner's return value to plain data (tensors to TensorData, recursively)."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        array = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
        return TensorData(array, str(value.dtype))
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return Opaque(type(value).__name__, repr(value)[:200])


def describe(value) -> str:
    """A short human description of a plain value's type and shape."""
    if isinstance(value, TensorData):
        return f"a tensor of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {tuple(value.shape)} (expected a torch.Tensor)"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, Opaque):
        return f"a {value.type_name}"
    return f"{type(value).__name__} {value!r}"


def _encode_array(array: np.ndarray) -> dict:
    array = np.asarray(array, order="C")  # not ascontiguousarray: it turns a 0-d array (a loss, a sum) into shape (1,)
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_array(obj: dict) -> np.ndarray:
    dtype = np.dtype(obj["dtype"])
    if dtype.hasobject:
        raise ValueError("object arrays are not plain data")
    return np.frombuffer(base64.b64decode(obj["data"]), dtype=dtype).reshape(obj["shape"]).copy()


def _encode(value):
    if isinstance(value, TensorData):
        return {"__tensor__": _encode_array(value.array), "torch_dtype": value.dtype}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return {"__opaque__": ["ndarray(object)", repr(value)[:200]]}
        return {"__ndarray__": _encode_array(value)}
    if isinstance(value, Opaque):
        return {"__opaque__": [value.type_name, value.text]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": {k: _encode(v) for k, v in value.items()}}
    return value


def _decode(obj):
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return TensorData(_decode_array(obj["__tensor__"]), str(obj["torch_dtype"]))
        if "__ndarray__" in obj:
            return _decode_array(obj["__ndarray__"])
        if "__opaque__" in obj:
            return Opaque(*map(str, obj["__opaque__"]))
        if "__tuple__" in obj:
            return tuple(_decode(v) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {str(k): _decode(v) for k, v in obj["__dict__"].items()}
        raise ValueError(f"unexpected object in plain data: {sorted(obj)}")
    return obj


def dumps(value) -> str:
    """Plain value to a JSON string."""
    return json.dumps(_encode(value))


def loads(text: str):
    """JSON string back to a plain value (no pickle, no code)."""
    return _decode(json.loads(text))
