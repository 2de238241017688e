"""Chapter 10, open models: largest_batch, tokenizer_fertility, dequantize, absmax_quantize.

The references are the definitions written out (GB = 1e9 bytes; keys and values for every layer; symmetric
absmax per tensor or per block of consecutive elements of the flattened tensor, like GGUF's Q8_0, with
``torch.round``, which sends halves to the even neighbour) and published shapes (OPT-175B: 96 layers of 96
heads of 128; BLOOM-176B: 70 layers of 112 heads of 128, 176,247,271,424 parameters; SmolLM2-135M: 30
layers, 3 key/value heads of 64, 134,515,008 parameters). Each ``Mistake`` is a wrong answer learners often
write, so that a wrong output can be named, not just flagged.

``largest_batch`` is decided in exact arithmetic (``fractions.Fraction`` of the inputs); every case but the
one built of exact integers to sit on the boundary (equality fits) stays clear of a boundary that float
rounding could decide.

Rounding in ``absmax_quantize``: two correct answers can differ by one level where ``w / scale`` lies
within float32 noise of a half (``w * (1 / scale)`` and ``w / scale`` round differently there), so the
judge accepts either neighbour within ``TIE_BAND`` of a half, except on exact halves (the cases built of
them), where the decided rule, halves to even, applies.
"""

import math
import re
from fractions import Fraction

import numpy as np
import torch

from grader.compare import Mistake, Problem, close, tensor_problem
from grader.core import Case, Exercise, RaisesCase, raised, register
from grader.forbidden import (ABSMAX_HELPERS, GGUF_DEQUANTIZE, GGUF_QUANTIZE, KV_CACHE_READ, QUANTIZE,
                              TORCH_DEQUANTIZE)
from grader.numbers import is_number, number_problem, ratio_hint, scalar_problem
from grader.values import TensorData, describe

GB = 1e9
GIB = 2 ** 30
OPT_175B = 175e9
BLOOM_176B = 176_247_271_424  # BLOOM's model card; equal to a count of its 70 layers of width 14,336
SMOLLM2_135M = 134_515_008  # sum(p.numel()) of the shipped SmolLM2-135M-Instruct
TIE_BAND = 1e-4  # |w / scale - (k + 1/2)| below this: float32 noise decides the rounding, either is right





def _raises_problem(out, why: str, mistake: str) -> Problem | None:
    """None when a RaisesCase raised ValueError as it should, else what it returned instead."""
    if raised(out):
        return None
    return Problem(f"{why}, so the function must raise ValueError; it returned {describe(out)}.", mistake)


def _explain_raises_error(outcome, why: str) -> str:
    if outcome.error_type == "AssertionError":
        return "raise ValueError (not assert: assertions can be switched off)"
    return (f"{why}, which the exercise refuses: check for it first and raise ValueError yourself, instead of "
            f"letting {outcome.error_type} escape")


# ---------------------------------------------------------------- largest_batch

def kv_bytes_per_sequence(n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, tensors=2):
    """Bytes of the cached keys and values (``tensors=2``) of one sequence: every layer, head and position."""
    return tensors * n_layers * n_kv_heads * head_dim * seq_len * kv_bytes_per_value


def _exact(x) -> Fraction:
    return Fraction(x)  # a float's exact binary value, an int as it is


def batch_quotient(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value,
                   memory_gb, overhead_gb=0.0) -> Fraction:
    """(memory - overhead - weights) / (KV cache of one sequence), exactly; the answer is its floor, at least 0."""
    weights = _exact(n_params) * _exact(bytes_per_param)
    per_sequence = kv_bytes_per_sequence(n_layers, n_kv_heads, head_dim, seq_len, _exact(kv_bytes_per_value))
    room = (_exact(memory_gb) - _exact(overhead_gb)) * 10 ** 9 - weights
    return room / per_sequence


def largest_batch_exact(*args, **kwargs) -> int:
    return max(0, math.floor(batch_quotient(*args, **kwargs)))


def batch_variant(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb,
                  overhead_gb=0.0, tensors=2, layers=True, unit=GB, overhead=True, weights=True, kv_bytes=None,
                  rounding="floor", at_least_zero=True, strict=False):
    """The batch a common wrong answer gives, with switches for each mistake (floats throughout)."""
    kv_bytes = kv_bytes_per_value if kv_bytes is None else kv_bytes
    per_sequence = kv_bytes_per_sequence(n_layers if layers else 1, n_kv_heads, head_dim, seq_len, kv_bytes, tensors)
    room = memory_gb * unit - (overhead_gb * unit if overhead else 0) - (n_params * bytes_per_param if weights else 0)
    quotient = room / per_sequence
    batch = {"floor": math.floor, "round": round, "ceil": math.ceil}[rounding](quotient)
    if strict and batch == quotient:  # equality taken as not fitting
        batch -= 1
    return max(0, batch) if at_least_zero else batch


