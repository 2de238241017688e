"""Chapter 03, multi-head attention and the transformer block: split_heads, merge_heads,
multi_head_attention, layer_norm, feed_forward, bert_layer.

The references are PyTorch's and Hugging Face's own modules: ``nn.MultiheadAttention(batch_first=True)``
given the same weights, ``F.layer_norm``, ``F.linear`` with ``F.gelu``/``F.relu``, and a
``transformers`` ``BertLayer`` (eager attention) loaded with the case's state dict. Each ``Mistake``
is a wrong answer learners often write, so that a wrong output can be named, not just flagged.

Padding in ``bert_layer``: Hugging Face adds a large negative number to the scores of padded *keys*
only, so a padded position still attends to the real tokens and its output is defined. The check
compares every position, padded ones included, and says so when only the padded positions differ.
No case has a sequence without real tokens (its rows would be NaN with a -inf mask).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.compare import Mistake, Problem, close, name_mistake, tensor_problem, with_mistake
from grader.core import Case, Exercise, RaisesCase, raised, register
from grader.forbidden import HF_BERT_LAYER, HF_LAYER_OUTPUT, LAYER_NORM, MULTIHEAD
from grader.values import TensorData, describe

BERT_EPS = 1e-12  # BERT's LayerNorm eps (torch's default is 1e-5)


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def _linear(x, w, b=None, x_at_w=False):
    """x W^T + b in nn.Linear layout (w is (out, in)); ``x_at_w`` reproduces the x @ W mistake."""
    y = x @ (w if x_at_w else w.T)
    return y if b is None else y + b


LINEAR_LAYOUT_HINT = ("the weights are in nn.Linear layout, (out_features, in_features): a projection multiplies "
                      "by the transpose of the stored weight, as nn.Linear and F.linear do, not by the weight itself")


# ---------------------------------------------------------------- split_heads



def _split(x, n_heads, how="heads"):
    """(B, T, D) -> (B, nh, T, hs); ``how`` reproduces the usual wrong splits."""
    B, T, D = x.shape
    hs = D // n_heads
    if how == "no_transpose":  # straight to (B, nh, T, hs): each "head" mixes time steps
        return x.reshape(B, n_heads, T, hs)
    if how == "interleaved":  # D read as (hs, nh): head h gets features h, h + nh, ...
        return x.reshape(B, T, hs, n_heads).permute(0, 3, 1, 2)
    return x.reshape(B, T, n_heads, hs).transpose(1, 2)


def _merge(x, how="heads"):
    """(B, nh, T, hs) -> (B, T, nh * hs); ``how`` reproduces the usual wrong merges."""
    B, nh, T, hs = x.shape
    if how == "no_transpose":
        return x.reshape(B, T, nh * hs)
    if how == "interleaved":
        return x.permute(0, 2, 3, 1).reshape(B, T, nh * hs)
    return x.transpose(1, 2).reshape(B, T, nh * hs)


def split_heads_cases() -> list:
    g = torch.Generator().manual_seed(30)
    return [
        Case("x (2, 5, 12), n_heads = 3 -> (2, 3, 5, 4)", (_randn(g, 2, 5, 12), 3)),
        Case("batch of 1: x (1, 7, 8), n_heads = 2 -> (1, 2, 7, 4)", (_randn(g, 1, 7, 8), 2)),
        Case("one token: x (3, 1, 10), n_heads = 5 -> (3, 5, 1, 2)", (_randn(g, 3, 1, 10), 5)),
        Case("x (2, 3, 24), n_heads = 4 -> (2, 4, 3, 6)", (_randn(g, 2, 3, 24), 4)),
        RaisesCase("x (2, 5, 12), n_heads = 5: 12 is not divisible by 5, so ValueError", (_randn(g, 2, 5, 12), 5)),
        Case("one feature per head: x (2, 3, 6), n_heads = 6 -> (2, 6, 3, 1)", (_randn(g, 2, 3, 6), 6)),
    ]


def split_heads_mistakes() -> list:
    return [
        Mistake("reshaped (B, T, D) straight to (B, n_heads, T, head_size) without a transpose, so each 'head' "
                "mixes several time steps: the head axis comes out of the feature axis D, then moves in front of "
                "the time axis",
                lambda x, n_heads: _split(x, n_heads, "no_transpose")),
        Mistake("heads split along the wrong axis: D read as (head_size, n_heads), so head h gets features "
                "h, h + n_heads, ...; head h owns the contiguous block h * head_size ... (h + 1) * head_size - 1",
                lambda x, n_heads: _split(x, n_heads, "interleaved")),
        Mistake("no transpose: returned (B, T, n_heads, head_size); the head axis must come before the time axis",
                lambda x, n_heads: x.reshape(*x.shape[:2], n_heads, -1)),
        Mistake("n_heads and head_size swapped when splitting D, which gives (B, head_size, T, n_heads): "
                "the axis of size n_heads comes first within D",
                lambda x, n_heads: x.reshape(*x.shape[:2], -1, n_heads).transpose(1, 2)),
        Mistake("transposed the last two axes instead of the time and head axes: the result is "
                "(B, T, head_size, n_heads)",
                lambda x, n_heads: x.reshape(*x.shape[:2], n_heads, -1).transpose(2, 3)),
    ]


def judge_split_heads(case: Case, out) -> str | None:
    x, n_heads = case.args
    B, T, D = x.shape
    if isinstance(case, RaisesCase):
        if raised(out):
            return None
        return Problem(f"D = {D} is not divisible by n_heads = {n_heads}, so split_heads must raise ValueError; "
                       f"it returned {describe(out)}.",
                       "no check that D % n_heads == 0: raise ValueError before splitting")
    problem = tensor_problem(out, _split(x, n_heads).numpy(), case)
    return None if problem is None else with_mistake(problem, out, case, split_heads_mistakes())


def explain_split_heads_error(case: Case, outcome) -> str | None:
    x, n_heads = case.args
    D = x.shape[-1]
    if isinstance(case, RaisesCase):
        if outcome.error_type == "AssertionError":
            return "use `raise ValueError(...)` when D % n_heads != 0, not assert (assertions can be switched off)"
        return (f"D = {D} is not divisible by n_heads = {n_heads}: check `D % n_heads` first and raise ValueError "
                f"yourself, instead of letting the reshape fail with {outcome.error_type}")
    if "view size is not compatible" in outcome.message:
        return "use .reshape(...) (or .contiguous().view(...)): .view needs a contiguous tensor"
    if "is invalid for input of size" in outcome.message:
        return (f"the sizes of a view must multiply to the number of elements: head_size is D // n_heads, "
                f"here {D} // {n_heads} = {D // n_heads}")
    return None


register(Exercise(
    name="split_heads", chapter="03", signature="(x, n_heads)", points=1,
    make_cases=split_heads_cases, judge=judge_split_heads, explain_error=explain_split_heads_error,
))


# ---------------------------------------------------------------- merge_heads

def merge_heads_cases() -> list:
    g = torch.Generator().manual_seed(31)
    split = _split(_randn(g, 2, 6, 15), 3)  # a transposed view, as split_heads returns it
    return [
        Case("x (2, 3, 5, 4) -> (2, 5, 12)", (_randn(g, 2, 3, 5, 4),)),
        Case("batch of 1: x (1, 2, 7, 4) -> (1, 7, 8)", (_randn(g, 1, 2, 7, 4),)),
        Case("one token: x (3, 5, 1, 2) -> (3, 1, 10)", (_randn(g, 3, 5, 1, 2),)),
        Case("the output of split_heads, a non-contiguous (2, 3, 6, 5) view -> (2, 6, 15)", (split,)),
        Case("one feature per head: x (2, 6, 3, 1) -> (2, 3, 6)", (_randn(g, 2, 6, 3, 1),)),
    ]


def merge_heads_mistakes() -> list:
    return [
        Mistake("merged without transposing back: the time axis must be back in front of the heads before the "
                "last two axes are flattened, so that each time step gathers its own heads",
                lambda x: _merge(x, "no_transpose")),
        Mistake("concatenated in the wrong order, (head_size, n_heads): the features of head h must stay "
                "together at h * head_size ... (h + 1) * head_size - 1",
                lambda x: _merge(x, "interleaved")),
        Mistake("transposed back but did not merge the last two axes: returned (B, T, n_heads, head_size)",
                lambda x: x.transpose(1, 2)),
        Mistake("summed the heads instead of concatenating them", lambda x: x.sum(1)),
        Mistake("averaged the heads instead of concatenating them", lambda x: x.mean(1)),
        Mistake("merged the heads into the time axis: (B, n_heads * T, head_size)",
                lambda x: x.reshape(x.shape[0], -1, x.shape[-1])),
    ]


def judge_merge_heads(case: Case, out) -> str | None:
    problem = tensor_problem(out, _merge(case.args[0]).numpy(), case)
    return None if problem is None else with_mistake(problem, out, case, merge_heads_mistakes())


def explain_merge_heads_error(case: Case, outcome) -> str | None:
    if "view size is not compatible" in outcome.message:
        return ("after a transpose the tensor is not contiguous in memory, so .view fails: use `.reshape` "
                "(or `.contiguous().view`)")
    if "is invalid for input of size" in outcome.message:
        return ("the merged width is n_heads * head_size, and the time axis comes back in front of the heads "
                "before the merge")
    return None


register(Exercise(
    name="merge_heads", chapter="03", signature="(x)", points=1,
    make_cases=merge_heads_cases, judge=judge_merge_heads, explain_error=explain_merge_heads_error,
))


# ---------------------------------------------------------------- multi_head_attention

MHA_KEYS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")


def mha_params(g, d_model: int, bias_scale: float = 0.5) -> dict:
    """Random ``multi_head_attention`` weights in nn.Linear layout (scores neither flat nor saturated)."""
    params = {}
    for name in "qkvo":
        params[f"w_{name}"] = _randn(g, d_model, d_model, scale=1 / math.sqrt(d_model))
        params[f"b_{name}"] = _randn(g, d_model, scale=bias_scale)
    return params


def torch_mha(query, key, value, params, n_heads, mask=None):
    """``nn.MultiheadAttention(batch_first=True)`` with these weights; our mask (True = may attend) inverted for it."""
    B, Tq, D = query.shape
    Tk = key.shape[1]
    with torch.random.fork_rng(devices=[]):  # its random init must not move the learner's random stream
        mha = nn.MultiheadAttention(D, n_heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([params["w_q"], params["w_k"], params["w_v"]]))
        mha.in_proj_bias.copy_(torch.cat([params["b_q"], params["b_k"], params["b_v"]]))
        mha.out_proj.weight.copy_(params["w_o"])
        mha.out_proj.bias.copy_(params["b_o"])
        attn_mask = None
        if mask is not None:  # its boolean attn_mask is True where attending is NOT allowed
            attn_mask = ~mask.expand(B, n_heads, Tq, Tk).reshape(B * n_heads, Tq, Tk)
        out, _ = mha(query, key, value, attn_mask=attn_mask, need_weights=False)
    return out  # (B, Tq, D)


def mha_variant(query, key, value, params, n_heads, mask=None, *, split="heads", merge="heads", scale="head_size",
                softmax_dim=-1, mask_use="keep", added=None, out_proj=True, x_at_w=False, biases="qkvo",
                kv_from_query=False):
    """Multi-head attention with switches that reproduce the common mistakes (defaults: the right answer)."""
    p = params
    D = query.shape[-1]
    hs = D // n_heads

    def bias(name):
        return p[f"b_{name}"] if name in biases else None

    if kv_from_query:
        key = value = query
    q = _split(_linear(query, p["w_q"], bias("q"), x_at_w), n_heads, split)  # (B, nh, Tq, hs)
    k = _split(_linear(key, p["w_k"], bias("k"), x_at_w), n_heads, split)  # (B, nh, Tk, hs)
    v = _split(_linear(value, p["w_v"], bias("v"), x_at_w), n_heads, split)  # (B, nh, Tk, hs)
    factor = {"head_size": 1 / math.sqrt(hs), "none": 1.0, "d_model": 1 / math.sqrt(D), "head_size_no_sqrt": 1 / hs}
    scores = q @ k.transpose(-2, -1) * factor[scale]  # (B, nh, Tq, Tk)
    if added is not None:
        scores = scores + added
    if mask is not None and mask_use != "ignore":
        scores = scores.masked_fill(mask if mask_use.startswith("invert") else ~mask, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask_use == "invert_zero_rows":  # PyTorch's own attention gives fully masked rows zero weights, not NaN
        weights = weights.nan_to_num(0.0)
    heads = weights @ v  # (B, nh, Tq, hs)
    merged = _merge(heads, merge)  # (B, Tq, D)
    return _linear(merged, p["w_o"], bias("o"), x_at_w) if out_proj else merged


def mha_mistakes(query, key, value, params, n_heads, mask=None) -> list:
    D = query.shape[-1]
    hs = D // n_heads

    def variant(**switches):
        return lambda query, key, value, params, n_heads, mask=None: mha_variant(
            query, key, value, params, n_heads, mask, **switches)

    mistakes = [
        Mistake("heads split along the wrong axis: reshaped (B, T, D) straight to (B, n_heads, T, head_size) "
                "without a transpose, so each 'head' mixes several time steps (your split_heads does it right)",
                variant(split="no_transpose")),
        Mistake("heads split and merged with reshape only, no transpose(1, 2) either way: each 'head' then "
                "mixes several time steps", variant(split="no_transpose", merge="no_transpose")),
        Mistake("heads merged without transposing back: the time axis must be back in front of the heads "
                "before the reshape to (B, T, D) (your merge_heads does it right)", variant(merge="no_transpose")),
        Mistake("heads split along the wrong axis: D read as (head_size, n_heads), so head h got features "
                "h, h + n_heads, ...; nn.MultiheadAttention gives head h the block h * head_size ... "
                "(h + 1) * head_size - 1", variant(split="interleaved")),
        Mistake("heads split and merged as (head_size, n_heads) instead of (n_heads, head_size): head h must "
                "get the contiguous block of features h * head_size ... (h + 1) * head_size - 1",
                variant(split="interleaved", merge="interleaved")),
        Mistake("no output projection: the merged heads must go through w_o and b_o", variant(out_proj=False)),
        Mistake(f"weights used as x @ W: {LINEAR_LAYOUT_HINT}", variant(x_at_w=True)),
        Mistake("forgot the biases (b_q, b_k, b_v and b_o)", variant(biases="")),
        Mistake("forgot the output bias b_o", variant(biases="qkv")),
        Mistake("forgot the query, key and value biases (b_q, b_k, b_v)", variant(biases="o")),
        Mistake("no 1/sqrt(head_size) scaling of the scores", variant(scale="none")),
        Mistake(f"scaled by 1/sqrt(d_model) = 1/sqrt({D}) instead of 1/sqrt(head_size) = 1/sqrt({hs}): "
                "each head's dot products have head_size terms", variant(scale="d_model")),
        Mistake("scaled by 1/head_size instead of 1/sqrt(head_size)", variant(scale="head_size_no_sqrt")),
        Mistake("softmax taken over the query axis (dim=-2) instead of over the keys (dim=-1)",
                variant(softmax_dim=-2)),
        Mistake("used `query` for the keys and values too: project `key` with w_k and `value` with w_v "
                "(in cross-attention they differ)", variant(kv_from_query=True)),
    ]
    if n_heads > 1:
        mistakes.append(Mistake("n_heads ignored: one attention over the whole width D instead of n_heads heads "
                                "of size D // n_heads",
                                lambda query, key, value, params, n_heads, mask=None: mha_variant(
                                    query, key, value, params, 1, mask)))
    if mask is not None:
        inverted = ("inverted mask: here True means *may attend* (the opposite of nn.MultiheadAttention's "
                    "boolean attn_mask), so fill the scores with -inf where the mask is False")
        mistakes += [
            Mistake(inverted, variant(mask_use="invert")),
            Mistake(inverted, variant(mask_use="invert_zero_rows")),
            Mistake("mask ignored", variant(mask_use="ignore")),
        ]
    return mistakes


def multi_head_attention_cases() -> list:
    g = torch.Generator().manual_seed(32)
    x1, x2, x4, memory = _randn(g, 2, 5, 12), _randn(g, 1, 6, 16), _randn(g, 3, 1, 8), _randn(g, 2, 9, 10)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    padding = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    padding[1, ..., 4:] = False  # the second sequence's last 3 keys are padding
    per_query = torch.tensor([[[[1, 0, 1, 0, 1], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1]]],
                              [[[0, 0, 0, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 1, 1]]]], dtype=torch.bool)  # (2, 1, 3, 5)
    return [
        Case("self-attention: x (2, 5, 12), 3 heads of 4, no mask", (x1, x1, x1, mha_params(g, 12), 3)),
        Case("batch of 1: x (1, 6, 16), 2 heads of 8, causal mask (6, 6)", (x2, x2, x2, mha_params(g, 16), 2),
             {"mask": causal}),
        Case("cross-attention: query (2, 3, 12), key and value (2, 7, 12), 2 heads of 6, padding mask (2, 1, 1, 7)",
             (_randn(g, 2, 3, 12), _randn(g, 2, 7, 12), _randn(g, 2, 7, 12), mha_params(g, 12), 2),
             {"mask": padding}),
        Case("cross-attention, no mask: query (2, 4, 10), key = value (2, 9, 10), 5 heads of 2",
             (_randn(g, 2, 4, 10), memory, memory, mha_params(g, 10), 5)),
        Case("one token: x (3, 1, 8), 4 heads of 2", (x4, x4, x4, mha_params(g, 8), 4)),
        Case("cross-attention, a mask per query (2, 1, 3, 5): query (2, 3, 8), key and value (2, 5, 8), 2 heads of 4",
             (_randn(g, 2, 3, 8), _randn(g, 2, 5, 8), _randn(g, 2, 5, 8), mha_params(g, 8), 2),
             {"mask": per_query}),
    ]


def judge_multi_head_attention(case: Case, out) -> str | None:
    problem = tensor_problem(out, torch_mha(*case.args, **case.kwargs).numpy(), case)
    return None if problem is None else with_mistake(problem, out, case, mha_mistakes(*case.args, **case.kwargs))


def explain_mha_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "KeyError":
        return f"`params` has the keys {', '.join(MHA_KEYS)}"
    if "view size is not compatible" in outcome.message:
        return "after a transpose the tensor is not contiguous: use .reshape(...) (or .contiguous().view(...))"
    if "cannot be multiplied" in outcome.message:
        return LINEAR_LAYOUT_HINT
    query, key = case.args[:2]
    if "must match the size" in outcome.message and query.shape[1] != key.shape[1]:
        return ("here the queries and the keys have different lengths (cross-attention): project `key` with w_k "
                "and `value` with w_v; the scores are (B, n_heads, Tq, Tk)")
    if "must match the size" in outcome.message:
        return ("the scores are (B, n_heads, Tq, Tk), every query of a head against every key of the same head; "
                "the mask must broadcast against them")
    return None


register(Exercise(
    name="multi_head_attention", chapter="03", signature="(query, key, value, params, n_heads, mask=None)", points=3,
    make_cases=multi_head_attention_cases, judge=judge_multi_head_attention, explain_error=explain_mha_error,
    forbidden=(MULTIHEAD,),
))


# ---------------------------------------------------------------- layer_norm

def layer_norm_variant(x, weight, bias, eps=1e-5, *, dims=(-1,), unbiased=False, eps_outside=False, fixed_eps=None,
                       use_weight=True, use_bias=True, center=True, root=True, swap=False):
    """LayerNorm with switches that reproduce the common mistakes (defaults: the right answer)."""
    eps = eps if fixed_eps is None else fixed_eps
    n = math.prod(x.shape[d] for d in dims)
    if center:
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (n - 1 if unbiased else n)
    else:  # RMSNorm: the mean square, no centring
        mean, var = 0.0, (x ** 2).mean(dim=dims, keepdim=True)
    if eps_outside:
        x_hat = (x - mean) / (var.sqrt() + eps)
    else:
        x_hat = (x - mean) / ((var + eps).sqrt() if root else var + eps)
    if swap:
        weight, bias = bias, weight
    return x_hat * (weight if use_weight else 1.0) + (bias if use_bias else 0.0)


def layer_norm_mistakes(x, weight, bias, eps=1e-5) -> list:
    def variant(**switches):
        return lambda x, weight, bias, eps=1e-5: layer_norm_variant(x, weight, bias, eps, **switches)

    mistakes = [
        Mistake("unbiased variance (divides by D - 1, the default of x.var() and x.std()): LayerNorm uses the "
                "biased variance, divided by D (unbiased=False, or correction=0)", variant(unbiased=True)),
        Mistake("eps added outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps "
                "(it shows when the variance is small)", variant(eps_outside=True)),
        Mistake("unbiased standard deviation with eps added outside the square root (as in the Annotated "
                "Transformer): LayerNorm divides by sqrt(var + eps) with the biased variance",
                variant(unbiased=True, eps_outside=True)),
        Mistake("forgot the weight (gamma): multiply the normalised x by `weight`", variant(use_weight=False)),
        Mistake("forgot the bias (beta): add `bias` after scaling", variant(use_bias=False)),
        Mistake("forgot both the weight and the bias", variant(use_weight=False, use_bias=False)),
        Mistake("weight and bias swapped: x_hat * weight + bias", variant(swap=True)),
        Mistake("divided by the variance instead of the standard deviation (no square root)", variant(root=False)),
        Mistake("the mean is not subtracted (that is RMSNorm); LayerNorm centres first",
                variant(center=False)),
    ]
    if eps != 1e-5:
        mistakes.append(Mistake(f"ignored the eps argument (eps = {eps:g} was passed)", variant(fixed_eps=1e-5)))
    mistakes.append(Mistake("no eps in the denominator: divide by sqrt(var + eps)", variant(fixed_eps=0.0)))
    for d in range(x.dim() - 1):
        mistakes.append(Mistake(f"normalised over dimension {d} instead of the last one (dim=-1)",
                                variant(dims=(d,))))
    if x.dim() > 2:
        mistakes.append(Mistake("normalised over the last two dimensions (as nn.LayerNorm(x.shape[-2:]) would) "
                                "instead of the last one", variant(dims=(-2, -1))))
    if x.dim() > 1:
        mistakes.append(Mistake("normalised over the whole tensor instead of over the last dimension",
                                variant(dims=tuple(range(x.dim())))))
    return mistakes


def layer_norm_cases() -> list:
    g = torch.Generator().manual_seed(33)

    def affine(d):
        return 1 + _randn(g, d, scale=0.5), _randn(g, d, scale=0.5)

    return [
        Case("x (2, 3, 5), values around 3, default eps", (_randn(g, 2, 3, 5, scale=2) + 3, *affine(5))),
        Case("x (4, 7), eps = 0.1", (_randn(g, 4, 7), *affine(7)), {"eps": 0.1}),
        Case("one token: x (1, 1, 8)", (_randn(g, 1, 1, 8, scale=3) - 1, *affine(8))),
        Case("small values: x (3, 6) of scale 1e-3 (variance 1e-6, below eps = 1e-5)",
             (_randn(g, 3, 6, scale=1e-3), *affine(6))),
        Case("a single vector: x (6,), no leading dimension", (_randn(g, 6, scale=2) + 1, *affine(6))),
    ]


def judge_layer_norm(case: Case, out) -> str | None:
    x, weight, bias = case.args
    expected = F.layer_norm(x, (x.shape[-1],), weight, bias, case.kwargs.get("eps", 1e-5))
    problem = tensor_problem(out, expected.numpy(), case)
    if problem is None:
        return None
    return with_mistake(problem, out, case, layer_norm_mistakes(*case.args, **case.kwargs))


def explain_layer_norm_error(case: Case, outcome) -> str | None:
    if "must match the size" in outcome.message or "broadcast" in outcome.message:
        return ("keep the reduced dimension (keepdim=True): each position's statistics then have shape (..., 1) "
                "and broadcast back over its D features")
    if "tuple" in outcome.message:
        return "torch.var_mean and torch.std_mean return a pair (var, mean): unpack it"
    return None


register(Exercise(
    name="layer_norm", chapter="03", signature="(x, weight, bias, eps=1e-5)", points=2,
    make_cases=layer_norm_cases, judge=judge_layer_norm, explain_error=explain_layer_norm_error,
    forbidden=(LAYER_NORM,),
))


# ---------------------------------------------------------------- feed_forward

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "gelu_sigmoid": lambda h: h * torch.sigmoid(1.702 * h),
    "none": lambda h: h,
}


def feed_forward_variant(x, w1, b1, w2, b2, activation="gelu", *, act=None, x_at_w=False, use_b1=True, use_b2=True,
                         where="between", swap=False):
    """The position-wise FFN with switches that reproduce the common mistakes (defaults: the right answer)."""
    f = ACTIVATIONS[act or activation]
    if swap:
        w1, b1, w2, b2 = w2, b2, w1, b1
    h = _linear(x, w1, b1 if use_b1 else None, x_at_w)  # (..., d_ff)
    if where in ("between", "both"):
        h = f(h)
    out = _linear(h, w2, b2 if use_b2 else None, x_at_w)  # (..., d_model)
    return f(out) if where in ("after", "both") else out


def feed_forward_mistakes(x, w1, b1, w2, b2, activation="gelu") -> list:
    def variant(**switches):
        return lambda x, w1, b1, w2, b2, activation="gelu": feed_forward_variant(x, w1, b1, w2, b2, activation,
                                                                                 **switches)

    if activation == "gelu":
        mistakes = [
            Mistake("ReLU where GELU was asked (activation='gelu')", variant(act="relu")),
            Mistake("tanh approximation of GELU (approximate='tanh'); the exact GELU is x * Phi(x), written with "
                    "erf (F.gelu's default)", variant(act="gelu_tanh")),
            Mistake("sigmoid approximation of GELU, x * sigmoid(1.702 x); the exact GELU uses erf",
                    variant(act="gelu_sigmoid")),
        ]
    else:
        mistakes = [Mistake("GELU where ReLU was asked: the `activation` argument was ignored", variant(act="gelu"))]
    mistakes += [
        Mistake("no activation between the two linear layers", variant(act="none")),
        Mistake("activation applied after the second linear layer as well: only the hidden layer is activated",
                variant(where="both")),
        Mistake("activation applied after the second linear layer instead of between the two",
                variant(where="after")),
        Mistake(f"weights used as x @ W: {LINEAR_LAYOUT_HINT}", variant(x_at_w=True)),
        Mistake("forgot the biases b1 and b2", variant(use_b1=False, use_b2=False)),
        Mistake("forgot the first bias b1", variant(use_b1=False)),
        Mistake("forgot the second bias b2", variant(use_b2=False)),
        Mistake("the two layers swapped: (w1, b1) expand d_model -> d_ff first, then (w2, b2) project back",
                variant(swap=True)),
    ]
    return mistakes


def ffn_weights(g, d_model: int, d_ff: int, gain: float = 3.0) -> tuple:
    """(w1, b1, w2, b2) in nn.Linear layout; ``gain`` spreads the hidden pre-activations to where
    the exact and approximate GELUs differ most (|h| around 2 to 3)."""
    return (_randn(g, d_ff, d_model, scale=gain / math.sqrt(d_model)), _randn(g, d_ff, scale=0.5),
            _randn(g, d_model, d_ff, scale=1 / math.sqrt(d_ff)), _randn(g, d_model, scale=0.5))


def feed_forward_cases() -> list:
    g = torch.Generator().manual_seed(34)
    return [
        Case("x (2, 5, 6), d_ff = 10, default activation (gelu)", (_randn(g, 2, 5, 6), *ffn_weights(g, 6, 10))),
        Case("batch of 1: x (1, 4, 6), d_ff = 16, activation='relu'", (_randn(g, 1, 4, 6), *ffn_weights(g, 6, 16)),
             {"activation": "relu"}),
        Case("one token: x (3, 1, 8), d_ff = 8 (square weights), gelu", (_randn(g, 3, 1, 8), *ffn_weights(g, 8, 8))),
        Case("x (4, 6) without a batch axis, d_ff = 12, activation='gelu'", (_randn(g, 4, 6), *ffn_weights(g, 6, 12)),
             {"activation": "gelu"}),
    ]


def judge_feed_forward(case: Case, out) -> str | None:
    x, w1, b1, w2, b2 = case.args
    activation = case.kwargs.get("activation", "gelu")
    expected = F.linear(ACTIVATIONS[activation](F.linear(x, w1, b1)), w2, b2)
    problem = tensor_problem(out, expected.numpy(), case)
    return None if problem is None else with_mistake(problem, out, case,
                                                      feed_forward_mistakes(*case.args, **case.kwargs))


def explain_feed_forward_error(case: Case, outcome) -> str | None:
    if "cannot be multiplied" in outcome.message or "size mismatch" in outcome.message:
        return LINEAR_LAYOUT_HINT
    if outcome.error_type == "KeyError":
        return "`activation` is the string \"gelu\" or \"relu\""
    return None


register(Exercise(
    name="feed_forward", chapter="03", signature='(x, w1, b1, w2, b2, activation="gelu")', points=1,
    make_cases=feed_forward_cases, judge=judge_feed_forward, explain_error=explain_feed_forward_error,
))


# ---------------------------------------------------------------- bert_layer

def bert_params(g, d_model: int, d_ff: int, bias_scale: float = 0.3) -> dict:
    """Random weights keyed as a Hugging Face ``BertLayer`` state dict (non-trivial LayerNorms too)."""
    def linear(prefix, n_out, n_in, gain=1.0):
        return {f"{prefix}.weight": _randn(g, n_out, n_in, scale=gain / math.sqrt(n_in)),
                f"{prefix}.bias": _randn(g, n_out, scale=bias_scale)}

    def norm(prefix):
        return {f"{prefix}.weight": 1 + _randn(g, d_model, scale=0.3), f"{prefix}.bias": _randn(g, d_model, scale=0.3)}

    return {**linear("attention.self.query", d_model, d_model), **linear("attention.self.key", d_model, d_model),
            **linear("attention.self.value", d_model, d_model), **linear("attention.output.dense", d_model, d_model),
            **norm("attention.output.LayerNorm"), **linear("intermediate.dense", d_ff, d_model, gain=3.0),
            **linear("output.dense", d_model, d_ff), **norm("output.LayerNorm")}


def hf_bert_layer(hidden_states, attention_mask, params, n_heads, eps=BERT_EPS):
    """Hugging Face's ``BertLayer`` (eager attention, no dropout) loaded with ``params``, on these inputs."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = BertConfig(hidden_size=hidden_states.shape[-1], num_attention_heads=n_heads,
                        intermediate_size=params["intermediate.dense.weight"].shape[0], hidden_act="gelu",
                        layer_norm_eps=eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):  # its random init must not move the learner's random stream
        layer = BertLayer(config).eval()
    layer.load_state_dict(params)
    keep = attention_mask[:, None, None, :].float()  # (B, 1, 1, T): only padded keys are masked
    additive = (1.0 - keep) * torch.finfo(torch.float32).min
    with torch.no_grad():
        out = layer(hidden_states, attention_mask=additive)
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple, 5.x a tensor


