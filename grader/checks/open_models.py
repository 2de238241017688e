"""Chapter 10, open models: weights_memory_gb, kv_cache_bytes, absmax_quantize, dequantize,
tokenizer_fertility.

The references are the formulas written out (GB = 1e9 bytes; keys and values for every layer;
symmetric per-tensor absmax with ``torch.round``, which sends halves to the even neighbour) and
published shapes (OPT-175B: 96 layers of 96 heads of 128; BLOOM-176B: 70 layers of 112 heads of 128,
176,247,271,424 parameters; SmolLM2-135M: 30 layers, 3 key/value heads of 64, 134,515,008
parameters). Each ``Mistake`` is a wrong answer learners often write, so that a wrong output can be
named, not just flagged.

Rounding in ``absmax_quantize``: two correct answers can differ by one level where ``w / scale`` lies
within float32 noise of a half (``w * (1 / scale)`` and ``w / scale`` round differently there), so
the judge accepts either neighbour within ``TIE_BAND`` of a half, except on exact halves (the case
built of them), where the decided rule, halves to even, applies.
"""

import math
import re

import numpy as np
import torch

from grader.compare import Mistake, Problem, close, tensor_problem
from grader.core import Case, Exercise, register
from grader.forbidden import QUANTIZE
from grader.numbers import is_number, number_problem, ratio_hint, scalar_problem
from grader.values import TensorData, describe

GB = 1e9
GIB = 2 ** 30
OPT_175B = 175e9
BLOOM_176B = 176_247_271_424  # BLOOM's model card; equal to a count of its 70 layers of width 14,336
SMOLLM2_135M = 134_515_008  # sum(p.numel()) of the shipped SmolLM2-135M-Instruct
TIE_BAND = 1e-4  # |w / scale - (k + 1/2)| below this: float32 noise decides the rounding, either is right


# ---------------------------------------------------------------- weights_memory_gb

def weights_memory_mistakes() -> list:
    return [
        Mistake("divided by 2**30 = 1,073,741,824 (GiB) instead of 1e9: a GB here is 10**9 bytes",
                lambda n, b: n * b / GIB),
        Mistake("returned gigabits: multiplied by 8; bytes_per_param is already in bytes",
                lambda n, b: n * b * 8 / GB),
        Mistake("treated bytes_per_param as bits (divided by 8): it is already in bytes",
                lambda n, b: n * b / 8 / GB),
        Mistake("returned bytes: divide by 1e9 to get GB", lambda n, b: n * b),
        Mistake("returned MB (divided by 1e6): a GB is 1e9 bytes", lambda n, b: n * b / 1e6),
        Mistake("forgot bytes_per_param: n_params / 1e9 is billions of parameters, not GB",
                lambda n, b: n / GB),
        Mistake("divided by bytes_per_param instead of multiplying", lambda n, b: n / b / GB),
        Mistake("used // (floor division): GB is a float; use /", lambda n, b: float(n * b // GB)),
        Mistake("divided by 1024**2 * 1000 (mixed binary and decimal units): a GB is 1e9 bytes",
                lambda n, b: n * b / (1024 ** 2 * 1000)),
    ]


def weights_memory_cases() -> list:
    return [
        Case("OPT-175B in fp16: 175e9 parameters, 2 bytes each (350 GB)", (OPT_175B, 2)),
        Case(f"BLOOM-176B ({BLOOM_176B:,} parameters) in int8, 1 byte each", (BLOOM_176B, 1)),
        Case("OPT-175B in int4: half a byte per parameter", (OPT_175B, 0.5)),
        Case(f"SmolLM2-135M ({SMOLLM2_135M:,} parameters) in fp32, 4 bytes each", (SMOLLM2_135M, 4)),
        Case("a GGUF Q4_1 model: 7e9 parameters at 5 bits = 0.625 bytes each", (7e9, 0.625)),
        Case("a small model: 1,500 parameters in fp16 (far below 1 GB)", (1_500, 2)),
    ]


def judge_weights_memory(case: Case, out) -> str | None:
    n, b = case.args
    return number_problem(case, out, n * b / GB, "the memory", weights_memory_mistakes(), "GB", rel_tol=1e-9)


register(Exercise(
    name="weights_memory_gb", chapter="10", signature="(n_params, bytes_per_param)", points=1,
    make_cases=weights_memory_cases, judge=judge_weights_memory,
))


# ---------------------------------------------------------------- kv_cache_bytes

def kv_cache(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value, tensors=2):
    """Bytes of the cached keys and values (``tensors=2``), every layer, head, position and sequence."""
    return tensors * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_cache_mistakes() -> list:
    return [
        Mistake("only keys counted (or only values): the cache holds a key *and* a value vector per layer, "
                "head and position, a factor 2", lambda L, h, d, t, b, B: kv_cache(L, h, d, t, b, B, tensors=1)),
        Mistake("cached the queries too (a factor 3): only keys and values are kept for later tokens",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, t, b, B, tensors=3)),
        Mistake("forgot n_layers: every layer keeps its own keys and values",
                lambda L, h, d, t, b, B: kv_cache(1, h, d, t, b, B)),
        Mistake("forgot batch_size: each sequence of the batch has its own cache",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, t, 1, B)),
        Mistake("forgot seq_len: the cache holds one key and one value per position",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, 1, b, B)),
        Mistake("forgot n_kv_heads: each key/value head has its own vectors",
                lambda L, h, d, t, b, B: kv_cache(L, 1, d, t, b, B)),
        Mistake("forgot head_dim: each cached vector has head_dim numbers",
                lambda L, h, d, t, b, B: kv_cache(L, h, 1, t, b, B)),
        Mistake("returned the number of values: multiply by bytes_per_value",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, t, b, 1)),
        Mistake("returned bits (multiplied by 8): return bytes",
                lambda L, h, d, t, b, B: 8 * kv_cache(L, h, d, t, b, B)),
        Mistake("returned GB (divided by 1e9): return the number of bytes",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, t, b, B) / GB),
        Mistake("returned GiB (divided by 2**30): return the number of bytes",
                lambda L, h, d, t, b, B: kv_cache(L, h, d, t, b, B) / GIB),
    ]


