"""Chapter 02, self-attention: softmax, causal_mask, scaled_dot_product_attention, self_attention.

The references are PyTorch's own operations (``torch.softmax``, ``torch.tril``,
``F.scaled_dot_product_attention``); each ``Mistake`` is a wrong answer learners often write,
so that a wrong output can be named, not just flagged.
"""

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from grader.compare import Mistake, Problem, close, tensor_problem, with_mistake
from grader.core import Case, Exercise, register
from grader.forbidden import SDPA, SOFTMAX
from grader.values import TensorData, describe

NEG_INF = float("-inf")


# ---------------------------------------------------------------- softmax

def softmax_cases() -> list:
    g = torch.Generator().manual_seed(0)
    masked = torch.randn(3, 5, generator=g)
    masked[0, 3:] = NEG_INF
    masked[2, 0] = NEG_INF
    return [
        Case("a (3, 5) tensor, dim=-1", (torch.randn(3, 5, generator=g),)),
        Case("a square (4, 4) tensor, dim=-1", (torch.randn(4, 4, generator=g),), {"dim": -1}),
        Case("a (2, 3, 4) tensor, dim=0", (torch.randn(2, 3, 4, generator=g),), {"dim": 0}),
        Case("a (2, 3, 4) tensor, dim=1", (torch.randn(2, 3, 4, generator=g),), {"dim": 1}),
        Case("a 1-D tensor of 6, default dim", (torch.randn(6, generator=g) * 3,)),
        # float32 holds 1e4 to about 1e-3, so exact-in-theory answers differ by that much here
        Case("large inputs: every value near 1e4", (1e4 + torch.randn(2, 4, generator=g),), atol=1e-3, rtol=1e-3),
        Case("rows on different scales: one row near 1e4, one near 0",
             (torch.stack([1e4 + torch.randn(4, generator=g), torch.randn(4, generator=g)]),), atol=1e-3, rtol=1e-3),
        Case("masked entries: -inf in some positions", (masked,)),
        Case("very negative inputs: every value near -1e4", (torch.randn(3, 4, generator=g) - 1e4,),
             atol=1e-3, rtol=1e-3),
        Case("float64: a (3, 2) tensor, dim=-2", (torch.randn(3, 2, generator=g, dtype=torch.float64),), {"dim": -2}),
        Case("one entry only: a (1, 1) tensor", (torch.tensor([[-2.5]]),)),
    ]


def _exp_normalised(x, dim, shift):
    e = torch.exp(x - shift)
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_mistakes(x, dim=-1):
    """Wrong softmaxes, each with the arguments of ``softmax``."""
    other_dims = [d for d in range(x.dim()) if d != dim % x.dim()]
    return [
        Mistake("exp overflows: no maximum subtracted before exp, so inputs near 1e4 give inf / inf = NaN",
                lambda x, dim=-1: _exp_normalised(x, dim, 0.0)),
        Mistake("subtracted the maximum of the whole tensor, not the maximum along `dim`, so rows far "
                "below it underflow to 0 / 0",
                lambda x, dim=-1: _exp_normalised(x, dim, x.max())),
        Mistake("normalised over the whole tensor instead of along `dim`",
                lambda x, dim=-1: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum()),
        Mistake("summed without keepdim=True, so the sums broadcast along the wrong axis",
                lambda x, dim=-1: torch.exp(x - x.max(dim=dim, keepdim=True).values)
                / torch.exp(x - x.max(dim=dim, keepdim=True).values).sum(dim=dim)),
        Mistake("forgot to divide by the sum of the exponentials (returned exp(x))",
                lambda x, dim=-1: torch.exp(x - x.max(dim=dim, keepdim=True).values)),
        Mistake("returned log-probabilities (log-softmax) instead of probabilities",
                lambda x, dim=-1: torch.log_softmax(x, dim=dim)),
        Mistake("divided the inputs by their sum instead of dividing the exponentials by theirs",
                lambda x, dim=-1: x / x.sum(dim=dim, keepdim=True)),
        Mistake("subtracted the maximum along `dim` but summed along the last dimension: use `dim` for both",
                lambda x, dim=-1: torch.exp(x - x.max(dim=dim, keepdim=True).values)
                / torch.exp(x - x.max(dim=dim, keepdim=True).values).sum(dim=-1, keepdim=True)),
    ] + [
        Mistake(f"ignored the `dim` argument: normalised along dim {d} instead of dim {dim}",
                lambda x, dim=-1, d=d: torch.softmax(x, dim=d))
        for d in other_dims
    ]