def _mha_params_of(params) -> dict:
    p = params
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense"}
    return {f"{kind}_{n}": p[f"{prefix}.{'weight' if kind == 'w' else 'bias'}"]
            for n, prefix in names.items() for kind in "wb"}


def bert_layer_variant(hidden_states, attention_mask, params, n_heads, eps=BERT_EPS, *, order="post", fixed_eps=None,
                       act="gelu", mask_use="keys", attn_residual=True, ffn_residual=True, same_norm=False, **mha):
    """A post-LN BERT layer with switches that reproduce the common mistakes (defaults: the right answer)."""
    p = params
    eps = eps if fixed_eps is None else fixed_eps
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    mask, added = keep, None
    if mask_use == "ignore":
        mask = None
    elif mask_use == "invert":
        mask = ~keep
    elif mask_use == "added":  # the 0/1 mask added to the scores hides nothing
        mask, added = None, attention_mask[:, None, None, :].to(hidden_states.dtype)
    elif mask_use == "queries_too":
        mask = keep & keep.transpose(-2, -1)  # (B, 1, T, T)

    def attend(x):
        return mha_variant(x, x, x, _mha_params_of(p), n_heads, mask, added=added, **mha)

    def norm(x, name):
        name = "attention.output.LayerNorm" if same_norm else name
        return F.layer_norm(x, (x.shape[-1],), p[f"{name}.weight"], p[f"{name}.bias"], eps)

    def ffn(x):
        return feed_forward_variant(x, p["intermediate.dense.weight"], p["intermediate.dense.bias"],
                                    p["output.dense.weight"], p["output.dense.bias"], act)

    x = hidden_states
    if order == "pre":  # GPT-2 style: x + sublayer(LayerNorm(x))
        h = x + attend(norm(x, "attention.output.LayerNorm"))
        return h + ffn(norm(h, "output.LayerNorm"))
    if order == "residual_after_norm":  # LayerNorm(sublayer(x)) + x
        h = norm(attend(x), "attention.output.LayerNorm") + x
        return norm(ffn(h), "output.LayerNorm") + h
    h = norm(attend(x) + (x if attn_residual else 0), "attention.output.LayerNorm")  # (B, T, D)
    return norm(ffn(h) + (h if ffn_residual else 0), "output.LayerNorm")  # (B, T, D)


