"""Judging an exercise that returns one number: is it a plain Python number, how far off is it, and which
named mistake gives it. Shared by the chapters whose exercises compute counts, costs and scores."""

import math

import numpy as np

from grader.compare import Problem
from grader.values import TensorData, describe

INT64_MAX = 2 ** 63 - 1


def is_number(value) -> bool:
    """A plain Python int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ratio_hint(got: float, expected: float) -> str:
    """How far off a number is, as a factor: a factor of 1,000 or 86,400 points at a unit slip."""
    if expected == 0 or got == 0 or not math.isfinite(got):
        return ""
    ratio = got / expected
    if ratio < 0:
        return " (the opposite sign)"
    return f" (yours is {ratio:.4g} times the expected value)" if ratio >= 1 else \
        f" (yours is 1/{1 / ratio:.4g} of the expected value)"


def scalar_problem(out, expected: float, what: str, want: str = "float", rel_tol: float = 1e-6,
                   abs_tol: float = 0.0) -> str | None:
    """Why ``out`` is not a plain Python number, or None when it is one. ``what`` names the value with its
    article ("the count"); ``want`` is "float" or "int"."""
    if is_number(out):
        return None
    if isinstance(out, TensorData) and out.array.size == 1:
        value = out.array.item()
        if math.isclose(value, expected, rel_tol=max(rel_tol, 1e-6), abs_tol=abs_tol):  # float32 rounding
            return Problem(f"returned a tensor ({out.dtype}) holding the right number: return a Python {want} "
                           f"(use .item())", f"returned a tensor: return a Python {want} (use .item())")
        if out.array.dtype.kind in "iu" and expected > INT64_MAX:
            return (f"returned an integer tensor ({out.dtype}) holding {value:.4g} instead of {expected:.4g}: "
                    f"int64 overflows above 9.2e18; compute with Python numbers and return a Python {want}")
        return f"returned a tensor ({out.dtype}) holding {value:.6g}; expected the Python {want} {expected:.6g}"
    if isinstance(out, str):
        return Problem(f"returned the string {out!r}: return {what} as a Python {want}, not formatted text",
                       f"returned formatted text: return {what} as a Python {want}, not a string")
    if isinstance(out, np.ndarray):
        return f"returned a NumPy array of shape {out.shape}: return {what} as a Python {want}"
    return f"{what} should be a Python {want}; got {describe(out)}"


def number_problem(case, out, expected: float, what: str, mistakes: list, unit: str = "",
                   rel_tol: float = 1e-6, abs_tol: float = 0.0) -> str | None:
    """What is wrong with a returned number (None when it is within the tolerance), naming the first of
    ``mistakes`` (``Mistake``s, made on this case's inputs) that gives the same number."""
    problem = scalar_problem(out, expected, what, rel_tol=rel_tol, abs_tol=abs_tol)
    if problem:
        return problem
    if math.isclose(out, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        return None
    text = f"returned {out:.6g}; expected {expected:.6g}{' ' + unit if unit else ''}{ratio_hint(out, expected)}"
    for mistake in mistakes:
        try:
            candidate = float(case.call(mistake.make))
        except Exception:  # noqa: BLE001  (that mistake does not apply to this case)
            continue
        if math.isclose(out, candidate, rel_tol=rel_tol, abs_tol=abs_tol):
            return Problem(text, mistake.description)
    return text