def kv_cache_cases() -> list:
    return [
        Case("OPT-175B: 96 layers, 96 heads of 128, 2,048 tokens, batch 1, fp16 (2 bytes)",
             (96, 96, 128, 2_048, 1, 2)),
        Case("BLOOM-176B: 70 layers, 112 heads of 128, 2,048 tokens, batch 8, bf16 (2 bytes)",
             (70, 112, 128, 2_048, 8, 2)),
        Case("SmolLM2-135M: 30 layers, 3 key/value heads of 64 (grouped-query), 8,192 tokens, batch 1, fp32",
             (30, 3, 64, 8_192, 1, 4)),
        Case("a 70B model with grouped-query attention: 80 layers, 8 KV heads of 128, 4,096 tokens, "
             "batch 4, int8 (1 byte)", (80, 8, 128, 4_096, 4, 1)),
        Case("toy sizes that tell every factor apart: 3 layers, 5 heads of 7, 11 tokens, batch 13, 4 bytes",
             (3, 5, 7, 11, 13, 4)),
    ]


def judge_kv_cache(case: Case, out) -> str | None:
    expected = kv_cache(*case.args)
    mistakes = kv_cache_mistakes()
    if isinstance(out, float) and out == expected:
        return Problem(f"returned the float {out:,.1f}: a byte count is an int",
                       "returned a float: the number of bytes is an int (multiply ints, or use int(...))")
    problem = scalar_problem(out, expected, "the number of bytes", "int")
    if problem:
        return problem
    if out == expected:
        return None
    text = f"returned {out:,.6g}; expected {expected:,} bytes{ratio_hint(out, expected)}"
    for mistake in mistakes:
        if math.isclose(out, case.call(mistake.make), rel_tol=1e-9):
            return Problem(text, mistake.description)
    return text


register(Exercise(
    name="kv_cache_bytes", chapter="10",
    signature="(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value)", points=2,
    make_cases=kv_cache_cases, judge=judge_kv_cache,
))


# ---------------------------------------------------------------- absmax_quantize