def bert_layer_mistakes(hidden_states, attention_mask, params, n_heads, eps=BERT_EPS) -> list:
    D = hidden_states.shape[-1]

    def variant(**switches):
        return lambda hidden_states, attention_mask, params, n_heads, eps=BERT_EPS: bert_layer_variant(
            hidden_states, attention_mask, params, n_heads, eps, **switches)

    mistakes = [] if eps == BERT_EPS else [
        Mistake(f"ignored the eps argument (eps = {eps:g} was passed): use it in both LayerNorms",
                variant(fixed_eps=BERT_EPS))]
    mistakes += [
        Mistake("pre-LN (LayerNorm before each sub-layer, GPT-2 style): BERT is post-LN, "
                "LayerNorm(x + sublayer(x))", variant(order="pre")),
        Mistake("residual added after the LayerNorm, LayerNorm(sublayer(x)) + x: BERT adds first, "
                "LayerNorm(x + sublayer(x))", variant(order="residual_after_norm")),
        Mistake("missing residual connection around the attention: LayerNorm(x + attention(x))",
                variant(attn_residual=False)),
        Mistake("missing residual connection around the feed-forward: LayerNorm(h + feed_forward(h))",
                variant(ffn_residual=False)),
        Mistake("missing both residual connections", variant(attn_residual=False, ffn_residual=False)),
        Mistake("used the attention's LayerNorm (attention.output.LayerNorm) after the feed-forward too: "
                "the second one is output.LayerNorm", variant(same_norm=True)),
        Mistake("ReLU where BERT uses GELU", variant(act="relu")),
        Mistake("tanh approximation of GELU; BERT's hidden_act 'gelu' is the exact erf form", variant(act="gelu_tanh")),
        Mistake("padding mask ignored: padded tokens must not be attended to", variant(mask_use="ignore")),
        Mistake("mask inverted: attention_mask is 1 for real tokens, which may be attended to",
                variant(mask_use="invert")),
        Mistake("added the 0/1 attention_mask to the scores, which hides nothing: a padded key must get a score "
                "of -inf (a boolean (B, 1, 1, T) mask, True = may attend)", variant(mask_use="added")),
        Mistake("masked the padded queries as well as the padded keys: mask only the keys, with a (B, 1, 1, T) "
                "mask; a padded position still attends to the real tokens",
                variant(mask_use="queries_too")),
        Mistake("no attention output projection (attention.output.dense)", variant(out_proj=False)),
        Mistake("no 1/sqrt(head_size) scaling of the scores", variant(scale="none")),
        Mistake(f"scaled by 1/sqrt(d_model) = 1/sqrt({D}) instead of 1/sqrt(head_size)", variant(scale="d_model")),
        Mistake(f"weights used as x @ W in the attention: {LINEAR_LAYOUT_HINT}", variant(x_at_w=True)),
        Mistake("heads merged without transposing back", variant(merge="no_transpose")),
        Mistake("heads split without a transpose (reshaped straight to (B, n_heads, T, head_size))",
                variant(split="no_transpose")),
        Mistake("used eps = 1e-5 (torch's LayerNorm default) in the LayerNorms: BERT's is 1e-12, and an eps "
                "passed to bert_layer must be used", variant(fixed_eps=1e-5)),
    ]
    return mistakes