def batch_mistakes() -> list:
    def variant(**switches):
        return lambda *args, **kwargs: batch_variant(*args, **kwargs, **switches)

    return [
        Mistake("only keys counted (or only values): the cache holds a key *and* a value vector per layer, "
                "key/value head and position", variant(tensors=1)),
        Mistake("cached the queries too: only keys and values are kept for later tokens", variant(tensors=3)),
        Mistake("forgot n_layers: every layer keeps its own keys and values", variant(layers=False)),
        Mistake("used GiB (2**30 bytes) for memory_gb and overhead_gb: a GB here is 10**9 bytes", variant(unit=GIB)),
        Mistake("left out overhead_gb: it is memory neither the weights nor the cache can use",
                variant(overhead=False)),
        Mistake("left out the weights: they take their share of the memory before any sequence",
                variant(weights=False)),
        Mistake("sized the KV cache with bytes_per_param: the cache is stored at kv_bytes_per_value, which can "
                "differ from the weights' format", lambda *a, **k: batch_variant(*a, **k, kv_bytes=a[1])),
        Mistake("rounded the batch to the nearest whole number: a batch must fit, so round down",
                variant(rounding="round")),
        Mistake("rounded the batch up: a batch must fit, so round down", variant(rounding="ceil")),
        Mistake("equality taken as not fitting: a batch whose memory is exactly memory_gb fits",
                variant(strict=True)),
        Mistake("returned a negative batch when the weights alone do not fit: return 0 then",
                variant(at_least_zero=False)),
    ]


def batch_case(label, n_params, bytes_per_param, shape, seq_len, kv_bytes, memory_gb, overhead_gb=None) -> Case:
    """A largest_batch case; ``shape`` is (n_layers, n_kv_heads, head_dim)."""
    args = (n_params, bytes_per_param, *shape, seq_len, kv_bytes, memory_gb)
    return Case(label, args, {} if overhead_gb is None else {"overhead_gb": overhead_gb})


OPT_SHAPE, BLOOM_SHAPE, SMOLLM2_SHAPE = (96, 96, 128), (70, 112, 128), (30, 3, 64)


def largest_batch_cases() -> list:
    return [
        batch_case("OPT-175B in fp16 (2 bytes) with an fp16 cache of 2,048 tokens on 8 x 80 GB = 640 GB",
                   OPT_175B, 2, OPT_SHAPE, 2_048, 2, 640),
        batch_case("OPT-175B in int4 (0.5 bytes per parameter), fp16 cache, 2,048 tokens, 2 x 80 GB",
                   OPT_175B, 0.5, OPT_SHAPE, 2_048, 2, 160),
        batch_case(f"BLOOM-176B ({BLOOM_176B:,} parameters) in int8, fp16 cache of 2,048 tokens, 4 x 80 GB, "
                   "overhead_gb=10", BLOOM_176B, 1, BLOOM_SHAPE, 2_048, 2, 320, 10.0),
        batch_case(f"SmolLM2-135M ({SMOLLM2_135M:,} parameters) in fp32 with an fp32 cache of 8,192 tokens on a "
                   "16 GB laptop, overhead_gb=4.5", SMOLLM2_135M, 4, SMOLLM2_SHAPE, 8_192, 4, 16, 4.5),
        batch_case("a 70B model with grouped-query attention (80 layers, 8 KV heads of 128) in int8, fp16 cache "
                   "of 4,096 tokens, one 80 GB GPU, overhead_gb=2", 70e9, 1, (80, 8, 128), 4_096, 2, 80, 2.0),
        batch_case("exactly on the boundary, all integers: 1e8 parameters in fp16 and 625 sequences of 250 "
                   "tokens (5 layers, 4 KV heads of 64, 2 bytes) fill 1 GB to the byte: equality fits",
                   100_000_000, 2, (5, 4, 64), 250, 2, 1),
        batch_case("the weights alone do not fit: OPT-175B in fp16 (350 GB) on one 80 GB GPU",
                   OPT_175B, 2, OPT_SHAPE, 2_048, 2, 80),
        batch_case("the weights fit but not one sequence: BLOOM-176B in int4 (88 GB) on 2 x 48 GB, fp16 cache of "
                   "2,048 tokens", BLOOM_176B, 0.5, BLOOM_SHAPE, 2_048, 2, 96),
    ]


def judge_largest_batch(case: Case, out) -> str | None:
    expected = largest_batch_exact(*case.args, **case.kwargs)
    if isinstance(out, float) and out == expected:
        return Problem(f"returned the float {out:,.1f}: a batch size is an int",
                       "returned a float: a batch size is a whole number of sequences, an int")
    problem = scalar_problem(out, expected, "the batch size", "int")
    if problem:
        return problem
    if out == expected:
        return None
    text = f"returned {out:,.6g}; expected a batch of {expected:,}"
    for mistake in batch_mistakes():
        try:
            candidate = case.call(mistake.make)
        except Exception:  # noqa: BLE001  (that mistake does not apply to this case)
            continue
        if out == candidate:
            return Problem(text, mistake.description)
    return text


def explain_largest_batch_error(case: Case, outcome) -> str | None:
    if "cannot convert float infinity" in outcome.message or "division by zero" in outcome.message:
        return "the KV cache of one sequence is never 0 bytes here: check which factors multiply into it"
    return None


