"""Tests for the chapter-02 checks (grader/checks/self_attention.py): softmax, causal_mask,
scaled_dot_product_attention, self_attention.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the public API around a check (unknown names, points, assert_passed, notebook display,
  timeouts, garbage return values) and the hidden checks.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from chapter_contract import A_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, own_softmax, reference_fn
from chapter_contract import stub as _stub

import grader
import grader.core
import grader.hidden
from grader import check

ASSIGNMENT = "02-self-attention"

EXERCISES = ["softmax", "causal_mask", "scaled_dot_product_attention", "self_attention"]


# =============================================================== softmax

# ---- correct, written in other ways

def softmax_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def softmax_numpy(x, dim=-1):
    a = x.numpy()
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return torch.from_numpy(e / e.sum(axis=dim, keepdims=True))


def softmax_in_place(x, dim=-1):
    x -= x.amax(dim=dim, keepdim=True)
    x.exp_()
    x /= x.sum(dim=dim, keepdim=True)
    return x


def softmax_move_dim_last(x, dim=-1):
    x = x.movedim(dim, -1)
    m, _ = torch.max(x, dim=-1, keepdim=True)
    e = (x - m).exp()
    return (e / e.sum(-1, keepdim=True)).movedim(-1, dim)


# ---- wrong, as learners write them

def softmax_no_max(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


def softmax_whole_tensor(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum()


def softmax_ignores_dim(x, dim=-1):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_sum_no_keepdim(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim)


def softmax_not_normalised(x, dim=-1):
    return torch.exp(x - x.max(dim=dim, keepdim=True).values)


def softmax_log_softmax(x, dim=-1):
    shifted = x - x.max(dim=dim, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def softmax_divide_by_sum(x, dim=-1):
    return x / x.sum(dim=dim, keepdim=True)


def softmax_always_dim_0(x, dim=-1):
    return own_softmax(x, dim=0)


SOFTMAX_CORRECT = [
    pytest.param(softmax_logsumexp, id="exp-x-minus-logsumexp"),
    pytest.param(softmax_numpy, id="numpy-style"),
    pytest.param(softmax_move_dim_last, id="movedim-to-last"),
]

SOFTMAX_MISTAKES = [
    pytest.param(softmax_no_max, "exp overflows", id="no-max-subtracted"),
    pytest.param(softmax_global_max, "maximum of the whole tensor", id="global-max"),
    pytest.param(softmax_whole_tensor, "normalised over the whole tensor", id="normalised-whole-tensor"),
    pytest.param(softmax_ignores_dim, "ignored the `dim` argument", id="ignores-dim"),
    pytest.param(softmax_always_dim_0, "ignored the `dim` argument", id="always-dim-0"),
    pytest.param(softmax_sum_no_keepdim, "without keepdim=True", id="sum-without-keepdim"),
    pytest.param(softmax_not_normalised, "forgot to divide by the sum", id="not-normalised"),
    pytest.param(softmax_log_softmax, "log-softmax", id="log-softmax"),
    pytest.param(softmax_divide_by_sum, "divided the inputs by their sum", id="x-divided-by-its-sum"),
]


@pytest.mark.parametrize("fn", SOFTMAX_CORRECT)
def test_softmax_accepts_other_correct_answers(fn):
    result = check("softmax", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SOFTMAX_MISTAKES)
def test_softmax_names_the_mistake(fn, phrase):
    assert_fails_naming(check("softmax", fn), phrase)


# =============================================================== causal_mask

# ---- correct

def causal_mask_arange(n):
    i = torch.arange(n)
    return i[:, None] >= i[None, :]


def causal_mask_loop(n):
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(i + 1):
            mask[i, j] = True
    return mask


def causal_mask_not_future(n):
    return ~torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)


def causal_mask_tril_bool(n):
    return torch.ones(n, n).tril().bool()


# ---- wrong

def causal_mask_triu(n):
    return torch.triu(torch.ones(n, n, dtype=torch.bool))


def causal_mask_arange_wrong_way(n):
    i = torch.arange(n)
    return i[:, None] <= i[None, :]


def causal_mask_strict(n):
    return torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)


def causal_mask_inverted(n):
    return torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)


def causal_mask_all_true(n):
    return torch.ones(n, n, dtype=torch.bool)


def causal_mask_float(n):
    return torch.tril(torch.ones(n, n))


def causal_mask_int(n):
    return torch.tril(torch.ones(n, n, dtype=torch.long))


def causal_mask_additive(n):
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    return torch.zeros(n, n).masked_fill(future, float("-inf"))


CAUSAL_MASK_CORRECT = [causal_mask_arange, causal_mask_loop, causal_mask_not_future, causal_mask_tril_bool]

CAUSAL_MASK_MISTAKES = [
    pytest.param(causal_mask_triu, "upper-triangular", id="triu"),
    pytest.param(causal_mask_arange_wrong_way, "upper-triangular", id="arange-compared-the-wrong-way"),
    pytest.param(causal_mask_strict, "the diagonal is False", id="strict-lower-triangle"),
    pytest.param(causal_mask_inverted, "inverted", id="inverted"),
    pytest.param(causal_mask_all_true, "all True", id="all-true"),
    pytest.param(causal_mask_float, "return a boolean tensor", id="float-0-1"),
    pytest.param(causal_mask_int, "return a boolean tensor", id="int-0-1"),
    pytest.param(causal_mask_additive, "additive float mask", id="additive-0-minus-inf"),
]


@pytest.mark.parametrize("fn", CAUSAL_MASK_CORRECT, ids=lambda f: f.__name__)
def test_causal_mask_accepts_other_correct_answers(fn):
    result = check("causal_mask", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", CAUSAL_MASK_MISTAKES)
def test_causal_mask_names_the_mistake(fn, phrase):
    assert_fails_naming(check("causal_mask", fn), phrase)


# =============================================================== scaled_dot_product_attention

# ---- correct

def sdpa_einsum(q, k, v, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return torch.einsum("...qk,...kv->...qv", weights, v), weights


def sdpa_matmul_scale_multiply(q, k, v, mask=None):
    scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = own_softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


def sdpa_baddbmm(q, k, v, mask=None):
    lq, lk, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
    batch = q.shape[:-2]
    q3, k3, v3 = q.reshape(-1, lq, d_k), k.reshape(-1, lk, d_k), v.reshape(-1, lk, v.shape[-1])
    scores = torch.baddbmm(torch.zeros(q3.shape[0], lq, lk), q3, k3.transpose(1, 2), beta=0.0,
                           alpha=1.0 / math.sqrt(d_k))
    scores = scores.reshape(*batch, lq, lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)  # a large negative number instead of -inf
    weights = own_softmax(scores, dim=-1)
    out = torch.bmm(weights.reshape(-1, lq, lk), v3).reshape(*batch, lq, v.shape[-1])
    return out, weights


def sdpa_where_finfo_min(q, k, v, mask=None):
    scores = q @ k.mT / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
    return weights @ v, weights


def sdpa_mask_after_softmax_renormalised(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = own_softmax(scores, dim=-1)
    if mask is not None:
        weights = weights * mask
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v, weights


# ---- wrong

def sdpa_no_scaling(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_scale_by_d_k(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_multiply_sqrt_d_k(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_scale_by_d_v(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_softmax_query_axis(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-2)
    return weights @ v, weights


def sdpa_mask_after_softmax(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = own_softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def sdpa_inverted_mask(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_mask_ignored(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_masked_with_zero(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0)
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_mask_added(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_returns_scores(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return own_softmax(scores, dim=-1) @ v, scores


def sdpa_swapped_outputs(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights, weights @ v


def sdpa_only_output(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return own_softmax(scores, dim=-1) @ v


def sdpa_dot_T(q, k, v, mask=None):
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_dot_t(q, k, v, mask=None):
    scores = torch.matmul(q, k.t()) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_transpose_0_1(q, k, v, mask=None):
    scores = q @ k.transpose(0, 1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_transpose_1_2(q, k, v, mask=None):
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_q_k_swapped(q, k, v, mask=None):
    scores = k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


SDPA_CORRECT = [sdpa_einsum, sdpa_matmul_scale_multiply, sdpa_baddbmm, sdpa_where_finfo_min,
                sdpa_mask_after_softmax_renormalised]

SDPA_MISTAKES = [
    pytest.param(sdpa_no_scaling, "no 1/sqrt(d_k) scaling", id="no-scaling"),
    pytest.param(sdpa_scale_by_d_k, "scaled by 1/d_k instead of 1/sqrt(d_k)", id="scaled-by-d_k"),
    pytest.param(sdpa_multiply_sqrt_d_k, "multiplied the scores by sqrt(d_k)", id="multiplied-by-sqrt-d_k"),
    pytest.param(sdpa_scale_by_d_v, "sqrt(d_v) instead of the key size", id="scaled-by-sqrt-d_v"),
    pytest.param(sdpa_softmax_query_axis, "softmax taken over the query axis", id="softmax-dim-minus-2"),
    pytest.param(sdpa_mask_after_softmax, "mask applied after softmax", id="mask-after-softmax"),
    pytest.param(sdpa_inverted_mask, "inverted mask", id="inverted-mask"),
    pytest.param(sdpa_mask_ignored, "mask ignored", id="mask-ignored"),
    pytest.param(sdpa_masked_with_zero, "set to 0 instead of -inf", id="masked-with-0"),
    pytest.param(sdpa_mask_added, "added the boolean mask to the scores", id="mask-added-as-numbers"),
    pytest.param(sdpa_returns_scores, "returned the scores before the softmax", id="scores-as-weights"),
    pytest.param(sdpa_swapped_outputs, "returned (weights, output)", id="outputs-swapped"),
    pytest.param(sdpa_only_output, "returned only the output", id="only-output"),
    pytest.param(sdpa_dot_T, "swap only the last two axes of the keys", id="dot-T-on-batched",
                 marks=pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")),
    pytest.param(sdpa_dot_t, "swap only the last two axes of the keys", id="dot-t-on-batched"),
    pytest.param(sdpa_transpose_0_1, "transpose(-2, -1)", id="transpose-0-1"),
    pytest.param(sdpa_transpose_1_2, "transpose(-2, -1)", id="transpose-1-2"),
    pytest.param(sdpa_q_k_swapped, "queries and keys swapped", id="q-k-swapped"),
]


@pytest.mark.parametrize("fn", SDPA_CORRECT, ids=lambda f: f.__name__)
def test_sdpa_accepts_other_correct_answers(fn):
    result = check("scaled_dot_product_attention", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SDPA_MISTAKES)
def test_sdpa_names_the_mistake(fn, phrase):
    assert_fails_naming(check("scaled_dot_product_attention", fn), phrase)


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
def test_sdpa_dot_T_hint_quotes_the_learners_line():
    """The crash is reported with the learner's own line (read from this file through linecache)."""
    feedback = check("scaled_dot_product_attention", sdpa_dot_T).feedback
    assert "raised" in feedback
    assert "scores = q @ k.T / math.sqrt(q.shape[-1])" in feedback
    assert "Traceback" not in feedback