def bert_layer_cases() -> list:
    g = torch.Generator().manual_seed(35)
    ragged = torch.ones(3, 7, dtype=torch.long)
    ragged[1, 4:] = 0
    ragged[2, 2:] = 0
    return [
        Case("2 sequences of 5 tokens, D = 12, 3 heads, d_ff = 20, no padding",
             (_randn(g, 2, 5, 12), torch.ones(2, 5, dtype=torch.long), bert_params(g, 12, 20), 3), atol=2e-5),
        Case("padding: 3 sequences of 7, 4 and 2 real tokens (attention_mask (3, 7)), D = 16, 2 heads, d_ff = 24",
             (_randn(g, 3, 7, 16), ragged, bert_params(g, 16, 24), 2), atol=2e-5),
        Case("one token: (1, 1, 12), 4 heads, d_ff = 16",
             (_randn(g, 1, 1, 12), torch.ones(1, 1, dtype=torch.long), bert_params(g, 12, 16), 4), atol=2e-5),
        Case("eps = 0.1 passed in: (2, 4, 8), 2 heads, d_ff = 12",
             (_randn(g, 2, 4, 8), torch.ones(2, 4, dtype=torch.long), bert_params(g, 8, 12), 2), {"eps": 0.1},
             atol=2e-5),
        Case("small hidden states (scale 1e-3, where eps matters), default eps: (2, 3, 8), 2 heads, d_ff = 12",
             (_randn(g, 2, 3, 8, scale=1e-3), torch.ones(2, 3, dtype=torch.long),
              bert_params(g, 8, 12, bias_scale=1e-3), 2), atol=2e-5),
        Case("n_heads = 1: (2, 3, 6), one head as wide as the model, d_ff = 10",
             (_randn(g, 2, 3, 6), torch.ones(2, 3, dtype=torch.long), bert_params(g, 6, 10), 1), atol=2e-5),
    ]