def judge_softmax(case: Case, out) -> str | None:
    x = case.args[0]
    dim = case.kwargs.get("dim", -1)
    problem = tensor_problem(out, torch.softmax(x, dim=dim).numpy(), case)
    if problem is None:
        return None
    return with_mistake(problem, out, case, _softmax_mistakes(x, dim))


def explain_softmax_error(case: Case, outcome) -> str | None:
    if "return_types.max" in outcome.message:
        return "`max` along a dimension returns a pair (values, indices): only the values are the maxima"
    if "must match the size" in outcome.message or "broadcast" in outcome.message:
        return ("summed without keepdim=True: the reduced dimension disappeared, so the sums no longer broadcast "
                "back against x along `dim`")
    return None


register(Exercise(
    name="softmax", chapter="02", signature="(x, dim=-1)", points=2,
    make_cases=softmax_cases, judge=judge_softmax, explain_error=explain_softmax_error, forbidden=(SOFTMAX, SDPA),
))


# ---------------------------------------------------------------- causal_mask

def causal_mask_cases() -> list:
    return [Case(f"n = {n}", (n,)) for n in (4, 1, 7)]


def judge_causal_mask(case: Case, out) -> str | None:
    n = case.args[0]
    expected = np.tril(np.ones((n, n), dtype=bool))
    if not isinstance(out, TensorData):
        return f"expected a boolean torch.Tensor of shape ({n}, {n}); got {describe(out)}"
    got = out.array
    if got.shape != (n, n):
        return f"the mask has shape {got.shape}; expected ({n}, {n})"
    if got.dtype != bool:
        if np.array_equal(got, np.where(expected, 0.0, NEG_INF)):
            return ("returned an additive float mask (0 and -inf); this exercise wants booleans, "
                    "True where position i may attend to position j")
        if np.array_equal(got != 0, expected):
            return f"right pattern but dtype {out.dtype}: return a boolean tensor (dtype=torch.bool)"
        return f"dtype {out.dtype}: the mask must be a boolean tensor (dtype=torch.bool)"
    if np.array_equal(got, expected):
        return None
    named = {
        "upper-triangular: True where j >= i lets each position see the future instead of the past":
            np.triu(np.ones((n, n), dtype=bool)),
        "the diagonal is False: a position may also attend to itself (j <= i, not j < i)":
            np.tril(np.ones((n, n), dtype=bool), k=-1),
        "inverted: True must mean *may attend*; your True marks the future positions to hide":
            ~expected,
        "all True: nothing is masked": np.ones((n, n), dtype=bool),
        "one step into the future: position i may also attend to i + 1; its last allowed key is j = i":
            np.tril(np.ones((n, n), dtype=bool), k=1),
    }
    for description, pattern in named.items():
        if np.array_equal(got, pattern):
            return Problem("wrong pattern.", description)
    return f"wrong pattern: {int((got != expected).sum())} of {n * n} entries differ from j <= i"


register(Exercise(
    name="causal_mask", chapter="02", signature="(n)", points=1,
    make_cases=causal_mask_cases, judge=judge_causal_mask, forbidden=(SDPA,),
))


# ---------------------------------------------------------------- scaled_dot_product_attention

