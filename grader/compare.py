"""Comparing plain outputs with expected values, and naming the mistake a wrong output matches."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from grader.values import TensorData, describe, to_plain


class Problem(str):
    """What is wrong with one case (the text a learner reads) and, as data, the named mistake it matches.

    A judge returns None when the output is right, else a ``str`` or a ``Problem``.
    """

    mistake: str | None

    def __new__(cls, text: str, mistake: str | None = None):
        problem = super().__new__(cls, text)
        problem.mistake = mistake
        return problem


@dataclass
class Mistake:
    """A common wrong answer: what it is (shown to the learner) and a function that makes it."""

    description: str
    make: Callable  # same arguments as the exercise; returns what that mistake returns


def _array(value):
    if isinstance(value, TensorData):
        return value.array
    if isinstance(value, np.ndarray):
        return value
    return None


def close(a, b, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same structure, same shapes, same values (NaN equal to NaN)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y, atol, rtol) for x, y in zip(a, b))
    xa, xb = _array(a), _array(b)
    if xa is None or xb is None:
        return type(a) is type(b) and a == b
    if xa.shape != xb.shape:
        return False
    if xa.dtype == bool or xb.dtype == bool:
        return xa.dtype == xb.dtype and bool(np.array_equal(xa, xb))
    return bool(np.allclose(xa.astype(np.float64), xb.astype(np.float64), atol=atol, rtol=rtol, equal_nan=True))


def name_mistake(out, case, mistakes: list) -> str | None:
    """The description of the first known mistake whose output equals ``out`` on this case."""
    for mistake in mistakes:
        try:
            candidate = to_plain(case.call(mistake.make))
        except Exception:  # that mistake does not apply to this case's shapes
            continue
        if close(out, candidate, case.atol, case.rtol):
            return mistake.description
    return None


def with_mistake(problem: str, out, case, mistakes: list) -> Problem:
    """``problem``, carrying the name of the known mistake that ``out`` matches (if any)."""
    return Problem(problem, name_mistake(out, case, mistakes))


def tensor_problem(out, expected: np.ndarray, case, what: str = "the output",
                   float_dtype: bool = True) -> str | None:
    """What is wrong with a returned tensor against the expected array, or None when it matches."""
    if not isinstance(out, TensorData):
        return f"{what} should be a torch.Tensor of shape {tuple(expected.shape)}; got {describe(out)}"
    got = out.array
    if got.shape != expected.shape:
        return f"{what} has shape {tuple(got.shape)}; expected {tuple(expected.shape)}"
    if float_dtype and not np.issubdtype(got.dtype, np.floating):
        return f"{what} has dtype {out.dtype}; expected a floating-point tensor"
    if float_dtype and np.isnan(got).any() and not np.isnan(expected).any():
        return f"{what} contains NaN ({int(np.isnan(got).sum())} of {got.size} values)"
    if float_dtype and np.isinf(got).any() and not np.isinf(expected).any():
        return f"{what} contains inf ({int(np.isinf(got).sum())} of {got.size} values)"
    if close(out, TensorData(expected, out.dtype), case.atol, case.rtol):
        return None
    with np.errstate(invalid="ignore"):
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))  # equal infinities differ by nan, not inf
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"{what} has the right shape but wrong values: the largest difference is "
            f"{float(diff[worst]):.3g} at index {tuple(int(i) for i in worst)} "
            f"(yours {float(got[worst]):.5g}, expected {float(expected[worst]):.5g})")