def q_max(bits: int) -> int:
    """The largest level of a symmetric signed ``bits``-bit code: 2^(bits-1) - 1 (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def absmax_scale(w: torch.Tensor, bits: int = 8) -> float:
    """max |w| / (2^(bits-1) - 1), in float64."""
    return float(w.double().abs().max()) / q_max(bits)


def _levels(w, scale, rounding="even"):
    """w / scale rounded (float64): ``even`` (torch.round), ``trunc``, ``floor``, ``up`` (floor(x + 0.5)),
    ``away`` (halves away from zero) or ``none``."""
    x = w.double() / scale
    return {"even": torch.round, "trunc": torch.trunc, "floor": torch.floor, "ceil": torch.ceil,
            "up": lambda x: torch.floor(x + 0.5), "away": lambda x: torch.sign(x) * torch.floor(x.abs() + 0.5),
            "none": lambda x: x}[rounding](x)


def _as_int8(levels):
    """Store levels as int8 the way ``.to(torch.int8)`` does: values outside -128..127 wrap around."""
    return torch.remainder(levels.to(torch.int64) + 128, 256).sub(128).to(torch.int8)


def absmax_variant(w, bits=8, scale_from="max_abs", divisor=None, rounding="even", clamp=False):
    """(q, scale) of absmax quantization, with switches that reproduce the common mistakes."""
    stats = {"max_abs": w.abs().max(), "mean_abs": w.abs().mean(), "max": w.max(), "std": w.std()}
    divisor = q_max(bits) if divisor is None else divisor
    scale = float(stats[scale_from].double()) / divisor
    levels = _levels(w, scale, rounding)
    if clamp:
        levels = levels.clamp(-q_max(bits), q_max(bits))
    return _as_int8(levels), scale


def absmax_scale_mistakes(bits: int) -> list:
    """Wrong scales, each as a function of (w, bits) returning (q, scale); the descriptions do not depend on
    ``bits``, so that one mistake is reported once over cases with different bits."""
    mistakes = [
        Mistake("scale = max|w| / 2^(bits-1) (128 for 8 bits) instead of 2^(bits-1) - 1 (127): the largest "
                "weight rounds to 2^(bits-1), one level outside the range; in int8, 128 overflows and wraps "
                "around to -128", lambda w, bits=8: absmax_variant(w, bits, divisor=2 ** (bits - 1))),
        Mistake("scale = max|w| / (2^bits - 1) (255 for 8 bits): that is the unsigned range; symmetric signed "
                "levels go from -(2^(bits-1) - 1) to 2^(bits-1) - 1, so divide by 2^(bits-1) - 1",
                lambda w, bits=8: absmax_variant(w, bits, divisor=2 ** bits - 1)),
        Mistake("scale from the mean of |w| instead of the max: the largest weights then fall outside the range "
                "(and overflow or get clipped)", lambda w, bits=8: absmax_variant(w, bits, scale_from="mean_abs")),
        Mistake("scale from the standard deviation of w instead of max |w|",
                lambda w, bits=8: absmax_variant(w, bits, scale_from="std")),
        Mistake("scale from w.max() instead of w.abs().max(): a negative weight can be the largest in size",
                lambda w, bits=8: absmax_variant(w, bits, scale_from="max")),
        Mistake("scale = max|w| itself: divide it by 2^(bits-1) - 1, so that max|w| maps to the top level",
                lambda w, bits=8: absmax_variant(w, bits, divisor=1)),
        Mistake("returned the inverse scale, (2^(bits-1) - 1) / max|w|: the scale is what q is multiplied by to "
                "get w back, max|w| / (2^(bits-1) - 1)",
                lambda w, bits=8: (absmax_variant(w, bits)[0], q_max(bits) / float(w.abs().max()))),
    ]
    if bits != 8:
        mistakes.append(Mistake("ignored `bits`: always used 127 (8 bits); use 2^(bits-1) - 1",
                                lambda w, bits=8: absmax_variant(w, 8)))
    return mistakes


def absmax_level_mistakes() -> list:
    """Wrong roundings with the right scale, as functions of (w, bits) returning (q, scale)."""
    return [
        Mistake("truncated instead of rounding: .to(torch.int8) (or int()) cuts toward zero; round first with "
                "torch.round", lambda w, bits=8: absmax_variant(w, bits, rounding="trunc")),
        Mistake("rounded down with floor: round to the nearest level with torch.round",
                lambda w, bits=8: absmax_variant(w, bits, rounding="floor")),
        Mistake("rounded up with ceil: round to the nearest level with torch.round",
                lambda w, bits=8: absmax_variant(w, bits, rounding="ceil")),
        Mistake("rounded halves up (floor(x + 0.5)): the exercise rounds halves to the even neighbour, as "
                "torch.round does", lambda w, bits=8: absmax_variant(w, bits, rounding="up")),
        Mistake("rounded halves away from zero: the exercise rounds halves to the even neighbour, as "
                "torch.round does", lambda w, bits=8: absmax_variant(w, bits, rounding="away")),
    ]


def _halves(values: np.ndarray) -> np.ndarray:
    """Where values lie within TIE_BAND of a half (but not exactly on one)."""
    frac = np.abs(values - np.floor(values) - 0.5)
    return (frac < TIE_BAND) & (frac > 0)


def _levels_problem(got: np.ndarray, x: np.ndarray, expected: np.ndarray) -> str | None:
    """What is wrong with the levels ``got`` (float64) against ``expected``; near-halves accept either neighbour."""
    ok = (got == expected) | (_halves(x) & ((got == np.floor(x)) | (got == np.ceil(x))))
    if ok.all():
        return None
    bad = np.argwhere(~ok)
    first = tuple(int(i) for i in bad[0])
    return (f"{len(bad)} of {got.size} levels are wrong; at index {first}, w / scale = {x[first]:.4f}: "
            f"yours {got[first]:.4g}, expected {expected[first]:.0f}")


def _scale_value(out_scale):
    """The learner's scale as a float, when it is one number (a float, or a one-element tensor)."""
    if is_number(out_scale):
        return float(out_scale)
    if isinstance(out_scale, TensorData) and out_scale.array.size == 1:
        return float(out_scale.array.item())
    return None