register(Exercise(
    name="largest_batch", chapter="10",
    signature="(n_params, bytes_per_param, n_layers, n_kv_heads, head_dim, seq_len, kv_bytes_per_value, memory_gb, "
              "overhead_gb=0.0)", points=2,
    make_cases=largest_batch_cases, judge=judge_largest_batch, explain_error=explain_largest_batch_error,
    forbidden=(KV_CACHE_READ,),
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
        Mistake("fertility per character instead of per word: the denominator counts whitespace-separated "
                "words",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t) for t in texts)),
        Mistake("fertility per non-space character instead of per word: the denominator counts "
                "whitespace-separated words",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t.replace(" ", "")) for t in texts)),
        Mistake("averaged each text's tokens per word: long and short texts then count the same; fertility "
                "over several texts weighs each by its words", per_text),
        Mistake("counted words with split(' '): runs of spaces give empty 'words' and newlines or tabs join two; "
                "split() with no argument splits on any run of whitespace",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / sum(len(t.split(" ")) for t in texts)),
        Mistake("inverted: words per token; fertility is tokens per word",
                lambda tok, texts: 1 / fertility(tok, texts)),
        Mistake("only the first text counted (a return inside the loop?)",
                lambda tok, texts: fertility(tok, texts[:1])),
        Mistake("only the last text counted (the totals are overwritten instead of added up?)",
                lambda tok, texts: fertility(tok, texts[-1:])),
        Mistake("counted distinct tokens (a set): count every token, repeats included",
                lambda tok, texts: sum(len(set(tok(t))) for t in texts) / sum(len(t.split()) for t in texts)),
        Mistake("divided by the number of texts instead of the number of words",
                lambda tok, texts: sum(len(tok(t)) for t in texts) / len(texts)),
        Mistake("counted the characters of the tokens instead of the tokens",
                lambda tok, texts: sum(len("".join(tok(t))) for t in texts) / sum(len(t.split()) for t in texts)),
        Mistake("used floor division: fertility is a float, not a whole number",
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
        return "no words were counted: a word is what split() with no argument returns, over every text"
    return None


register(Exercise(
    name="tokenizer_fertility", chapter="10", signature="(tokenize, texts)", points=2,
    make_cases=fertility_cases, judge=judge_fertility, explain_error=explain_fertility_error,
))
# ---------------------------------------------------------------- dequantize

def dequantize_variant(q, scale, block_size=None, how="right"):
    """The float32 weights q * scale (per block of consecutive elements when ``block_size`` is given), or
    what a common mistake makes of them (``how``)."""
    levels = q.to(torch.uint8) if how == "unsigned" else q
    levels = levels.to(torch.float32)
    if block_size is None:
        per_element = torch.tensor(float(scale), dtype=torch.float32)
    elif how == "tiled":  # scale i applied to elements i, i + n_blocks, ... (repeat, not repeat_interleave)
        per_element = scale.to(torch.float32).repeat(q.numel() // len(scale)).reshape(q.shape)
    elif how == "columns":  # blocks cut down the columns of a 2-D q
        if q.dim() != 2:
            raise ValueError("columns need a 2-D q")
        per_element = scale.to(torch.float32).repeat_interleave(block_size).reshape(q.T.shape).T
    else:
        per_element = scale.to(torch.float32).repeat_interleave(block_size).reshape(q.shape)
    out = {"divides": lambda: levels / per_element, "no_scale": lambda: levels,
           "rounds": lambda: torch.round(levels * per_element)}.get(how, lambda: levels * per_element)()
    return out


def dequantize_mistakes(block_size) -> list:
    """Wrong answers as functions of (q, scale, block_size=None)."""
    def variant(how):
        return lambda q, s, b=None: dequantize_variant(q, s, b, how)

    mistakes = [
        Mistake("divided by the scale: the scale is the size of one level, so a level count times the scale "
                "gives the weight back", variant("divides")),
        Mistake("left the scale out (returned the levels as floats)", variant("no_scale")),
        Mistake("read q as unsigned (uint8): negative levels wrapped around to 256 + q; q is signed int8",
                variant("unsigned")),
        Mistake("rounded the result: dequantized weights are not whole numbers", variant("rounds")),
    ]
    if block_size is not None:
        mistakes += [
            Mistake("each scale applied to every n_blocks-th element (the scales tiled, as `repeat` does): block i "
                    "is block_size consecutive elements, so each scale covers block_size neighbours "
                    "(`repeat_interleave` repeats each entry in place)", variant("tiled")),
            Mistake("blocks cut down the columns: a block is block_size consecutive elements of the flattened "
                    "tensor, in row-major order, along the rows", variant("columns")),
        ]
    return mistakes


def dequantize_cases() -> list:
    g = torch.Generator().manual_seed(1001)

    def levels(*shape, n=127):
        return torch.randint(-n, n + 1, shape, generator=g, dtype=torch.int8)

    def scales(n):
        return (torch.rand(n, generator=g) * 0.1 + 0.01).to(torch.float32)

    extremes = levels(2, 3, 4)
    extremes[0, 0, 0], extremes[1, 2, 3] = -128, 127
    zero_block = scales(4)
    zero_block[2] = 0.0
    return [
        Case("per tensor: q = [50, -127, 1, 100, -30], scale 0.01",
             (torch.tensor([50, -127, 1, 100, -30], dtype=torch.int8), 0.01)),
        Case("per tensor: 8-bit levels (64, 32), a small scale 1.6e-4", (levels(64, 32), 1.6e-4)),
        Case("per tensor: (2, 3, 4) with the int8 extremes -128 and 127, scale 1/3", (extremes, 1 / 3)),
        Case("blocks of 32: 4-bit levels (4, 64), 8 float32 scales", (levels(4, 64, n=7), scales(8)),
             {"block_size": 32}),
        Case("blocks of 4 that run across rows: q (6, 10), 15 scales (each row of 10 holds two and a half blocks)",
             (levels(6, 10), scales(15)), {"block_size": 4}),
        Case("blocks of 8 on a 3-D q (2, 2, 8), scale 0 for the all-zero block 2",
             (levels(2, 2, 8, n=7), zero_block), {"block_size": 8}),
        RaisesCase("a Python float scale with block_size=32: ValueError", (levels(2, 32), 0.5), {"block_size": 32}),
        RaisesCase("a tensor of 2 scales without a block_size: ValueError", (levels(2, 32), scales(2))),
        RaisesCase("q of 50 elements with block_size=32 (not a multiple): ValueError", (levels(5, 10), scales(2)),
                   {"block_size": 32}),
        RaisesCase("3 scales for the 2 blocks of 32 of q (2, 32): ValueError", (levels(2, 32), scales(3)),
                   {"block_size": 32}),
    ]


def _why_raises(case: Case) -> str:
    """What makes a dequantize RaisesCase an error, in words."""
    q, scale = case.args
    block_size = case.kwargs.get("block_size")
    if block_size is None:
        return "a tensor of scales came without a block_size"
    if not isinstance(scale, torch.Tensor):
        return f"a single float scale came with block_size={block_size}"
    if q.numel() % block_size:
        return f"q has {q.numel()} elements, not a multiple of block_size={block_size}"
    return f"{scale.numel()} scales came for {q.numel() // block_size} blocks"


def judge_dequantize(case: Case, out) -> str | None:
    q, s = case.args
    block_size = case.kwargs.get("block_size")
    if isinstance(case, RaisesCase):
        why = _why_raises(case)
        return _raises_problem(out, why, "a scale and block_size that do not go together were not refused: "
                                         "raise ValueError for every pairing but the two the exercise allows")
    if raised(out):
        return f"raised ValueError ({out[1]}), but this scale and block_size go together"
    expected = dequantize_variant(q, s, block_size).numpy()  # float32
    if not isinstance(out, TensorData):
        return f"return a torch.Tensor of shape {tuple(q.shape)}; got {describe(out)}"
    largest = float(s) if block_size is None else float(s.max())
    case_tol = {"atol": 1e-7 * max(largest, 1e-30), "rtol": 1e-6}
    if out.dtype != "torch.float32" and out.shape == expected.shape:
        same = np.allclose(out.array.astype(np.float64), expected, **case_tol)
        if out.array.dtype.kind in "iub":
            return Problem(f"returned an integer tensor ({out.dtype})",
                           "returned integers: dequantized weights are float32 (the result stays a float tensor)")
        if same:
            return Problem(f"the values are right but the dtype is {out.dtype}",
                           f"returned {out.dtype} instead of float32: the levels must become float32 before they "
                           f"meet the scale")
    problem = tensor_problem(out, expected, Case(case.label, (), atol=case_tol["atol"], rtol=case_tol["rtol"]))
    if problem is None:
        return None
    for mistake in dequantize_mistakes(block_size):
        try:
            candidate = mistake.make(q.clone(), s, block_size)
        except Exception:  # noqa: BLE001  (that mistake does not apply to this case's shapes)
            continue
        if close(out, TensorData(candidate.numpy(), str(candidate.dtype)), **case_tol):
            return Problem(problem, mistake.description)
    return problem


def explain_dequantize_error(case: Case, outcome) -> str | None:
    if "unexpected keyword argument 'block_size'" in outcome.message:
        return "the function takes block_size: dequantize(q, scale, block_size=None)"
    if isinstance(case, RaisesCase):
        return _explain_raises_error(outcome, _why_raises(case))
    if "can't be cast to the desired output type" in outcome.message:
        return ("q is an int8 tensor: an in-place multiply cannot store floats in it; compute a new float32 "
                "tensor instead")
    if "must match the size of tensor" in outcome.message or "invalid for input of size" in outcome.message:
        return ("the blocks run over the flattened q in order, across rows: a block need not fit in a row, so "
                "cut q.flatten() (or reshape it) into rows of block_size")
    if "ValueError" in outcome.error_type:
        return "this scale and block_size go together: raise ValueError only for the pairings the text refuses"
    return None


register(Exercise(
    name="dequantize", chapter="10", signature="(q, scale, block_size=None)", points=2,
    make_cases=dequantize_cases, judge=judge_dequantize, explain_error=explain_dequantize_error,
    forbidden=(TORCH_DEQUANTIZE, GGUF_DEQUANTIZE),
))


# ---------------------------------------------------------------- absmax_quantize

def q_max(bits: int) -> int:
    """The largest level of a symmetric signed ``bits``-bit code: 2^(bits-1) - 1 (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def _groups(w: torch.Tensor, block_size, layout: str) -> torch.Tensor:
    """w as (groups, size) float64 rows, each row sharing one scale: the whole tensor, blocks of consecutive
    elements (``flat``), blocks cut down the columns of a 2-D w, or strided blocks (every n_blocks-th element)."""
    w = w.double()
    if layout == "tensor" or block_size is None:
        return w.reshape(1, -1)
    if layout == "columns":
        if w.dim() != 2:
            raise ValueError("columns need a 2-D w")
        return w.T.reshape(-1, block_size)
    if layout == "strided":
        return w.reshape(block_size, -1).T
    if layout == "rows":
        return w.reshape(w.shape[0], -1)
    return w.reshape(-1, block_size)


def _ungroup(levels: torch.Tensor, w: torch.Tensor, block_size, layout: str) -> torch.Tensor:
    """The inverse of ``_groups``: levels back in w's shape."""
    if layout == "columns":
        return levels.reshape(w.T.shape).T
    if layout == "strided":
        return levels.T.reshape(w.shape)
    return levels.reshape(w.shape)


def _round(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """x rounded: ``even`` (torch.round), ``trunc``, ``floor``, ``ceil``, ``up`` (halves up) or ``away``
    (halves away from zero, as GGUF's quantizers round)."""
    return {"even": torch.round, "trunc": torch.trunc, "floor": torch.floor, "ceil": torch.ceil,
            "up": lambda x: torch.floor(x + 0.5),
            "away": lambda x: torch.sign(x) * torch.floor(x.abs() + 0.5)}[rounding](x)


def _as_int8(levels: torch.Tensor) -> torch.Tensor:
    """Store levels as int8 the way ``.to(torch.int8)`` does: values outside -128..127 wrap around."""
    return torch.remainder(levels.to(torch.int64) + 128, 256).sub(128).to(torch.int8)


def absmax_variant(w, bits=8, block_size=None, scale_from="max_abs", divisor=None, rounding="even", layout="flat",
                   zero_scale=0.0, clamp=None):
    """(q, scale) of absmax quantization, with switches that reproduce the common mistakes. The scale is a
    float per tensor, else a float32 tensor of one entry per group; levels are computed in float64 from it."""
    groups = _groups(w, block_size, layout)  # (G, size) float64
    stats = {"max_abs": groups.abs().amax(dim=1), "mean_abs": groups.abs().mean(dim=1), "max": groups.amax(dim=1),
             "signed_extreme": groups.gather(1, groups.abs().argmax(dim=1, keepdim=True))[:, 0]}
    divisor = q_max(bits) if divisor is None else divisor
    scale = stats[scale_from] / divisor  # (G,)
    per_tensor = block_size is None or layout == "tensor"
    if not per_tensor:
        scale = scale.float().double()  # stored in float32
    scale = torch.where(scale == 0, torch.full_like(scale, zero_scale), scale)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    levels = _round(groups / safe[:, None], rounding)
    if clamp is not None:
        levels = levels.clamp(*clamp)
    q = _as_int8(_ungroup(levels, w, block_size, layout))
    return (q, float(scale[0])) if per_tensor else (q, scale.float())


def absmax_scale_mistakes(bits: int, block_size) -> list:
    """Wrong scales, each as a function of (w, bits=8, block_size=None) returning (q, scale); the descriptions
    do not depend on ``bits``, so that one mistake is reported once over cases with different bits."""
    def variant(**switches):
        return lambda w, bits=8, block_size=None: absmax_variant(w, bits, block_size, **switches)

    top = 2 ** (bits - 1)
    mistakes = [
        Mistake("divided by 2^(bits-1) (128 for 8 bits) where the top level is 2^(bits-1) - 1 (127): the largest "
                "weight lands one level outside the range; in int8, 128 overflows and wraps around to -128",
                variant(divisor=top)),
        Mistake("divided by 2^bits - 1 (255 for 8 bits), the unsigned range: the signed symmetric levels only "
                "reach 2^(bits-1) - 1", variant(divisor=2 * top - 1)),
        Mistake("Q4_0's rule (the signed extreme divided by -2^(bits-1), levels -2^(bits-1)..2^(bits-1) - 1): "
                "this exercise's code is symmetric, like Q8_0, with a positive scale set by the largest |w|",
                variant(scale_from="signed_extreme", divisor=-top, clamp=(-top, top - 1))),
        Mistake("scale from the mean of |w| instead of the largest |w|: the largest weights then fall outside "
                "the range", variant(scale_from="mean_abs")),
        Mistake("scale from the largest w instead of the largest |w|: a negative weight can be the largest in size",
                variant(scale_from="max")),
        Mistake("the scale is max|w| itself: the largest |w| must land on the top level, not on level 1",
                variant(divisor=1)),
    ]
    if bits != 8:
        mistakes.append(Mistake("ignored `bits`: always used the 8-bit levels",
                                lambda w, bits=8, block_size=None: absmax_variant(w, 8, block_size)))
    if block_size is not None:
        mistakes += [
            Mistake("blocks cut down the columns: a block is block_size consecutive elements of the flattened "
                    "tensor, in row-major order", variant(layout="columns")),
            Mistake("blocks of every n_blocks-th element (a reshape to (block_size, -1)): a block is block_size "
                    "consecutive elements of the flattened tensor", variant(layout="strided")),
            Mistake("an all-zero block got a nonzero scale: its scale is 0 (and its levels 0)",
                    variant(zero_scale=1.0)),
        ]
    return mistakes


def absmax_level_mistakes() -> list:
    """Wrong roundings with the right scale, as functions of (w, bits=8, block_size=None) returning (q, scale)."""
    def variant(rounding):
        return lambda w, bits=8, block_size=None: absmax_variant(w, bits, block_size, rounding=rounding)

    return [
        Mistake("truncated instead of rounding: a cast to an integer type cuts toward zero; round to the nearest "
                "level first", variant("trunc")),
        Mistake("rounded down with floor: round to the nearest level", variant("floor")),
        Mistake("rounded up with ceil: round to the nearest level", variant("ceil")),
        Mistake("rounded halves up (floor(x + 0.5)): the exercise rounds halves to the even neighbour",
                variant("up")),
        Mistake("rounded halves away from zero (as GGUF's own quantizers do): the exercise rounds halves to the "
                "even neighbour", variant("away")),
    ]


def _halves(values: np.ndarray) -> np.ndarray:
    """Where values lie within TIE_BAND of a half (but not exactly on one)."""
    frac = np.abs(values - np.floor(values) - 0.5)
    return (frac < TIE_BAND) & (frac > 0)


def _boundaries(x: np.ndarray) -> np.ndarray:
    """Where float32 noise can move a level: w / scale within TIE_BAND of a whole number, or near (but not
    exactly on) a half; exact halves only come from the cases built of them, where float32 is exact too."""
    return (np.abs(x - np.round(x)) < TIE_BAND) | _halves(x)


def _levels_problem(got: np.ndarray, x: np.ndarray, expected: np.ndarray) -> str | None:
    """What is wrong with the levels ``got`` (float64) against ``expected``; near-halves accept either neighbour."""
    ok = (got == expected) | (_halves(x) & ((got == np.floor(x)) | (got == np.ceil(x))))
    if ok.all():
        return None
    bad = np.argwhere(~ok)
    first = tuple(int(i) for i in bad[0])
    return (f"{len(bad)} of {got.size} levels are wrong; at index {first}, w / scale = {x[first]:.4f}: "
            f"yours {got[first]:.4g}, expected {expected[first]:.0f}")


def _scale_array(scale) -> np.ndarray | None:
    """The learner's scale as float64 values: one for a number, the entries of a tensor."""
    if is_number(scale):
        return np.array([float(scale)])
    if isinstance(scale, TensorData) and scale.array.dtype.kind in "fiu":
        return scale.array.astype(np.float64).reshape(-1)
    return None


def _same_scale(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=0))


def _name_by(candidates: list, case: Case, q: np.ndarray | None, scale: np.ndarray) -> str | None:
    """The mistake whose (q, scale) on this case matches the learner's: the scales within 1e-5, and the levels
    equal, or else equal but for levels one apart where float32 noise decides (a truncation of 126.99999 is
    126, of 127.0 is 127). With ``q`` None only the scales are compared: a wrong scale names its mistake
    whether the levels were then clipped or wrapped."""
    near = []
    for mistake in candidates:
        try:
            cq, cscale = case.call(mistake.make)
        except Exception:  # noqa: BLE001  (that mistake does not apply to this case's shapes)
            continue
        cscale = np.asarray(cscale.double().numpy() if isinstance(cscale, torch.Tensor) else [cscale], dtype=float)
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
        x, _ = absmax_levels(case, cscale)
        if _boundaries(x[differ]).all() and np.abs(levels - q).max() <= 1:
            near.append(mistake.description)
    return near[0] if near else None


def absmax_levels(case: Case, scale: np.ndarray | None = None) -> tuple:
    """(w / scale before rounding, float64 in w's shape, the expected scale as float64 values) of a case, with the
    case's right scale (one value per tensor, one float32 value per block) unless ``scale`` is given; an
    element whose scale is 0 has level 0."""
    w = case.args[0]
    bits = case.kwargs.get("bits", 8)
    block_size = case.kwargs.get("block_size")
    groups = _groups(w, block_size, "flat")  # (G, size)
    if scale is None:
        scale = (groups.abs().amax(dim=1) / q_max(bits))
        scale = (scale if block_size is None else scale.float().double()).numpy()
    s = torch.from_numpy(np.asarray(scale, dtype=np.float64))[:, None]  # (G, 1)
    x = torch.where(s == 0, torch.zeros_like(groups), groups / torch.where(s == 0, torch.ones_like(s), s))
    return x.reshape(w.shape).numpy(), np.asarray(scale, dtype=np.float64)


def absmax_cases() -> list:
    g = torch.Generator().manual_seed(1000)
    weights = torch.randn(64, 32, generator=g) * 0.02
    outlier = torch.randn(48, 24, generator=g) * 0.02
    outlier[7, 3] = 0.8  # one weight 40 times the others' spread
    negative = torch.randn(20, 10, generator=g)
    negative[4, 4] = -3.0  # the largest in size is negative
    zero_block = torch.randn(4, 16, generator=g)
    zero_block[0, 8:] = 0.0  # block 1 of 8: all zeros
    negative_3d = torch.randn(2, 4, 8, generator=g) * 0.1
    negative_3d[1, 2, 5] = -0.9
    halves = torch.tensor([7.0, 0.5, 1.5, 2.5, -7.0, -0.5, -1.5, -3.5, 3.5, 7.0, 4.5, -6.5])
    return [
        Case("per tensor: a hand-made row [0.5, -1.27, 0.01, 1.0, -0.3], bits=8 (max |w| = 1.27, so scale = 0.01)",
             (torch.tensor([0.5, -1.27, 0.01, 1.0, -0.3]),), {"bits": 8}),
        Case("per tensor: random weights (64, 32) with std 0.02, default bits", (weights,)),
        Case("per tensor: weights (48, 24) with one outlier 40 times the others, bits=8", (outlier,), {"bits": 8}),
        Case("per tensor: weights (20, 10) whose largest |w| is negative (-3.0), bits=8", (negative,), {"bits": 8}),
        Case("per tensor, bits=4: levels -7..7, weights (16, 16)", (torch.randn(16, 16, generator=g),), {"bits": 4}),
        Case("per tensor, values exactly halfway between two levels [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.3, "
             "-1.2], bits=8: halves go to the even neighbour",
             (torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.3, -1.2]),), {"bits": 8}),
        Case("per tensor: an all-zero tensor (3, 4): scale 0.0 and zero levels", (torch.zeros(3, 4),)),
        Case("blocks of 32 at 8 bits on (64, 32), one block per row, as GGUF's Q8_0 cuts a matrix", (weights,),
             {"bits": 8, "block_size": 32}),
        Case("blocks of 32 at 4 bits on (48, 24) with one outlier: 36 blocks, each running over a row and a third",
             (outlier,), {"bits": 4, "block_size": 32}),
        Case("blocks of 16 at 6 bits on a 3-D (2, 4, 8), the largest |w| of one block negative", (negative_3d,),
             {"bits": 6, "block_size": 16}),
        Case("blocks of 8 at 4 bits on (4, 16) whose block 1 is all zeros: its scale is 0, its levels 0",
             (zero_block,), {"bits": 4, "block_size": 8}),
        Case("blocks of 4 at 4 bits, each with a 7 or -7 (scale 1.0) and exact halves [7, 0.5, 1.5, 2.5 | -7, "
             "-0.5, -1.5, -3.5 | 3.5, 7, 4.5, -6.5]: halves go to the even neighbour", (halves,),
             {"bits": 4, "block_size": 4}),
        Case("blocks of 16 at 2 bits (levels -1..1) on (8, 8)", (torch.randn(8, 8, generator=g),),
             {"bits": 2, "block_size": 16}),
        RaisesCase("w (5, 10) with block_size=32: 50 elements are not a multiple of 32, so ValueError",
                   (torch.randn(5, 10, generator=g),), {"block_size": 32}),
    ]