# =============================================================== self_attention

# ---- correct

def _attend(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def self_attention_einsum(x, w_q, w_k, w_v, mask=None):
    q = torch.einsum("...td,dk->...tk", x, w_q)
    k = torch.einsum("...td,dk->...tk", x, w_k)
    v = torch.einsum("...td,dv->...tv", x, w_v)
    return sdpa_einsum(q, k, v, mask)


def self_attention_linear(x, w_q, w_k, w_v, mask=None):
    # F.linear(x, W) is x @ W.T, so the (d_model, d_k) weights are passed transposed
    q, k, v = F.linear(x, w_q.T), F.linear(x, w_k.T), F.linear(x, w_v.T)
    return sdpa_matmul_scale_multiply(q, k, v, mask)


def self_attention_matmul_inline(x, w_q, w_k, w_v, mask=None):
    q, k, v = torch.matmul(x, w_q), torch.matmul(x, w_k), torch.matmul(x, w_v)
    return _attend(q, k, v, mask)


# ---- wrong

def self_attention_transposed_weights(x, w_q, w_k, w_v, mask=None):
    return _attend(x @ w_q.T, x @ w_k.T, x @ w_v.T, mask)


def self_attention_values_not_projected(x, w_q, w_k, w_v, mask=None):
    return _attend(x @ w_q, x @ w_k, x, mask)


def self_attention_w_q_for_keys(x, w_q, w_k, w_v, mask=None):
    return _attend(x @ w_q, x @ w_q, x @ w_v, mask)


def self_attention_q_k_swapped(x, w_q, w_k, w_v, mask=None):
    q = x @ w_k
    k = x @ w_q
    return _attend(q, k, x @ w_v, mask)


def self_attention_scaled_by_d_model(x, w_q, w_k, w_v, mask=None):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def self_attention_no_scaling(x, w_q, w_k, w_v, mask=None):
    return sdpa_no_scaling(x @ w_q, x @ w_k, x @ w_v, mask)


def self_attention_mask_ignored(x, w_q, w_k, w_v, mask=None):
    return _attend(x @ w_q, x @ w_k, x @ w_v)


def self_attention_softmax_query_axis(x, w_q, w_k, w_v, mask=None):
    return sdpa_softmax_query_axis(x @ w_q, x @ w_k, x @ w_v, mask)


def self_attention_mask_after_softmax(x, w_q, w_k, w_v, mask=None):
    return sdpa_mask_after_softmax(x @ w_q, x @ w_k, x @ w_v, mask)


SELF_ATTENTION_CORRECT = [self_attention_einsum, self_attention_linear, self_attention_matmul_inline]

SELF_ATTENTION_MISTAKES = [
    pytest.param(self_attention_transposed_weights, "transposed weights", id="x-at-w-T"),
    pytest.param(self_attention_values_not_projected, "values not projected", id="values-not-projected"),
    pytest.param(self_attention_w_q_for_keys, "used w_q for the keys", id="w_q-for-keys"),
    pytest.param(self_attention_q_k_swapped, "queries and keys swapped", id="q-k-swapped"),
    pytest.param(self_attention_scaled_by_d_model, "scaled by sqrt(d_model)", id="scaled-by-sqrt-d_model"),
    pytest.param(self_attention_no_scaling, "no 1/sqrt(d_k) scaling", id="no-scaling"),
    pytest.param(self_attention_mask_ignored, "mask ignored", id="mask-ignored"),
    pytest.param(self_attention_softmax_query_axis, "softmax taken over the query axis", id="softmax-dim-minus-2"),
    pytest.param(self_attention_mask_after_softmax, "mask applied after softmax", id="mask-after-softmax"),
]


@pytest.mark.parametrize("fn", SELF_ATTENTION_CORRECT, ids=lambda f: f.__name__)
def test_self_attention_accepts_other_correct_answers(fn):
    result = check("self_attention", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SELF_ATTENTION_MISTAKES)
def test_self_attention_names_the_mistake(fn, phrase):
    assert_fails_naming(check("self_attention", fn), phrase)


def test_self_attention_accepts_the_reference_attention_of_the_learner(reference):
    """A self_attention that calls the learner's own (correct) scaled_dot_product_attention passes."""
    sdpa = reference_fn(reference, "scaled_dot_product_attention")

    def self_attention(x, w_q, w_k, w_v, mask=None):
        return sdpa(x @ w_q, x @ w_k, x @ w_v, mask)

    assert check("self_attention", self_attention).passed


# =============================================================== every failing case names the mistake

def softmax_max_without_values(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True))  # torch.max(x, dim) returns (values, indices)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_dim_only_in_max(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def causal_mask_off_by_one(n):
    return torch.tril(torch.ones(n, n), diagonal=1).bool()