def attention(q, k, v, mask=None, scale=None, softmax_dim=-1, fill=NEG_INF, mask_after_softmax=False,
              invert_mask=False, return_scores=False, swap_qk=False, added_mask=None):
    """Scaled dot-product attention with switches that reproduce the common mistakes."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (k @ q.transpose(-2, -1) if swap_qk else q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if added_mask is not None:
        scores = scores + added_mask
    if mask is not None and invert_mask:
        mask = ~mask
    if mask is not None and not mask_after_softmax:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and mask_after_softmax:
        weights = weights * mask
    return weights @ v, (scores if return_scores else weights)


def attention_mistakes(q, k, v, mask=None) -> list:
    """Named wrong attentions; each takes (q, k, v, mask) like the exercise."""
    d_k, d_v = q.shape[-1], v.shape[-1]
    mistakes = [
        Mistake("no 1/sqrt(d_k) scaling of the scores", lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1.0)),
        Mistake("scaled by 1/d_k instead of 1/sqrt(d_k)",
                lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1 / d_k)),
        Mistake("multiplied the scores by sqrt(d_k) instead of dividing",
                lambda q, k, v, mask=None: attention(q, k, v, mask, scale=math.sqrt(d_k))),
        Mistake("softmax taken over the query axis (dim=-2) instead of over the keys (dim=-1)",
                lambda q, k, v, mask=None: attention(q, k, v, mask, softmax_dim=-2)),
        Mistake("softmax without dim=-1: PyTorch then picks dim 0 or 1 (a batch or head axis), not the keys",
                lambda q, k, v, mask=None: attention(q, k, v, mask, softmax_dim=0 if q.dim() in (1, 3) else 1)),
        Mistake("returned the scores before the softmax as the weights",
                lambda q, k, v, mask=None: attention(q, k, v, mask, return_scores=True)),
        Mistake("computed K Q^T instead of Q K^T (queries and keys swapped)",
                lambda q, k, v, mask=None: attention(q, k, v, mask, swap_qk=True)),
    ]
    if d_v != d_k:
        mistakes.append(Mistake("scaled by the value size sqrt(d_v) instead of the key size sqrt(d_k)",
                                lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1 / math.sqrt(d_v))))
    for axis in range(q.dim() - 1):
        if q.shape[axis] not in (1, d_k):
            mistakes.append(Mistake(
                f"scaled by sqrt(q.shape[{axis}]) = sqrt({q.shape[axis]}): d_k is the size of the last axis, q.shape[-1]",
                lambda q, k, v, mask=None, a=axis: attention(q, k, v, mask, scale=1 / math.sqrt(q.shape[a]))))
    if mask is not None:
        mistakes += [
            Mistake("mask applied after softmax (the weights of allowed keys no longer sum to 1): "
                    "fill the scores with -inf before the softmax",
                    lambda q, k, v, mask=None: attention(q, k, v, mask, mask_after_softmax=True)),
            Mistake("inverted mask: True means *may attend*, so fill where the mask is False",
                    lambda q, k, v, mask=None: attention(q, k, v, mask, invert_mask=True)),
            Mistake("mask ignored", lambda q, k, v, mask=None: attention(q, k, v, None)),
            Mistake("masked scores set to 0 instead of -inf, so hidden keys still get weight",
                    lambda q, k, v, mask=None: attention(q, k, v, mask, fill=0.0)),
            Mistake("added the boolean mask to the scores (True/False become 1/0 and hide nothing): a hidden "
                    "key's score must become -inf before the softmax, so that its weight is exactly 0",
                    lambda q, k, v, mask=None: attention(q, k, v, None, added_mask=mask)),
        ]
    return mistakes


def sdpa_cases() -> list:
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    padding = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    padding[1, ..., 4:] = False  # the second sequence has 2 padding keys
    return [
        Case("2-D: 3 queries, 3 keys, d_k = d_v = 4, no mask", (rand(3, 4), rand(3, 4), rand(3, 4))),
        Case("2-D: 4 queries, 6 keys, d_k = 8, d_v = 5, no mask", (rand(4, 8), rand(6, 8), rand(6, 5))),
        Case("batch of 2: 5 queries and keys, d_k = 16, causal mask (5, 5)",
             (rand(2, 5, 16), rand(2, 5, 16), rand(2, 5, 16)), {"mask": causal}),
        Case("batch (2, 3 heads): 4 queries, 6 keys, d_k = 8, padding mask (2, 1, 1, 6)",
             (rand(2, 3, 4, 8), rand(2, 3, 6, 8), rand(2, 3, 6, 8)), {"mask": padding}),
        Case("one query over 7 keys, d_k = 64 (scores grow with d_k)", (rand(1, 64), rand(7, 64), rand(7, 3))),
    ]


def _expected_attention(q, k, v, mask=None):
    """PyTorch's own output, and the weights it implies."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, attention(q, k, v, mask)[1]


def judge_attention_pair(case: Case, out, expected: tuple, mistakes: list) -> str | None:
    """Judge an (output, weights) pair against the expected pair, naming a known mistake."""
    exp_out, exp_w = (t.numpy() for t in expected)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        if isinstance(out, TensorData) and close(out, TensorData(exp_out, out.dtype)):
            return "returned only the output: return the pair (output, weights)"
        return f"return the pair (output, weights); got {describe(out)}"
    if close(out[0], TensorData(exp_w, "")) and close(out[1], TensorData(exp_out, "")):
        return "returned (weights, output): the order is (output, weights)"
    problem = tensor_problem(out[0], exp_out, case, "the output") or tensor_problem(out[1], exp_w, case, "the weights")
    if problem is None:
        return None
    return with_mistake(problem, tuple(out), case, mistakes)


def judge_sdpa(case: Case, out) -> str | None:
    expected = _expected_attention(*case.args, **case.kwargs)
    return judge_attention_pair(case, out, expected, attention_mistakes(*case.args, **case.kwargs))


