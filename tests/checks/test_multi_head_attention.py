"""Tests for the chapter-03 checks (grader/checks/multi_head_attention.py): split_heads, merge_heads,
multi_head_attention, layer_norm, feed_forward, bert_layer.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer (einsum, a loop over heads, F.scaled_dot_product_attention, torch.var, ...);
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the reference bert_layer reproduces the real MiniLM's layer 0, and the checks are fast and leave
  the learner's random stream alone;
- the hidden checks pass the reference and fail a wrong answer and an answer fitted to the visible cases.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from chapter_contract import A_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, own_layer_norm, reference_fn

import grader
import grader.hidden
from grader import check
from grader.checks import multi_head_attention as blocks

ASSIGNMENT = "03-multi-head-attention"

EXERCISES = ["split_heads", "merge_heads", "multi_head_attention", "layer_norm", "feed_forward", "bert_layer"]
NEG_INF = float("-inf")


# =============================================================== split_heads

# ---- correct, written in other ways

def split_heads_permute(x, n_heads):
    B, T, D = x.shape
    if D % n_heads != 0:
        raise ValueError("D must be divisible by n_heads")
    return x.reshape(B, T, n_heads, -1).permute(0, 2, 1, 3)


def split_heads_stack(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError(f"cannot split {x.shape[-1]} features into {n_heads} heads")
    return torch.stack(x.split(x.shape[-1] // n_heads, dim=-1), dim=1)


def split_heads_unflatten(x, n_heads):
    head_size, rest = divmod(x.size(-1), n_heads)
    if rest:
        raise ValueError("not divisible")
    return x.unflatten(-1, (n_heads, head_size)).movedim(2, 1)


# ---- wrong, as learners write them

def split_heads_reshape_only(x, n_heads):
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError("not divisible")
    return x.reshape(B, n_heads, T, D // n_heads)


def split_heads_interleaved(x, n_heads):
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError("not divisible")
    return x.view(B, T, D // n_heads, n_heads).permute(0, 3, 1, 2)


def split_heads_forgot_transpose(x, n_heads):
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError("not divisible")
    return x.view(B, T, n_heads, D // n_heads)


def split_heads_view_hs_nh(x, n_heads):
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError("not divisible")
    return x.view(B, T, D // n_heads, n_heads).transpose(1, 2)


def split_heads_transpose_2_3(x, n_heads):
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError("not divisible")
    return x.view(B, T, n_heads, D // n_heads).transpose(2, 3)


def split_heads_no_check(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


def split_heads_chunk_no_check(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)  # 12 features in 5 chunks: 4 chunks of 3


def split_heads_assert(x, n_heads):
    B, T, D = x.shape
    assert D % n_heads == 0, "D must be divisible by n_heads"
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


SPLIT_CORRECT = [split_heads_permute, split_heads_stack, split_heads_unflatten]

SPLIT_MISTAKES = [
    pytest.param(split_heads_reshape_only, "without a transpose", id="reshape-straight-to-heads"),
    pytest.param(split_heads_interleaved, "heads split along the wrong axis", id="view-B-T-hs-nh-permute"),
    pytest.param(split_heads_forgot_transpose, "no transpose", id="forgot-transpose"),
    pytest.param(split_heads_view_hs_nh, "n_heads and head_size swapped", id="view-B-T-hs-nh-transpose"),
    pytest.param(split_heads_transpose_2_3, "transposed the last two axes", id="transpose-2-3"),
    pytest.param(split_heads_no_check, "raise ValueError yourself", id="no-ValueError-reshape-fails"),
    pytest.param(split_heads_chunk_no_check, "no check that D % n_heads == 0", id="no-ValueError-chunk"),
    pytest.param(split_heads_assert, "not assert", id="assert-instead-of-ValueError"),
]


@pytest.mark.parametrize("fn", SPLIT_CORRECT, ids=lambda f: f.__name__)
def test_split_heads_accepts_other_correct_answers(fn):
    result = check("split_heads", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SPLIT_MISTAKES)
def test_split_heads_names_the_mistake(fn, phrase):
    assert_fails_naming(check("split_heads", fn), phrase)


def test_split_heads_wrong_shape_says_which_shape_was_expected():
    feedback = check("split_heads", split_heads_forgot_transpose).feedback
    assert "has shape (2, 5, 3, 4); expected (2, 3, 5, 4)" in feedback


# =============================================================== merge_heads

# ---- correct

def merge_heads_contiguous_view(x):
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)


def merge_heads_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_heads_flatten(x):
    return x.permute(0, 2, 1, 3).flatten(start_dim=2)


# ---- wrong

def merge_heads_reshape_only(x):
    B, nh, T, hs = x.shape
    return x.reshape(B, T, nh * hs)


def merge_heads_view_after_transpose(x):
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).view(B, T, nh * hs)


def merge_heads_wrong_order(x):
    B, nh, T, hs = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, nh * hs)


def merge_heads_only_transpose(x):
    return x.transpose(1, 2)


def merge_heads_sum(x):
    return x.sum(dim=1)


def merge_heads_cat_time_axis(x):
    return torch.cat(x.unbind(dim=1), dim=1)


MERGE_CORRECT = [merge_heads_contiguous_view, merge_heads_cat, merge_heads_flatten]

MERGE_MISTAKES = [
    pytest.param(merge_heads_reshape_only, "merged without transposing back", id="reshape-without-transpose"),
    pytest.param(merge_heads_view_after_transpose, ".contiguous().view", id="view-after-transpose"),
    pytest.param(merge_heads_wrong_order, "concatenated in the wrong order", id="head-size-first"),
    pytest.param(merge_heads_only_transpose, "did not merge the last two axes", id="only-transpose"),
    pytest.param(merge_heads_sum, "summed the heads", id="sum-over-heads"),
    pytest.param(merge_heads_cat_time_axis, "merged the heads into the time axis", id="cat-on-time-axis"),
]


@pytest.mark.parametrize("fn", MERGE_CORRECT, ids=lambda f: f.__name__)
def test_merge_heads_accepts_other_correct_answers(fn):
    result = check("merge_heads", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MERGE_MISTAKES)
def test_merge_heads_names_the_mistake(fn, phrase):
    assert_fails_naming(check("merge_heads", fn), phrase)


def test_merge_heads_wrong_shape_says_which_shape_was_expected():
    feedback = check("merge_heads", merge_heads_only_transpose).feedback
    assert "has shape (2, 5, 3, 4); expected (2, 5, 12)" in feedback


# =============================================================== multi_head_attention

# ---- correct

def mha_einsum(query, key, value, params, n_heads, mask=None):
    p = params
    B, Tq, D = query.shape
    hs = D // n_heads
    q = torch.einsum("btd,ed->bte", query, p["w_q"]) + p["b_q"]
    k = torch.einsum("btd,ed->bte", key, p["w_k"]) + p["b_k"]
    v = torch.einsum("btd,ed->bte", value, p["w_v"]) + p["b_v"]
    q, k, v = (t.reshape(B, t.shape[1], n_heads, hs) for t in (q, k, v))
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hs)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, NEG_INF)
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, Tq, D)
    return torch.einsum("btd,ed->bte", out, p["w_o"]) + p["b_o"]


def mha_linear_sdpa(query, key, value, params, n_heads, mask=None):
    p = params
    B, Tq, D = query.shape

    def heads(t):
        return t.view(B, -1, n_heads, D // n_heads).transpose(1, 2)

    q, k, v = (heads(F.linear(t, p[f"w_{n}"], p[f"b_{n}"])) for t, n in ((query, "q"), (key, "k"), (value, "v")))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # the same mask convention: True = attend
    return F.linear(out.transpose(1, 2).reshape(B, Tq, D), p["w_o"], p["b_o"])


def mha_loop_over_heads(query, key, value, params, n_heads, mask=None):
    p = params
    D = query.shape[-1]
    hs = D // n_heads
    outputs = []
    for h in range(n_heads):
        rows = slice(h * hs, (h + 1) * hs)
        q = query @ p["w_q"][rows].T + p["b_q"][rows]
        k = key @ p["w_k"][rows].T + p["b_k"][rows]
        v = value @ p["w_v"][rows].T + p["b_v"][rows]
        scores = q @ k.transpose(-2, -1) / hs ** 0.5
        if mask is not None:
            head_mask = mask if mask.dim() < 4 else mask[:, min(h, mask.shape[1] - 1)]
            scores = torch.where(head_mask, scores, torch.tensor(NEG_INF))
        outputs.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(outputs, dim=-1) @ p["w_o"].T + p["b_o"]


# ---- wrong

def _learner_mha(query, key, value, params, n_heads, mask=None, *, scale_by=None, project_out=True, use_bias=True,
                 x_at_w=False, invert=False, use_mask=True, softmax_dim=-1, split_reshape=False,
                 merge_reshape=False, interleaved=False, kv=None):
    """A learner's multi-head attention, with the knobs that the wrong answers below turn."""
    p = params
    B, Tq, D = query.shape
    hs = D // n_heads

    def proj(x, n):
        w = p[f"w_{n}"] if x_at_w else p[f"w_{n}"].T
        return x @ w + (p[f"b_{n}"] if use_bias else 0)

    def split(x):
        T = x.shape[1]
        if split_reshape:
            return x.reshape(B, n_heads, T, hs)
        if interleaved:
            return x.view(B, T, hs, n_heads).permute(0, 3, 1, 2)
        return x.view(B, T, n_heads, hs).transpose(1, 2)

    key, value = (query, query) if kv == "query" else (key, value)
    q, k, v = split(proj(query, "q")), split(proj(key, "k")), split(proj(value, "v"))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs if scale_by is None else scale_by)
    if mask is not None and use_mask:
        scores = scores.masked_fill(mask if invert else ~mask, NEG_INF)
    out = torch.softmax(scores, dim=softmax_dim) @ v
    out = out.reshape(B, Tq, D) if merge_reshape else out.transpose(1, 2).reshape(B, Tq, D)
    return proj(out, "o") if project_out else out