def _same_scale(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5)


def _boundaries(x: np.ndarray) -> np.ndarray:
    """Where float32 noise can move a level: w / scale within TIE_BAND of a whole number, or near (but not
    exactly on) a half; exact halves only come from the case built of them, where float32 is exact too."""
    near_whole = np.abs(x - np.round(x)) < TIE_BAND
    return near_whole | _halves(x)


def _name_by(candidates: list, case: Case, q: np.ndarray | None, scale: float) -> str | None:
    """The mistake whose (q, scale) on this case matches the learner's: the scale within 1e-5, and the levels
    equal, or else equal but for one level where float32 noise decides (a truncation of 126.99999 is 126,
    of 127.0 is 127). With ``q`` None only the scale is compared: a wrong scale names its mistake whether
    the levels were then clipped or wrapped."""
    w = case.args[0]
    near = []
    for mistake in candidates:
        try:
            cq, cscale = case.call(mistake.make)
        except Exception:
            continue
        if not _same_scale(scale, cscale):
            continue
        if q is None:
            return mistake.description
        if cq.shape != q.shape:
            continue
        levels = cq.double().numpy()
        differ = levels != q
        if not differ.any():
            return mistake.description
        x = (w.double() / cscale).numpy()
        if _boundaries(x[differ]).all() and np.abs(levels - q).max() <= 1:
            near.append(mistake.description)
    return near[0] if near else None


def absmax_cases() -> list:
    g = torch.Generator().manual_seed(1000)
    weights = torch.randn(64, 32, generator=g) * 0.02
    outlier = torch.randn(48, 24, generator=g) * 0.02
    outlier[7, 3] = 0.8  # one weight 40 times the others' spread
    negative = torch.randn(20, 10, generator=g)
    negative[4, 4] = -3.0  # the largest in size is negative
    return [
        Case("a hand-made row [0.5, -1.27, 0.01, 1.0, -0.3], bits=8 (max |w| = 1.27, so scale = 0.01)",
             (torch.tensor([0.5, -1.27, 0.01, 1.0, -0.3]),), {"bits": 8}),
        Case("random weights (64, 32) with std 0.02, default bits", (weights,)),
        Case("weights (48, 24) with one outlier 40 times the others, bits=8", (outlier,), {"bits": 8}),
        Case("weights (20, 10) whose largest |w| is negative (-3.0), bits=8", (negative,), {"bits": 8}),
        Case("bits=4: levels -7..7, weights (16, 16)", (torch.randn(16, 16, generator=g),), {"bits": 4}),
        Case("bits=2: levels -1..1, weights (8, 8)", (torch.randn(8, 8, generator=g),), {"bits": 2}),
        Case("bits=6 on a 3-D tensor (2, 4, 8)", (torch.randn(2, 4, 8, generator=g) * 0.1,), {"bits": 6}),
        Case("values exactly halfway between two levels [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.3, -1.2], "
             "bits=8: halves go to the even neighbour, as torch.round does",
             (torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.3, -1.2]),), {"bits": 8}),
    ]