def _pair_problem(out) -> str | None:
    """Why ``out`` is not a pair (q, scale) of the right kinds, or None."""
    if isinstance(out, TensorData):
        return Problem("returned one tensor", "returned one tensor (q alone, or the dequantized weights): return "
                                              "the pair (q, scale)")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"return the pair (q, scale); got {describe(out)}"
    q, scale = out
    if isinstance(scale, TensorData) and is_number(q):
        return "returned (scale, q): the order is (q, scale)"
    if not isinstance(q, TensorData) or _scale_array(scale) is None:
        return f"return the pair (q, scale), q a torch.int8 tensor; got ({describe(q)}, {describe(scale)})"
    return None


def _scale_kind_problem(case: Case, scale) -> str | None:
    """Is the scale the right kind: a Python float per tensor, a float32 tensor of n_blocks entries per block."""
    w = case.args[0]
    block_size = case.kwargs.get("block_size")
    if block_size is None:
        if is_number(scale) or scale.array.size == 1:
            return None
        return Problem(f"scale has shape {scale.shape}: without block_size, one scale for the whole tensor (a "
                       f"Python float)", "one scale per row or column without block_size: then the whole tensor "
                                         "shares one scale, from its largest |w| over every element")
    n_blocks = w.numel() // block_size
    if is_number(scale) or scale.array.size == 1:
        return Problem(f"scale is one number; expected a float32 tensor of {n_blocks} scales, one per block",
                       "one scale for the whole tensor although block_size was given: each block of block_size "
                       "consecutive elements gets its own scale")
    size = scale.array.size
    if size == w.shape[0] and size != n_blocks:
        return Problem(f"scale has {size} entries, one per row of w; expected {n_blocks}, one per block",
                       "one scale per row instead of per block: a block is block_size consecutive elements of "
                       "the flattened tensor, whatever the rows")
    if scale.shape != (n_blocks,):
        return f"scale has shape {scale.shape}; expected ({n_blocks},), one entry per block"
    return None