def mha_no_output_projection(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, project_out=False)


def mha_x_at_w(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, x_at_w=True)


def mha_no_biases(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, use_bias=False)


def mha_no_scaling(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, scale_by=1)


def mha_scaled_by_d_model(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, scale_by=query.shape[-1])


def mha_split_reshape_only(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, split_reshape=True)


def mha_split_and_merge_reshape_only(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, split_reshape=True, merge_reshape=True)


def mha_merge_without_transpose(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, merge_reshape=True)


def mha_interleaved_heads(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, interleaved=True)


def mha_inverted_mask(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, invert=True)


def mha_mask_ignored(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, use_mask=False)


def mha_softmax_over_queries(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, mask, softmax_dim=-2)


def mha_self_attention_only(query, key, value, params, n_heads, mask=None):
    return _learner_mha(query, key, value, params, n_heads, None, kv="query")


MHA_CORRECT = [mha_einsum, mha_linear_sdpa, mha_loop_over_heads]

MHA_MISTAKES = [
    pytest.param(mha_no_output_projection, "no output projection", id="no-output-projection"),
    pytest.param(mha_x_at_w, "weights used as x @ W", id="x-at-W"),
    pytest.param(mha_no_biases, "forgot the biases", id="no-biases"),
    pytest.param(mha_no_scaling, "no 1/sqrt(head_size) scaling", id="no-scaling"),
    pytest.param(mha_scaled_by_d_model, "scaled by 1/sqrt(d_model)", id="scaled-by-d_model"),
    pytest.param(mha_split_reshape_only, "heads split along the wrong axis", id="split-without-transpose"),
    pytest.param(mha_split_and_merge_reshape_only, "no transpose(1, 2) either way", id="reshape-both-ways"),
    pytest.param(mha_merge_without_transpose, "merged without transposing back", id="merge-without-transpose"),
    pytest.param(mha_interleaved_heads, "D read as (head_size, n_heads)", id="interleaved-heads"),
    pytest.param(mha_inverted_mask, "inverted mask", id="inverted-mask"),
    pytest.param(mha_mask_ignored, "mask ignored", id="mask-ignored"),
    pytest.param(mha_softmax_over_queries, "softmax taken over the query axis", id="softmax-dim-minus-2"),
    pytest.param(mha_self_attention_only, "used `query` for the keys and values", id="query-as-keys-and-values"),
]