def judge_absmax(case: Case, out) -> str | None:
    w = case.args[0]
    bits = case.kwargs.get("bits", 8)
    n = q_max(bits)
    expected_scale = absmax_scale(w, bits)
    x = (w.double() / expected_scale).numpy()  # (...) the exact levels before rounding
    expected_q = np.round(x)  # halves to even, like torch.round
    if isinstance(out, TensorData):
        return Problem("returned one tensor", "returned one tensor (q alone, or the dequantized weights): return "
                                              "the pair (q, scale)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"return the pair (q, scale); got {describe(out)}"
    q, scale = out
    if isinstance(scale, TensorData) and is_number(q):
        return "returned (scale, q): the order is (q, scale)"
    if not isinstance(q, TensorData) or not (is_number(scale) or isinstance(scale, TensorData)):
        return (f"return the pair (q, scale), q a torch.int8 tensor and scale a Python float; got "
                f"{describe(out)}: ({describe(q)}, {describe(scale)})")
    scale_value = _scale_value(scale)
    if scale_value is None:
        if isinstance(scale, TensorData):
            return Problem(f"scale has shape {scale.shape}: one scale for the whole tensor (a Python float)",
                           "one scale per row or column: this exercise uses one scale for the whole tensor "
                           "(per-tensor), max |w| over every element")
        return f"scale should be a Python float; got {describe(scale)}"
    if q.shape != tuple(w.shape):
        return f"q has shape {q.shape}; expected {tuple(w.shape)}, the shape of w"
    got = q.array.astype(np.float64)
    if not _same_scale(scale_value, expected_scale):
        text = (f"scale is {scale_value:.6g}; expected max|w| / {n} = {expected_scale:.6g}"
                f"{ratio_hint(scale_value, expected_scale)}")
        return Problem(text, _name_by(absmax_scale_mistakes(bits), case, None, scale_value))
    if isinstance(scale, TensorData):
        return Problem(f"scale is a tensor ({scale.dtype}) holding the right value: return a Python float",
                       "returned the scale as a tensor: return a Python float (scale.item())")
    problem = _levels_problem(got, x, expected_q)
    dtype = None if q.dtype == "torch.int8" else q.dtype
    if problem is None and dtype is None:
        return None
    if problem is None:
        if q.array.dtype.kind == "f":
            return Problem(f"q has the right values but dtype {dtype}",
                           "returned a float tensor instead of int8: after rounding, convert with .to(torch.int8)")
        return Problem(f"q has the right values but dtype {dtype}",
                       f"q stored as {dtype}: the exercise stores the levels as torch.int8")
    if got.max() > n or got.min() < -n:
        problem += f"\nq holds levels outside -{n}..{n} (from {got.min():.0f} to {got.max():.0f})"
    mistake = _name_by(absmax_level_mistakes(), case, got, scale_value)
    if mistake is None and np.allclose(got, x, atol=1e-4):
        mistake = "q not rounded: round w / scale to whole levels with torch.round, then store as torch.int8"
    if mistake is None and q.dtype == "torch.uint8":
        mistake = "stored q as unsigned (torch.uint8): negative levels wrap around to 256 - k; use torch.int8"
    return Problem(problem, mistake)


def explain_absmax_error(case: Case, outcome) -> str | None:
    if "'float' object has no attribute" in outcome.message:
        return ("a Python float has no tensor methods: take .item() of the tensor max |w| once, then compute "
                "with plain numbers")
    if "only one element tensors" in outcome.message:
        return "Python's round() and int() work on one number: use torch.round(w / scale) on the whole tensor"
    return None


register(Exercise(
    name="absmax_quantize", chapter="10", signature="(w, bits=8)", points=3,
    make_cases=absmax_cases, judge=judge_absmax, explain_error=explain_absmax_error, forbidden=(QUANTIZE,),
))


# ---------------------------------------------------------------- dequantize

def dequantize_mistakes() -> list:
    return [
        Mistake("divided by the scale: dequantizing multiplies, w = q * scale",
                lambda q, s: q.float() / s),
        Mistake("forgot to multiply by the scale (returned the levels as floats)",
                lambda q, s: q.float()),
        Mistake("read q as unsigned (uint8): negative levels wrapped around to 256 + q; convert int8 straight "
                "to float", lambda q, s: q.to(torch.uint8).float() * s),
        Mistake("rounded the result: dequantized weights are not whole numbers",
                lambda q, s: torch.round(q.float() * s)),
        Mistake("multiplied by the scale squared", lambda q, s: q.float() * s * s),
        Mistake("added the scale instead of multiplying", lambda q, s: q.float() + s),
    ]


def dequantize_cases() -> list:
    g = torch.Generator().manual_seed(1001)

    def levels(*shape, n=127):
        return torch.randint(-n, n + 1, shape, generator=g, dtype=torch.int8)

    extremes = levels(2, 3, 4)
    extremes[0, 0, 0], extremes[1, 2, 3] = -128, 127
    return [
        Case("q = [50, -127, 1, 100, -30], scale 0.01",
             (torch.tensor([50, -127, 1, 100, -30], dtype=torch.int8), 0.01)),
        Case("8-bit levels (64, 32), a small scale 1.6e-4", (levels(64, 32), 1.6e-4)),
        Case("4-bit levels -7..7 in int8 (16, 16), scale 0.25", (levels(16, 16, n=7), 0.25)),
        Case("(2, 3, 4) with the int8 extremes -128 and 127, scale 3.0", (extremes, 3.0)),
        Case("scale 1/3, a float with many digits", (levels(5, 7), 1 / 3)),
    ]


def judge_dequantize(case: Case, out) -> str | None:
    q, s = case.args
    expected = (q.float() * s).numpy()  # float32
    if not isinstance(out, TensorData):
        return f"return a torch.Tensor of shape {tuple(q.shape)}; got {describe(out)}"
    case_tol = {"atol": 1e-7 * max(s, 1e-30), "rtol": 1e-6}
    if out.dtype != "torch.float32" and out.shape == expected.shape:
        same = np.allclose(out.array.astype(np.float64), expected, **case_tol)
        if out.array.dtype.kind in "iub":
            return Problem(f"returned an integer tensor ({out.dtype})",
                           "returned integers: dequantized weights are float32 (do not cast the result back "
                           "to an integer type)")
        if same:
            return Problem(f"the values are right but the dtype is {out.dtype}",
                           f"returned {out.dtype} instead of float32: convert q with q.float() (or "
                           f"q.to(torch.float32)) before multiplying")
    problem = tensor_problem(out, expected, Case(case.label, (), atol=case_tol["atol"], rtol=case_tol["rtol"]))
    if problem is None:
        return None
    for mistake in dequantize_mistakes():
        candidate = mistake.make(q.clone(), s)
        if close(out, TensorData(candidate.numpy(), str(candidate.dtype)), **case_tol):
            return Problem(problem, mistake.description)
    return problem


def explain_dequantize_error(case: Case, outcome) -> str | None:
    if "can't be cast to the desired output type" in outcome.message:
        return ("q is an int8 tensor: an in-place multiply (q *= scale, q.mul_) cannot store floats in it; "
                "compute a new tensor, q.float() * scale")
    return None


register(Exercise(
    name="dequantize", chapter="10", signature="(q, scale)", points=1,
    make_cases=dequantize_cases, judge=judge_dequantize, explain_error=explain_dequantize_error,
))


# ---------------------------------------------------------------- tokenizer_fertility

class PieceTokenizer:
    """Cuts every whitespace-separated word into pieces of at most ``size`` characters."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, text: str) -> list:
        return [word[i:i + self.size] for word in text.split() for i in range(0, len(word), self.size)]


class IdTokenizer(PieceTokenizer):
    """Like ``PieceTokenizer``, but returns token ids (ints), as tiktoken's ``encode`` does."""

    def __call__(self, text: str) -> list:
        return [sum(map(ord, piece)) % 50_000 for piece in super().__call__(text)]


class CharacterTokenizer:
    """One token per non-whitespace character."""

    def __call__(self, text: str) -> list:
        return [c for c in text if not c.isspace()]


class PunctuationTokenizer:
    """Words and punctuation marks as separate tokens (``don't`` -> ``don``, ``'``, ``t``)."""

    def __call__(self, text: str) -> list:
        return re.findall(r"\w+|[^\w\s]", text)


def fertility(tokenize, texts) -> float:
    """Total tokens over total whitespace-separated words."""
    return sum(len(tokenize(t)) for t in texts) / sum(len(t.split()) for t in texts)


def fertility_mistakes() -> list:
    def per_text(tokenize, texts):
        return sum(len(tokenize(t)) / len(t.split()) for t in texts) / len(texts)

    return [
        Mistake("fertility per character instead of per word: divide by the number of whitespace-separated "
                "words, len(text.split())",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t) for t in texts)),
        Mistake("fertility per non-space character instead of per word: divide by the number of "
                "whitespace-separated words, len(text.split())",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t.replace(" ", "")) for t in texts)),
        Mistake("averaged each text's tokens per word: long and short texts then count the same; divide the "
                "total tokens by the total words", per_text),
        Mistake("counted words with split(' '): runs of spaces give empty 'words' and newlines or tabs join two; "
                "use text.split() with no argument",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t.split(" ")) for t in texts)),
        Mistake("inverted: words per token; fertility is tokens per word",
                lambda tok, texts: 1 / fertility(tok, texts)),
        Mistake("only the first text counted (a return inside the loop?)",
                lambda tok, texts: fertility(tok, texts[:1])),
        Mistake("only the last text counted (the totals are overwritten instead of added up?)",
                lambda tok, texts: fertility(tok, texts[-1:])),
        Mistake("counted distinct tokens (len(set(...))): count every token, repeats included",
                lambda tok, texts: sum(len(set(tok(t))) for t in texts) / sum(len(t.split()) for t in texts)),
        Mistake("divided by the number of texts instead of the number of words",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / len(texts)),
        Mistake("counted the characters of the tokens instead of the tokens",
                lambda tok, texts: sum(len("".join(tok(t))) for t in texts) / sum(len(t.split()) for t in texts)),
        Mistake("used // (floor division): fertility is a float; use /",
                lambda tok, texts: float(sum(len(tok(t)) for t in texts) // sum(len(t.split()) for t in texts))),
    ]


SENTENCES = ["the cat sat on the mat",
             "tokenization splits unfamiliar words into several pieces",
             "a b c"]


def fertility_cases() -> list:
    long = " ".join(["extraordinarily", "incomprehensible", "internationalization"] * 4)
    return [
        Case("3 texts, words cut into pieces of at most 3 characters", (PieceTokenizer(3), SENTENCES)),
        Case("a long text and a short one: the totals decide, not the mean of the two ratios",
             (PieceTokenizer(4), [long, "hi there", "ok"])),
        Case("double spaces, tabs and newlines between words (words are what text.split() returns)",
             (PieceTokenizer(2), ["one  two\tthree\nfour", "  leading and trailing spaces  ", "x\n\ny"])),
        Case("a tokenizer that returns token ids (ints), like tiktoken's encode",
             (IdTokenizer(5), SENTENCES + ["a short one"])),
        Case("one token per character (fertility = mean word length)",
             (CharacterTokenizer(), ["short words", "a longer sentence follows here"])),
        Case("punctuation marks as tokens of their own (fertility a little above 1)",
             (PunctuationTokenizer(), ["Hello, world! Don't panic.", "It's 5 p.m., isn't it?"])),
    ]


def judge_fertility(case: Case, out) -> str | None:
    tokenize, texts = case.args
    return number_problem(case, out, fertility(tokenize, texts), "the fertility", fertility_mistakes(),
                          "tokens per word", rel_tol=1e-9)


def explain_fertility_error(case: Case, outcome) -> str | None:
    if "'list' object has no attribute" in outcome.message or "expected string" in outcome.message:
        return "tokenize takes one string: call it on each text of `texts`, not on the list"
    if "division by zero" in outcome.message:
        return "count words with text.split() (no argument), summed over every text"
    return None


register(Exercise(
    name="tokenizer_fertility", chapter="10", signature="(tokenize, texts)", points=2,
    make_cases=fertility_cases, judge=judge_fertility, explain_error=explain_fertility_error,
))