def sdpa_softmax_without_dim(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=0 if scores.dim() in (1, 3) else 1)  # as F.softmax's implicit dim
    return weights @ v, weights


def sdpa_scaled_by_sequence_length(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = own_softmax(scores, dim=-1)
    return weights @ v, weights


def self_attention_queries_keys_not_projected(x, w_q, w_k, w_v, mask=None):
    return _attend(x, x, x @ w_v, mask)


def _named(fn, name):
    """A row of TestChapterContract.NAMED_MISTAKES (at the end of this file), with the id ``fn``'s name."""
    return pytest.param(name, fn, id=fn.__name__,
                        marks=pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax:UserWarning"))


def test_transposed_weights_hint_is_about_the_weight_layout():
    result = check("self_attention", self_attention_transposed_weights)
    assert "swap only the last two axes of the keys" not in result.feedback, result.feedback


# =============================================================== the API around a check

def test_unknown_exercise_lists_the_exercises():
    with pytest.raises(grader.UnknownExercise) as info:
        check("no_such_exercise", own_softmax)
    message = str(info.value)
    assert "no_such_exercise" in message
    for name in EXERCISES:
        assert name in message
    assert "02" in message


def test_unknown_exercise_suggests_a_close_name():
    with pytest.raises(grader.UnknownExercise) as info:
        check("softmx", own_softmax)
    assert "Did you mean 'softmax'" in str(info.value)


def test_unknown_exercise_is_a_key_error():
    with pytest.raises(KeyError):
        check("causal_msk", causal_mask_arange)


@pytest.mark.parametrize("not_a_function", [3, "softmax", torch.ones(3)], ids=["int", "str", "tensor"])
def test_check_needs_a_function(not_a_function):
    with pytest.raises(TypeError) as info:
        check("softmax", not_a_function)
    message = str(info.value)
    assert "needs the function itself" in message
    assert type(not_a_function).__name__ in message
    assert "check('softmax', softmax)" in message


def test_assert_passed_returns_the_result_when_passed():
    result = check("softmax", own_softmax)
    assert result.assert_passed() is result


def test_assert_passed_raises_the_feedback():
    result = check("softmax", softmax_no_max)
    with pytest.raises(AssertionError) as info:
        result.assert_passed()
    assert str(info.value) == result.feedback
    assert isinstance(info.value, grader.CheckFailed)


def test_assert_passed_on_a_stub_says_not_implemented():
    with pytest.raises(AssertionError, match="not implemented yet"):
        check("causal_mask", _stub).assert_passed()


@pytest.mark.parametrize("fn", [own_softmax, softmax_no_max, _stub], ids=["passed", "failed", "stub"])
def test_notebook_display_names_the_exercise(fn):
    result = check("softmax", fn)
    assert "softmax" in result._repr_html_()
    assert "softmax" in result._repr_markdown_()
    assert "softmax" in repr(result)
    assert str(result) == result.feedback


def test_display_of_a_failure_shows_the_diagnosis():
    result = check("scaled_dot_product_attention", sdpa_softmax_query_axis)
    assert "softmax taken over the query axis" in result._repr_markdown_()
    assert "softmax taken over the query axis" in result._repr_html_()
    assert result.headline()


def test_a_mistake_is_named_once_with_the_cases_it_explains():
    """Issue 8: the named mistake once at the top with its count, three failing cases, the rest counted;
    the full detail in result.details, the mistakes as data in result.mistakes."""
    result = check("scaled_dot_product_attention", sdpa_softmax_query_axis)
    mistake = "softmax taken over the query axis (dim=-2) instead of over the keys (dim=-1)"
    n_failing = len(result.failures)
    assert result.mistakes == {mistake: n_failing}
    assert result.feedback.count("Likely mistake") == 1
    assert f"Likely mistake: {mistake} ({n_failing} of {len(result.cases)} cases)" in result.feedback
    assert result.feedback.count("FAIL") <= 3
    assert result.details.count("FAIL") == n_failing and result.details.count(mistake) == n_failing
    html = result._repr_html_()
    assert html.count(mistake) >= n_failing + 1 and "<details>" in html  # the full table folds away
    assert result.headline() == f"Likely mistake: {mistake}"


def test_hidden_failure_message_uses_the_same_short_form(hidden_dir):
    with pytest.raises(AssertionError) as err:
        grader.hidden.run_hidden("scaled_dot_product_attention", sdpa_softmax_query_axis)
    message = str(err.value)
    assert message.count("Likely mistake") == 1 and "softmax taken over the query axis" in message
    assert re.search(r"\(\d+ of \d+ cases\)", message)


def test_timeout_is_restored_after_the_monkeypatch():
    assert grader.core.get_exercise("softmax").timeout_s == grader.core.DEFAULT_TIMEOUT_S


def test_softmax_returning_a_numpy_array_says_to_return_a_tensor():
    feedback = check("softmax", lambda x, dim=-1: own_softmax(x, dim).numpy()).feedback
    assert "NumPy array" in feedback
    assert "expected a torch.Tensor" in feedback


@pytest.mark.parametrize("name", ["scaled_dot_product_attention", "self_attention"])
def test_pair_of_garbage_fails_with_a_clear_message(name):
    result = check(name, lambda *a, **k: ("out", None))
    assert not result.passed
    assert "should be a torch.Tensor" in result.feedback


def test_a_crash_is_reported_as_feedback_not_raised():
    def softmax(x, dim=-1):
        return torch.exp(x) / undefined_name  # noqa: F821

    result = check("softmax", softmax)
    assert not result.passed
    assert "NameError" in result.feedback
    assert "undefined_name" in result.feedback


def test_an_answer_that_changes_its_input_in_place_fails_naming_it():
    """The check deep-copies the inputs (the judge sees the originals), and observes the copies the
    function received: an in-place softmax has the right output but changes the caller's tensor."""
    result = check("softmax", softmax_in_place)
    assert not result.passed
    assert all(c.mistake and "changes its argument `x` in place" in c.mistake for c in result.cases)
    assert "the output is right" in result.feedback
    assert check("softmax", softmax_logsumexp).passed


# =============================================================== hidden checks

HIDDEN_WRONG = {
    "softmax": softmax_no_max,
    "causal_mask": causal_mask_triu,
    "scaled_dot_product_attention": sdpa_no_scaling,
    "self_attention": self_attention_values_not_projected,
}


def test_hidden_labels_are_not_shown_even_when_distinctive(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("softmax", softmax_ignores_dim)
    message = str(info.value)
    assert "4-D, dim=2" not in message
    assert "float64" not in message
    assert "ignored the `dim` argument" in message  # the mistake is named, the inputs are not


def test_hidden_failure_names_the_mistake(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("scaled_dot_product_attention", sdpa_no_scaling)
    assert "no 1/sqrt(d_k) scaling" in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        _named(softmax_max_without_values, "softmax"),  # max(...) returns (values, indices)
        _named(softmax_dim_only_in_max, "softmax"),  # `dim` for the max, -1 for the sum
        _named(causal_mask_off_by_one, "causal_mask"),  # tril(diagonal=1) sees one step ahead
        _named(sdpa_softmax_without_dim, "scaled_dot_product_attention"),  # implicit softmax dim
        _named(sdpa_scaled_by_sequence_length, "scaled_dot_product_attention"),  # sqrt(Lq) for sqrt(d_k)
        _named(sdpa_transpose_1_2, "scaled_dot_product_attention"),  # IndexError on 2-D inputs
        _named(self_attention_queries_keys_not_projected, "self_attention"),
    ]
    ALL_OR_NOTHING = [
        ("softmax", own_softmax, softmax_no_max),
        ("causal_mask", causal_mask_arange, causal_mask_triu),
        ("scaled_dot_product_attention", sdpa_einsum, sdpa_no_scaling),
        ("self_attention", self_attention_einsum, self_attention_no_scaling),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