@pytest.mark.parametrize("fn", MHA_CORRECT, ids=lambda f: f.__name__)
def test_multi_head_attention_accepts_other_correct_answers(fn):
    result = check("multi_head_attention", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MHA_MISTAKES)
def test_multi_head_attention_names_the_mistake(fn, phrase):
    assert_fails_naming(check("multi_head_attention", fn), phrase)


def test_multi_head_attention_reference_is_torchs_module():
    """The judge's reference is nn.MultiheadAttention itself; our mask is inverted only for it."""
    for case in blocks.multi_head_attention_cases():
        expected = blocks.torch_mha(*case.args, **case.kwargs)
        ours = mha_linear_sdpa(*case.args, **case.kwargs)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


# =============================================================== layer_norm

# ---- correct

def layer_norm_var_biased(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


def layer_norm_var_mean_rsqrt(x, weight, bias, eps=1e-5):
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


def layer_norm_float64(x, weight, bias, eps=1e-5):
    x64 = x.double()
    centred = x64 - x64.mean(dim=-1, keepdim=True)
    out = centred / (centred.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()
    return (out * weight.double() + bias.double()).float()


# ---- wrong

def layer_norm_unbiased(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) + bias


def layer_norm_annotated_transformer(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return weight * (x - mean) / (std + eps) + bias


def layer_norm_eps_outside(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True, unbiased=False)
    return weight * (x - mean) / (std + eps) + bias


def layer_norm_no_weight(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) + bias


def layer_norm_no_bias(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight


def layer_norm_dim_0(x, weight, bias, eps=1e-5):
    mean = x.mean(0, keepdim=True)
    var = x.var(0, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_last_two_dims(x, weight, bias, eps=1e-5):
    dims = tuple(range(max(x.dim() - 2, 0), x.dim()))  # like nn.LayerNorm(x.shape[-2:])
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_eps_hard_coded(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def layer_norm_rms(x, weight, bias, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def layer_norm_no_sqrt(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + eps) * weight + bias


def layer_norm_no_keepdim(x, weight, bias, eps=1e-5):
    mean = x.mean(-1)
    var = x.var(-1, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


LAYER_NORM_CORRECT = [layer_norm_var_biased, layer_norm_var_mean_rsqrt, layer_norm_float64]

LAYER_NORM_MISTAKES = [
    pytest.param(layer_norm_unbiased, "unbiased variance", id="unbiased-variance"),
    pytest.param(layer_norm_annotated_transformer, "unbiased standard deviation with eps added outside",
                 id="annotated-transformer-std-plus-eps"),
    pytest.param(layer_norm_eps_outside, "eps added outside the square root", id="eps-outside-sqrt"),
    pytest.param(layer_norm_no_weight, "forgot the weight", id="no-weight"),
    pytest.param(layer_norm_no_bias, "forgot the bias", id="no-bias"),
    pytest.param(layer_norm_dim_0, "normalised over dimension 0", id="over-dim-0"),
    pytest.param(layer_norm_last_two_dims, "normalised over the last two dimensions", id="over-last-two-dims"),
    pytest.param(layer_norm_eps_hard_coded, "ignored the eps argument", id="eps-hard-coded"),
    pytest.param(layer_norm_rms, "RMSNorm", id="rmsnorm"),
    pytest.param(layer_norm_no_sqrt, "divided by the variance", id="no-sqrt"),
    pytest.param(layer_norm_no_keepdim, "keepdim=True", id="no-keepdim"),
]


@pytest.mark.parametrize("fn", LAYER_NORM_CORRECT, ids=lambda f: f.__name__)
def test_layer_norm_accepts_other_correct_answers(fn):
    result = check("layer_norm", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", LAYER_NORM_MISTAKES)
def test_layer_norm_names_the_mistake(fn, phrase):
    assert_fails_naming(check("layer_norm", fn), phrase)


def test_eps_outside_the_sqrt_shows_only_where_the_variance_is_small():
    """The difference is eps / 2 relative when the variance is about 1: the small-values case catches it."""
    result = check("layer_norm", layer_norm_eps_outside)
    failed = [c.label for c in result.cases if not c.passed]
    assert any("small values" in label for label in failed), result.feedback
    assert not any("values around 3" in label for label in failed), result.feedback


# =============================================================== feed_forward

# ---- correct

def feed_forward_linear(x, w1, b1, w2, b2, activation="gelu"):
    act = {"gelu": F.gelu, "relu": F.relu}[activation]
    return F.linear(act(F.linear(x, w1, b1)), w2, b2)


def feed_forward_erf(x, w1, b1, w2, b2, activation="gelu"):
    h = torch.matmul(x, w1.t()) + b1
    if activation == "relu":
        h = torch.clamp(h, min=0)
    else:
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return torch.matmul(h, w2.t()) + b2


def feed_forward_addmm(x, w1, b1, w2, b2, activation="gelu"):
    flat = x.reshape(-1, x.shape[-1])
    h = torch.addmm(b1, flat, w1.T)
    h = F.gelu(h, approximate="none") if activation == "gelu" else h.relu()
    return torch.addmm(b2, h, w2.T).reshape(*x.shape[:-1], -1)


# ---- wrong

def feed_forward_always_relu(x, w1, b1, w2, b2, activation="gelu"):
    return F.relu(x @ w1.T + b1) @ w2.T + b2


def feed_forward_always_gelu(x, w1, b1, w2, b2, activation="gelu"):
    return F.gelu(x @ w1.T + b1) @ w2.T + b2


def feed_forward_tanh_gelu(x, w1, b1, w2, b2, activation="gelu"):
    h = x @ w1.T + b1
    if activation == "gelu":
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    else:
        h = F.relu(h)
    return h @ w2.T + b2


def feed_forward_x_at_w(x, w1, b1, w2, b2, activation="gelu"):
    h = x @ w1 + b1
    h = F.gelu(h) if activation == "gelu" else F.relu(h)
    return h @ w2 + b2


def feed_forward_no_biases(x, w1, b1, w2, b2, activation="gelu"):
    h = x @ w1.T
    h = F.gelu(h) if activation == "gelu" else F.relu(h)
    return h @ w2.T


def feed_forward_activation_twice(x, w1, b1, w2, b2, activation="gelu"):
    act = F.gelu if activation == "gelu" else F.relu
    return act(act(x @ w1.T + b1) @ w2.T + b2)


def feed_forward_no_activation(x, w1, b1, w2, b2, activation="gelu"):
    return (x @ w1.T + b1) @ w2.T + b2


FEED_FORWARD_CORRECT = [feed_forward_linear, feed_forward_erf, feed_forward_addmm]

FEED_FORWARD_MISTAKES = [
    pytest.param(feed_forward_always_relu, "ReLU where GELU was asked", id="always-relu"),
    pytest.param(feed_forward_always_gelu, "GELU where ReLU was asked", id="ignores-activation"),
    pytest.param(feed_forward_tanh_gelu, "tanh approximation of GELU", id="tanh-gelu"),
    pytest.param(feed_forward_x_at_w, "nn.Linear layout", id="x-at-W"),
    pytest.param(feed_forward_no_biases, "forgot the biases", id="no-biases"),
    pytest.param(feed_forward_activation_twice, "after the second linear layer as well", id="activation-twice"),
    pytest.param(feed_forward_no_activation, "no activation", id="no-activation"),
]


@pytest.mark.parametrize("fn", FEED_FORWARD_CORRECT, ids=lambda f: f.__name__)
def test_feed_forward_accepts_other_correct_answers(fn):
    result = check("feed_forward", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", FEED_FORWARD_MISTAKES)
def test_feed_forward_names_the_mistake(fn, phrase):
    assert_fails_naming(check("feed_forward", fn), phrase)


def test_tanh_gelu_fails_every_gelu_case():
    """The exact and tanh GELUs differ by at most 5e-4: the cases put the inputs where they do."""
    result = check("feed_forward", feed_forward_tanh_gelu)
    gelu_cases = [c for c in result.cases if "relu" not in c.label]
    assert gelu_cases and not any(c.passed for c in gelu_cases), result.feedback


# =============================================================== bert_layer

def _heads_attention(x, p, n_heads, keep=None, *, additive=None, scale_by=None, project_out=True, merge_reshape=False):
    """A learner's self-attention sub-layer of a BERT layer (no residual, no LayerNorm)."""
    B, T, D = x.shape
    hs = D // n_heads

    def proj(name):
        return x @ p[f"attention.self.{name}.weight"].T + p[f"attention.self.{name}.bias"]

    q, k, v = (proj(n).view(B, T, n_heads, hs).transpose(1, 2) for n in ("query", "key", "value"))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs if scale_by is None else scale_by)
    if keep is not None:
        scores = scores.masked_fill(~keep, NEG_INF)
    if additive is not None:
        scores = scores + additive
    out = torch.softmax(scores, -1) @ v
    out = out.reshape(B, T, D) if merge_reshape else out.transpose(1, 2).reshape(B, T, D)
    return out @ p["attention.output.dense.weight"].T + p["attention.output.dense.bias"] if project_out else out


def _ffn(h, p, act=F.gelu):
    return act(h @ p["intermediate.dense.weight"].T + p["intermediate.dense.bias"]) @ p["output.dense.weight"].T \
        + p["output.dense.bias"]


def _ln(x, p, name, eps):
    return own_layer_norm(x, p[f"{name}.weight"], p[f"{name}.bias"], eps)


def _keys(attention_mask):
    return attention_mask.bool()[:, None, None, :]


# ---- correct

def bert_layer_own_helpers(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_additive_mask_sdpa(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    """Hugging Face's way: a float mask of 0 and the most negative float added to the scores."""
    p, x = params, hidden_states
    B, T, D = x.shape
    additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min

    def heads(name):
        return F.linear(x, p[f"attention.self.{name}.weight"], p[f"attention.self.{name}.bias"]) \
            .view(B, T, n_heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads("query"), heads("key"), heads("value"), attn_mask=additive)
    attn = F.linear(out.transpose(1, 2).reshape(B, T, D), p["attention.output.dense.weight"],
                    p["attention.output.dense.bias"])
    h = _ln(x + attn, p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


# ---- wrong

def bert_layer_pre_ln(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = x + _heads_attention(_ln(x, p, "attention.output.LayerNorm", eps), p, n_heads, _keys(attention_mask))
    return h + _ffn(_ln(h, p, "output.LayerNorm", eps), p)


def bert_layer_no_attention_residual(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(_heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_no_ffn_residual(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(_ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_residual_after_ln(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = x + _ln(_heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return h + _ln(_ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_torch_default_eps(hidden_states, attention_mask, params, n_heads, eps=1e-5):
    return bert_layer_own_helpers(hidden_states, attention_mask, params, n_heads, eps)


def bert_layer_ignores_eps(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    return bert_layer_own_helpers(hidden_states, attention_mask, params, n_heads)


def bert_layer_relu(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p, F.relu), p, "output.LayerNorm", eps)


def bert_layer_tanh_gelu(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p, lambda t: F.gelu(t, approximate="tanh")), p, "output.LayerNorm", eps)


def bert_layer_padding_ignored(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_mask_added_as_is(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    additive = attention_mask[:, None, None, :].float()
    h = _ln(x + _heads_attention(x, p, n_heads, additive=additive), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_masks_queries_too(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    m = attention_mask.bool()
    keep = (m[:, :, None] & m[:, None, :])[:, None]  # (B, 1, T, T): padded rows hide every key
    h = _ln(x + _heads_attention(x, p, n_heads, keep), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_inverted_mask(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, attention_mask[:, None, None, :] == 0),
            p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_no_output_projection(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    attn = _heads_attention(x, p, n_heads, _keys(attention_mask), project_out=False)
    h = _ln(x + attn, p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_scaled_by_d_model(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    attn = _heads_attention(x, p, n_heads, _keys(attention_mask), scale_by=x.shape[-1])
    h = _ln(x + attn, p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_merge_without_transpose(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    attn = _heads_attention(x, p, n_heads, _keys(attention_mask), merge_reshape=True)
    h = _ln(x + attn, p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_one_layer_norm(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    h = _ln(x + _heads_attention(x, p, n_heads, _keys(attention_mask)), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "attention.output.LayerNorm", eps)


def bert_layer_zeroes_padding(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    out = bert_layer_own_helpers(hidden_states, attention_mask, params, n_heads, eps)
    return out * attention_mask[..., None]


def bert_layer_wrong_mask_shape(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    p, x = params, hidden_states
    keep = attention_mask.bool()[:, None, :]  # (B, 1, T) lines up B with the heads axis
    h = _ln(x + _heads_attention(x, p, n_heads, keep), p, "attention.output.LayerNorm", eps)
    return _ln(h + _ffn(h, p), p, "output.LayerNorm", eps)


def bert_layer_wrong_key_names(hidden_states, attention_mask, params, n_heads, eps=1e-12):
    return hidden_states @ params["attention.query.weight"].T


BERT_CORRECT = [bert_layer_own_helpers, bert_layer_additive_mask_sdpa]

BERT_MISTAKES = [
    pytest.param(bert_layer_pre_ln, "pre-LN", id="pre-LN"),
    pytest.param(bert_layer_no_attention_residual, "missing residual connection around the attention",
                 id="no-attention-residual"),
    pytest.param(bert_layer_no_ffn_residual, "missing residual connection around the feed-forward",
                 id="no-ffn-residual"),
    pytest.param(bert_layer_residual_after_ln, "residual added after the LayerNorm", id="residual-after-LN"),
    pytest.param(bert_layer_torch_default_eps, "BERT's is 1e-12", id="eps-1e-5-default"),
    pytest.param(bert_layer_ignores_eps, "ignored the eps argument", id="eps-argument-ignored"),
    pytest.param(bert_layer_relu, "ReLU where BERT uses GELU", id="relu"),
    pytest.param(bert_layer_tanh_gelu, "tanh approximation of GELU", id="tanh-gelu"),
    pytest.param(bert_layer_padding_ignored, "padding mask ignored", id="padding-ignored"),
    pytest.param(bert_layer_mask_added_as_is, "added the 0/1 attention_mask", id="0-1-mask-added"),
    pytest.param(bert_layer_masks_queries_too, "masked the padded queries", id="queries-masked-too"),
    pytest.param(bert_layer_inverted_mask, "mask inverted", id="inverted-mask"),
    pytest.param(bert_layer_no_output_projection, "no attention output projection", id="no-output-projection"),
    pytest.param(bert_layer_scaled_by_d_model, "scaled by 1/sqrt(d_model)", id="scaled-by-d_model"),
    pytest.param(bert_layer_merge_without_transpose, "merged without transposing back", id="merge-no-transpose"),
    pytest.param(bert_layer_one_layer_norm, "used the attention's LayerNorm", id="same-LayerNorm-twice"),
    pytest.param(bert_layer_zeroes_padding, "only the padded positions differ", id="padded-outputs-zeroed"),
    pytest.param(bert_layer_wrong_mask_shape, "(B, 1, 1, T)", id="mask-B-1-T"),
    pytest.param(bert_layer_wrong_key_names, "key names of a Hugging Face BertLayer state dict", id="key-names"),
]


@pytest.mark.parametrize("fn", BERT_CORRECT, ids=lambda f: f.__name__)
def test_bert_layer_accepts_other_correct_answers(fn):
    result = check("bert_layer", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", BERT_MISTAKES)
def test_bert_layer_names_the_mistake(fn, phrase):
    assert_fails_naming(check("bert_layer", fn), phrase)


def test_bert_layer_built_from_the_learners_own_helpers_passes(reference):
    """The reference bert_layer calls the notebook's multi_head_attention, layer_norm and feed_forward."""
    mha, ln, ffn = (reference_fn(reference, n) for n in ("multi_head_attention", "layer_norm", "feed_forward"))

    def bert_layer(hidden_states, attention_mask, params, n_heads, eps=1e-12):
        p = params
        attention = {f"{k}_{n}": p[f"{prefix}.{'weight' if k == 'w' else 'bias'}"]
                     for n, prefix in (("q", "attention.self.query"), ("k", "attention.self.key"),
                                       ("v", "attention.self.value"), ("o", "attention.output.dense"))
                     for k in "wb"}
        x = hidden_states
        h = ln(x + mha(x, x, x, attention, n_heads, _keys(attention_mask)),
               p["attention.output.LayerNorm.weight"], p["attention.output.LayerNorm.bias"], eps)
        ff = ffn(h, p["intermediate.dense.weight"], p["intermediate.dense.bias"], p["output.dense.weight"],
                 p["output.dense.bias"])
        return ln(h + ff, p["output.LayerNorm.weight"], p["output.LayerNorm.bias"], eps)

    assert check("bert_layer", bert_layer).passed


def test_bert_cases_use_a_real_hugging_face_layer():
    """The reference is transformers' BertLayer, and it agrees with a plain PyTorch layer on padding too."""
    from transformers.models.bert.modeling_bert import BertLayer  # noqa: F401  (the judge imports it)

    for case in blocks.bert_layer_cases():
        expected = blocks.hf_bert_layer(*case.args, **case.kwargs)
        torch.testing.assert_close(bert_layer_own_helpers(*case.args, **case.kwargs), expected,
                                   atol=2e-5, rtol=1e-4)


def test_reference_bert_layer_reproduces_minilm_layer_0(reference):
    """COURSE.md: the learner's bert_layer reproduces layer 0 of the shipped MiniLM to 1e-4 (padding included)."""
    from llmcourse.models import load_encoder

    tokenizer, model = load_encoder(device="cpu")
    batch = tokenizer(["The monkey ate that banana because it was too hungry.", "Attention!"], padding=True,
                      return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    layer = model.encoder.layer[0]
    with torch.no_grad():
        hidden = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
        expected = blocks.hf_bert_layer(hidden, batch["attention_mask"], layer.state_dict(),
                                        model.config.num_attention_heads, model.config.layer_norm_eps)
        hf = layer(hidden, attention_mask=(1.0 - batch["attention_mask"][:, None, None, :].float())
                   * torch.finfo(torch.float32).min)
        hf = hf[0] if isinstance(hf, tuple) else hf
        mine = reference_fn(reference, "bert_layer")(hidden, batch["attention_mask"], layer.state_dict(),
                                                     model.config.num_attention_heads, model.config.layer_norm_eps)
    torch.testing.assert_close(expected, hf, atol=1e-6, rtol=0)  # the judge's layer is the model's own
    assert (mine - hf).abs().max().item() < 1e-4


# =============================================================== the API around a check

@pytest.mark.parametrize("name, fn", [
    ("split_heads", split_heads_permute), ("merge_heads", merge_heads_cat), ("multi_head_attention", mha_einsum),
    ("layer_norm", layer_norm_var_biased), ("feed_forward", feed_forward_linear),
    ("bert_layer", bert_layer_own_helpers),
])
def test_checks_are_fast_and_leave_the_random_stream_alone(name, fn):
    check(name, fn)  # warm-up: the first bert_layer check imports transformers
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    start = time.perf_counter()
    check(name, bert_layer_pre_ln if name == "bert_layer" else fn)  # a failing check names mistakes too
    elapsed = time.perf_counter() - start
    assert torch.equal(torch.rand(3), expected_draw), "the check moved the global random stream"
    assert elapsed < 2.0, f"check({name!r}) took {elapsed:.2f} s"


def test_a_crash_is_reported_with_the_learners_line():
    def layer_norm(x, weight, bias, eps=1e-5):
        return (x - x.mean(-1, keepdim=True)) / undefined_std  # noqa: F821

    feedback = check("layer_norm", layer_norm).feedback
    assert "NameError" in feedback and "undefined_std" in feedback
    assert "Traceback" not in feedback


# =============================================================== hidden checks

HIDDEN_WRONG = {
    "split_heads": split_heads_reshape_only,
    "merge_heads": merge_heads_reshape_only,
    "multi_head_attention": mha_no_output_projection,
    "layer_norm": layer_norm_unbiased,
    "feed_forward": feed_forward_always_relu,
    "bert_layer": bert_layer_pre_ln,
}

RIGHT = {
    "split_heads": split_heads_permute,
    "merge_heads": merge_heads_cat,
    "multi_head_attention": mha_einsum,
    "layer_norm": layer_norm_var_biased,
    "feed_forward": feed_forward_linear,
    "bert_layer": bert_layer_own_helpers,
}


def _shapes(args) -> tuple:
    return tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))


def fitted_to_the_visible_cases(name):
    """Right on inputs shaped like a visible case, wrong on any other: what hidden cases must catch."""
    visible = {_shapes(case.args) for case in grader.get_exercise(name).make_cases()}

    def fitted(*args, **kwargs):
        fn = RIGHT[name] if _shapes(args) in visible else HIDDEN_WRONG[name]
        return fn(*args, **kwargs)

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    grader.hidden.run_hidden(name, RIGHT[name])
    assert "hidden tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_fail_an_answer_fitted_to_the_visible_cases(hidden_dir, name):
    fitted = fitted_to_the_visible_cases(name)
    assert check(name, fitted).passed, "the fitted answer should pass the visible check"
    with pytest.raises(AssertionError, match="hidden test cases"):
        grader.hidden.run_hidden(name, fitted)


def test_hidden_split_heads_expects_value_error_too(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("split_heads", split_heads_chunk_no_check)
    assert "D % n_heads" in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("split_heads", split_heads_interleaved, id="split-interleaved"),
        pytest.param("merge_heads", merge_heads_reshape_only, id="merge-reshape-only"),
        pytest.param("multi_head_attention", mha_split_and_merge_reshape_only, id="mha-reshape-both-ways"),
        pytest.param("multi_head_attention", mha_x_at_w, id="mha-x-at-W"),
        pytest.param("layer_norm", layer_norm_annotated_transformer, id="ln-annotated-transformer"),
        pytest.param("feed_forward", feed_forward_x_at_w, id="ffn-x-at-W"),
        pytest.param("bert_layer", bert_layer_pre_ln, id="bert-pre-LN"),
        pytest.param("bert_layer", bert_layer_torch_default_eps, id="bert-eps-1e-5"),
    ]
    ALL_OR_NOTHING = [
        ("split_heads", split_heads_permute, split_heads_reshape_only),
        ("merge_heads", merge_heads_cat, merge_heads_reshape_only),
        ("multi_head_attention", mha_einsum, mha_no_output_projection),
        ("layer_norm", layer_norm_var_biased, layer_norm_unbiased),
        ("feed_forward", feed_forward_linear, feed_forward_always_relu),
        ("bert_layer", bert_layer_own_helpers, bert_layer_pre_ln),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