def judge_bert_layer(case: Case, out) -> str | None:
    expected = hf_bert_layer(*case.args, **case.kwargs).numpy()
    problem = tensor_problem(out, expected, case)
    if problem is None:
        return None
    mistake = name_mistake(out, case, bert_layer_mistakes(*case.args, **case.kwargs))
    if mistake:
        return Problem(problem, mistake)
    real = case.args[1].bool().numpy()  # (B, T)
    if (isinstance(out, TensorData) and out.shape == expected.shape and not real.all()
            and close(TensorData(out.array[real], out.dtype), TensorData(expected[real], ""), case.atol, case.rtol)):
        return (f"{problem}\nThe real tokens are right; only the padded positions differ. Hugging Face masks only "
                f"the padded keys (a mask of shape (B, 1, 1, T)), so a padded position "
                f"still attends to the real tokens and has a defined output: compute it the same way.")
    return problem


def explain_bert_layer_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "KeyError":
        return ("`params` uses the key names of a Hugging Face BertLayer state dict: "
                + ", ".join(sorted(case.args[2])))
    if "cannot be multiplied" in outcome.message:
        return LINEAR_LAYOUT_HINT
    if "must match the size" in outcome.message or "broadcast" in outcome.message:
        return ("attention_mask is (B, T): give it singleton axes for the heads and the queries, (B, 1, 1, T), "
                "so that it broadcasts over the (B, n_heads, T, T) scores")
    if "boolean" in outcome.message.lower() or "expected a bool" in outcome.message.lower():
        return "attention_mask holds integers 1/0: a boolean mask needs booleans (`.bool()`)"
    return None


register(Exercise(
    name="bert_layer", chapter="03", signature="(hidden_states, attention_mask, params, n_heads, eps=1e-12)",
    points=3, make_cases=bert_layer_cases, judge=judge_bert_layer, explain_error=explain_bert_layer_error,
    forbidden=(MULTIHEAD, LAYER_NORM, HF_BERT_LAYER, HF_LAYER_OUTPUT),
))