def _absmax_raises(case: Case) -> str:
    w, block_size = case.args[0], case.kwargs["block_size"]
    return f"w has {w.numel()} elements, not a multiple of block_size={block_size}"


def judge_absmax(case: Case, out) -> str | None:
    w = case.args[0]
    bits = case.kwargs.get("bits", 8)
    block_size = case.kwargs.get("block_size")
    n = q_max(bits)
    if isinstance(case, RaisesCase):
        return _raises_problem(out, _absmax_raises(case), "no check that w splits into whole blocks: raise "
                                                          "ValueError when numel is not a multiple of block_size")
    if raised(out):
        return f"raised ValueError ({out[1]}), but w splits into whole blocks here"
    problem = _pair_problem(out)
    if problem:
        return problem
    q, scale = out
    problem = _scale_kind_problem(case, scale)
    if problem:
        return problem
    if q.shape != tuple(w.shape):
        return f"q has shape {q.shape}; expected {tuple(w.shape)}, the shape of w (in both modes)"
    x, expected_scale = absmax_levels(case)
    scale_values = _scale_array(scale)
    got = q.array.astype(np.float64)
    if not _same_scale(scale_values, expected_scale):
        wrong = np.flatnonzero(~np.isclose(scale_values, expected_scale, rtol=1e-5, atol=0))
        i = int(wrong[0])
        where = "" if block_size is None else f"{len(wrong)} of {len(expected_scale)} scales are wrong; block {i}: "
        text = (f"{where}scale is {scale_values[i]:.6g}; expected {expected_scale[i]:.6g}"
                f"{ratio_hint(scale_values[i], expected_scale[i])}")
        return Problem(text, _name_by(absmax_scale_mistakes(bits, block_size), case, None, scale_values))
    if block_size is None and isinstance(scale, TensorData):
        return Problem(f"scale is a tensor ({scale.dtype}) holding the right value: return a Python float",
                       "returned the per-tensor scale as a tensor: without block_size it is a Python float")
    problem = _levels_problem(got, x, np.round(x))
    if problem is None and block_size is not None and scale.dtype != "torch.float32":
        return Problem(f"the scales are right but their dtype is {scale.dtype}",
                       f"scales stored as {scale.dtype}: per block they are a float32 tensor, as GGUF keeps "
                       f"them in a compact float")
    dtype = None if q.dtype == "torch.int8" else q.dtype
    if problem is None and dtype is None:
        return None
    if problem is None:
        if q.array.dtype.kind == "f":
            return Problem(f"q has the right values but dtype {dtype}",
                           "returned a float tensor instead of int8: the levels are stored as torch.int8")
        return Problem(f"q has the right values but dtype {dtype}",
                       f"q stored as {dtype}: the exercise stores the levels as torch.int8")
    if got.max() > n or got.min() < -n:
        problem += f"\nq holds levels outside -{n}..{n} (from {got.min():.0f} to {got.max():.0f})"
    mistake = _name_by(absmax_level_mistakes(), case, got, scale_values)
    zero = expected_scale == 0  # all-zero blocks (or an all-zero tensor)
    if mistake is None and zero.any():
        in_zero_block = np.repeat(zero, block_size or w.numel()).reshape(w.shape)
        if (got[in_zero_block] != 0).any() and (got[~in_zero_block] == np.round(x)[~in_zero_block]).all():
            mistake = ("an all-zero block (or tensor) divided 0 by 0: NaN levels become arbitrary integers in "
                       "int8; all-zero weights get zero levels")
    if mistake is None and np.allclose(got, x, atol=1e-4):
        mistake = "q not rounded: round to whole levels, then store them as torch.int8"
    if mistake is None and q.dtype == "torch.uint8":
        mistake = "stored q as unsigned (torch.uint8): negative levels wrap around to 256 - k; use torch.int8"
    return Problem(problem, mistake)


def explain_absmax_error(case: Case, outcome) -> str | None:
    if "unexpected keyword argument 'block_size'" in outcome.message:
        return "the function takes block_size: absmax_quantize(w, bits=8, block_size=None)"
    if isinstance(case, RaisesCase):
        return _explain_raises_error(outcome, _absmax_raises(case))
    if "'float' object has no attribute" in outcome.message:
        return "a Python float has no tensor methods: per tensor, the scale is a plain number"
    if "only one element tensors" in outcome.message:
        return "Python's round() and int() work on one number: round the whole tensor with torch.round"
    if "invalid for input of size" in outcome.message or "must match the size" in outcome.message:
        return ("a block is block_size consecutive elements of the flattened tensor, in order, across rows: it "
                "need not fit in a row of w")
    return None


register(Exercise(
    name="absmax_quantize", chapter="10", signature="(w, bits=8, block_size=None)", points=4,
    make_cases=absmax_cases, judge=judge_absmax, explain_error=explain_absmax_error,
    forbidden=(QUANTIZE, GGUF_QUANTIZE, ABSMAX_HELPERS),
))