def explain_attention_error(case: Case, outcome) -> str | None:
    """Hints for the usual crashes: .T on batched tensors, contracting the wrong axes."""
    if re.search(r"\bw_\w+\.T\b", outcome.where):
        return ("the weights here are shaped (d_model, d_k), so x (..., T, d_model) multiplies them as they are: "
                "no transpose")
    if ".T" in outcome.where or ".t()" in outcome.where:
        return ("`.T` / `.t()` reverses every dimension (or only works in 2-D), so the batch axes move too: "
                "swap only the last two axes of the keys, transpose(-2, -1)")
    if "Dimension out of range" in outcome.message:
        return ("counting axes from the front breaks when the number of batch dimensions changes: count from the "
                "end, transpose(-2, -1) swaps the last two axes whatever comes before them")
    if "cannot be multiplied" in outcome.message or "must match the size" in outcome.message:
        return ("check which axes are contracted: the scores pair every query with every key over d_k, shape "
                "(..., Lq, Lk), so only the last two axes of the keys are swapped, transpose(-2, -1)")
    if "masked_fill" in outcome.message or "expected a bool" in outcome.message.lower():
        return ("masked_fill needs a boolean mask, and it fills where that mask is True: the keys to hide are "
                "where `mask` is False")
    return None


register(Exercise(
    name="scaled_dot_product_attention", chapter="02", signature="(q, k, v, mask=None)", points=3,
    make_cases=sdpa_cases, judge=judge_sdpa, explain_error=explain_attention_error, forbidden=(SOFTMAX, SDPA),
))


# ---------------------------------------------------------------- self_attention

def self_attention_cases() -> list:
    g = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    return [
        Case("x (4, 8), w_q and w_k (8, 6), w_v (8, 5), no mask", (rand(4, 8), rand(8, 6), rand(8, 6), rand(8, 5))),
        Case("batch x (2, 5, 8), w_q and w_k (8, 4), w_v (8, 8), causal mask",
             (rand(2, 5, 8), rand(8, 4), rand(8, 4), rand(8, 8)), {"mask": causal}),
        Case("square weights: x (3, 6), every weight (6, 6)", (rand(3, 6), rand(6, 6), rand(6, 6), rand(6, 6))),
    ]


def _project_then(variant):
    """A self-attention mistake made of correct projections and a wrong attention."""
    return lambda x, w_q, w_k, w_v, mask=None: variant(x @ w_q, x @ w_k, x @ w_v, mask)


def self_attention_mistakes(x, w_q, w_k, w_v, mask=None) -> list:
    d_model, d_k = x.shape[-1], w_q.shape[-1]
    mistakes = [
        Mistake("multiplied by the transposed weights: the weights here are (d_model, d_k) and multiply x as "
                "they are",
                lambda x, w_q, w_k, w_v, mask=None: attention(x @ w_q.T, x @ w_k.T, x @ w_v.T, mask)),
        Mistake("values not projected: used x itself as the values instead of its projection by w_v",
                lambda x, w_q, w_k, w_v, mask=None: attention(x @ w_q, x @ w_k, x, mask)),
        Mistake("used w_q for the keys as well",
                lambda x, w_q, w_k, w_v, mask=None: attention(x @ w_q, x @ w_q, x @ w_v, mask)),
        Mistake("queries and keys not projected: used x itself for both instead of its projections by w_q and w_k",
                lambda x, w_q, w_k, w_v, mask=None: attention(x, x, x @ w_v, mask)),
        Mistake("queries and keys swapped (the projection by w_k used as the queries)",
                lambda x, w_q, w_k, w_v, mask=None: attention(x @ w_k, x @ w_q, x @ w_v, mask)),
    ]
    if d_model != d_k:
        mistakes.append(Mistake(
            "scaled by sqrt(d_model) (the width of x) instead of sqrt(d_k) (the width of the projections)",
            lambda x, w_q, w_k, w_v, mask=None: attention(x @ w_q, x @ w_k, x @ w_v, mask,
                                                          scale=1 / math.sqrt(d_model))))
    projected = (x @ w_q, x @ w_k, x @ w_v, mask)
    for m in attention_mistakes(*projected):
        mistakes.append(Mistake(m.description, _project_then(m.make)))
    return mistakes


def judge_self_attention(case: Case, out) -> str | None:
    x, w_q, w_k, w_v = case.args
    mask = case.kwargs.get("mask")
    expected = _expected_attention(x @ w_q, x @ w_k, x @ w_v, mask)
    return judge_attention_pair(case, out, expected, self_attention_mistakes(*case.args, **case.kwargs))


register(Exercise(
    name="self_attention", chapter="02", signature="(x, w_q, w_k, w_v, mask=None)", points=2,
    make_cases=self_attention_cases, judge=judge_self_attention, explain_error=explain_attention_error,
    forbidden=(SOFTMAX, SDPA),
))
