"""Tests for the chapter-07 checks (grader/checks/experts_and_scale.py): top_k_gating, moe_forward, load_balancing_loss,
moe_param_counts, model_flops_utilization, pipeline_bubble_fraction.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways of writing
  the answer (topk then softmax, a loop per token, one-hot counts, a closed form);
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its feedback
  names the mistake; moe_forward is judged by the rows each expert saw as well, load_balancing_loss by its
  gradient as well;
- the cases pickle (they cross into the child process that runs untrusted code);
- the hidden checks pass the reference and fail a wrong answer without showing their cases.

The wrong answers are written out by hand, not taken from the grader's list of mistakes.
"""

import pickle

import pytest
import torch
import torch.nn.functional as F
from chapter_contract import A_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

from grader import check
from grader.checks import experts_and_scale as experts

ASSIGNMENT = "07-experts-and-scale"

EXERCISES = ["top_k_gating", "moe_forward", "load_balancing_loss", "moe_param_counts", "model_flops_utilization",
             "pipeline_bubble_fraction"]


# =============================================================== top_k_gating

def gating_topk_then_softmax(router_logits, k):
    top, indices = router_logits.topk(k, dim=-1)  # softmax of the kept logits = renormalised probabilities
    return torch.softmax(top, dim=-1), indices


def gating_sorted(router_logits, k):
    probs = F.softmax(router_logits, dim=1)
    values, order = torch.sort(probs, dim=1, descending=True)
    kept = values[:, :k]
    return kept / kept.sum(1, keepdim=True), order[:, :k]


def gating_log_space(router_logits, k):
    log_probs = router_logits - torch.logsumexp(router_logits, dim=-1, keepdim=True)
    top, indices = log_probs.topk(k)
    return torch.exp(top - torch.logsumexp(top, dim=-1, keepdim=True)), indices


def gating_not_renormalised(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    return probs.topk(k, dim=-1)


def gating_token_axis(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    gates, indices = torch.topk(probs, k, dim=0)
    return gates / gates.sum(0, keepdim=True), indices


def gating_argmax_only(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    gate, index = probs.max(dim=-1, keepdim=True)
    return gate / gate, index


def gating_raw_logits(router_logits, k):
    gates, indices = router_logits.topk(k)
    return gates / gates.sum(-1, keepdim=True), indices


def gating_exp_overflow(router_logits, k):
    e = router_logits.exp()
    probs = e / e.sum(-1, keepdim=True)
    gates, indices = probs.topk(k)
    return gates / gates.sum(-1, keepdim=True), indices


def gating_returns_indices_first(router_logits, k):
    gates, indices = torch.softmax(router_logits, -1).topk(k)
    return indices, gates / gates.sum(-1, keepdim=True)


TOP_K_GATING_CORRECT = [gating_topk_then_softmax, gating_sorted, gating_log_space]
TOP_K_GATING_MISTAKES = [
    pytest.param(gating_not_renormalised, "gates not renormalised", id="not-renormalised"),
    pytest.param(gating_token_axis, "top-k taken over the token axis", id="token-axis"),
    pytest.param(gating_argmax_only, "a single expert where k were asked", id="argmax-only"),
    pytest.param(gating_raw_logits, "gated with the raw logits", id="raw-logits"),
    pytest.param(gating_exp_overflow, "exp overflows", id="exp-overflow"),
    pytest.param(gating_returns_indices_first, "returned (indices, gates)", id="indices-first"),
]


@pytest.mark.parametrize("fn", TOP_K_GATING_CORRECT, ids=lambda f: f.__name__)
def test_top_k_gating_accepts_other_correct_answers(fn):
    result = check("top_k_gating", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", TOP_K_GATING_MISTAKES)
def test_top_k_gating_names_the_mistake(fn, phrase):
    assert_fails_naming(check("top_k_gating", fn), phrase)


# =============================================================== moe_forward

def _gates(x, router_weight, k):
    gates, indices = torch.softmax(x @ router_weight, dim=-1).topk(k, dim=-1)
    return gates / gates.sum(-1, keepdim=True), indices


def moe_per_token(x, router_weight, experts, k):
    """Correct but slow: each token through its own k experts, one row at a time."""
    gates, indices = _gates(x, router_weight, k)
    rows = []
    for t in range(x.shape[0]):
        rows.append(sum(gates[t, j] * experts[int(indices[t, j])](x[t:t + 1])[0] for j in range(k)))
    return torch.stack(rows)


def moe_per_slot(x, router_weight, experts, k):
    """Correct: for each of the k slots, each expert on the tokens that put it in that slot."""
    gates, indices = _gates(x, router_weight, k)
    out = torch.zeros_like(x)
    for j in range(k):
        for e, expert in enumerate(experts):
            mask = indices[:, j] == e
            if mask.any():
                out[mask] += gates[mask, j, None] * expert(x[mask])
    return out


def moe_sorted_dispatch(x, router_weight, experts, k):
    """Correct: sort the (token, slot) pairs by expert and cut the sorted batch into one chunk per expert."""
    gates, indices = _gates(x, router_weight, k)
    flat = indices.reshape(-1)
    order = flat.argsort(stable=True)
    tokens = torch.arange(x.shape[0]).repeat_interleave(k)[order]
    weights = gates.reshape(-1)[order]
    counts = torch.bincount(flat, minlength=len(experts)).tolist()
    out = torch.zeros_like(x)
    for expert, chunk_tokens, chunk_weights in zip(experts, tokens.split(counts), weights.split(counts)):
        if len(chunk_tokens):
            out = out.index_add(0, chunk_tokens, chunk_weights[:, None] * expert(x[chunk_tokens]))
    return out


def moe_dense(x, router_weight, experts, k):
    """Right numbers, wrong work: every expert runs on every token, then the unrouted outputs are dropped."""
    gates, indices = _gates(x, router_weight, k)
    all_outputs = torch.stack([expert(x) for expert in experts], dim=1)  # (T, E, d)
    chosen = all_outputs.gather(1, indices[..., None].expand(-1, -1, x.shape[1]))  # (T, k, d)
    return (gates[..., None] * chosen).sum(1)


def moe_not_renormalised(x, router_weight, experts, k):
    gates, indices = torch.softmax(x @ router_weight, dim=-1).topk(k, dim=-1)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows, slots = torch.where(indices == e)
        if len(rows):
            out[rows] += gates[rows, slots, None] * expert(x[rows])
    return out


def moe_top1(x, router_weight, experts, k):
    probs = torch.softmax(x @ router_weight, dim=-1)
    best = probs.argmax(dim=-1)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows = best == e
        if rows.any():
            out[rows] = expert(x[rows])
    return out


def moe_unweighted(x, router_weight, experts, k):
    _, indices = _gates(x, router_weight, k)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows, _ = torch.where(indices == e)
        if len(rows):
            out = out.index_add(0, rows, expert(x[rows]))
    return out


def moe_plus_residual(x, router_weight, experts, k):
    return x + moe_per_slot(x, router_weight, experts, k)


def moe_transposed_router(x, router_weight, experts, k):
    return moe_per_slot(x, router_weight.T, experts, k)


MOE_FORWARD_CORRECT = [moe_per_token, moe_per_slot, moe_sorted_dispatch]
MOE_FORWARD_MISTAKES = [
    pytest.param(moe_dense, "experts run on all tokens", id="dense"),
    pytest.param(moe_not_renormalised, "gates not renormalised", id="not-renormalised"),
    pytest.param(moe_top1, "a single expert where k were asked", id="top-1"),
    pytest.param(moe_unweighted, "added without their gates", id="unweighted"),
    pytest.param(moe_plus_residual, "added x to the output", id="residual"),
    pytest.param(moe_transposed_router, "x @ router_weight.T", id="router-transposed"),
]


@pytest.mark.parametrize("fn", MOE_FORWARD_CORRECT, ids=lambda f: f.__name__)
def test_moe_forward_accepts_other_correct_answers(fn):
    result = check("moe_forward", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MOE_FORWARD_MISTAKES)
def test_moe_forward_names_the_mistake(fn, phrase):
    assert_fails_naming(check("moe_forward", fn), phrase)


def test_moe_forward_dense_answer_has_the_right_output_but_fails_on_the_work_done():
    result = check("moe_forward", moe_dense)
    assert "the output is right, but the experts saw other rows" in result.feedback


def test_moe_forward_accepts_the_learners_own_gating(reference):
    top_k_gating = reference_fn(reference, "top_k_gating")

    def moe_forward(x, router_weight, experts, k):
        gates, indices = top_k_gating(x @ router_weight, k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(experts):
            rows, slots = (indices == e).nonzero(as_tuple=True)
            out[rows] += gates[rows, slots].unsqueeze(-1) * expert(x[rows])
        return out

    assert check("moe_forward", moe_forward).passed


def test_moe_forward_cases_pickle_and_come_back_with_fresh_experts():
    for case in experts.moe_forward_cases():
        again = pickle.loads(pickle.dumps(case))
        assert again.label == case.label
        assert all(e.calls == [] for e in again.args[2])


# =============================================================== load_balancing_loss

def balance_one_hot(router_logits, n_experts):
    probs = router_logits.softmax(-1)
    assignment = F.one_hot(router_logits.argmax(-1), n_experts).float()
    return n_experts * (assignment.mean(0) * probs.mean(0)).sum()


def balance_loop(router_logits, n_experts):
    probs = torch.softmax(router_logits, dim=1)
    first = torch.argmax(probs, dim=1)
    loss = 0
    for i in range(n_experts):
        loss = loss + (first == i).float().mean() * probs[:, i].mean()
    return loss * n_experts


def balance_probs_only(router_logits, n_experts):
    P = torch.softmax(router_logits, -1).mean(0)
    return n_experts * (P * P).sum()


def balance_no_factor(router_logits, n_experts):
    probs = torch.softmax(router_logits, -1)
    f = F.one_hot(probs.argmax(-1), n_experts).float().mean(0)
    return (f * probs.mean(0)).sum()


def balance_counts(router_logits, n_experts):
    probs = torch.softmax(router_logits, -1)
    counts = torch.bincount(probs.argmax(-1), minlength=n_experts).float()
    return n_experts * (counts * probs.mean(0)).sum()


def balance_logits(router_logits, n_experts):
    f = F.one_hot(router_logits.argmax(-1), n_experts).float().mean(0)
    return n_experts * (f * router_logits.mean(0)).sum()


def balance_detached(router_logits, n_experts):
    probs = torch.softmax(router_logits, -1).detach()
    f = F.one_hot(probs.argmax(-1), n_experts).float().mean(0)
    return n_experts * (f * probs.mean(0)).sum()


def balance_item(router_logits, n_experts):
    return balance_one_hot(router_logits, n_experts).item()


def balance_per_token(router_logits, n_experts):
    probs = torch.softmax(router_logits, -1)
    mine = probs.gather(1, probs.argmax(-1, keepdim=True))  # each token's probability of its own expert
    return n_experts * mine.mean()


LOAD_BALANCING_CORRECT = [balance_one_hot, balance_loop]
LOAD_BALANCING_MISTAKES = [
    pytest.param(balance_probs_only, "balancing loss on probabilities only", id="probs-only"),
    pytest.param(balance_no_factor, "missing the factor n_experts", id="no-factor"),
    pytest.param(balance_counts, "f_i as counts of tokens", id="counts"),
    pytest.param(balance_logits, "P_i from the raw logits", id="logits"),
    pytest.param(balance_detached, "no gradient reaches the router", id="detached"),
    pytest.param(balance_item, "no gradient reaches the router", id="item"),
    pytest.param(balance_per_token, "paired each token's own assignment", id="per-token"),
]


@pytest.mark.parametrize("fn", LOAD_BALANCING_CORRECT, ids=lambda f: f.__name__)
def test_load_balancing_loss_accepts_other_correct_answers(fn):
    result = check("load_balancing_loss", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", LOAD_BALANCING_MISTAKES)
def test_load_balancing_loss_names_the_mistake(fn, phrase):
    assert_fails_naming(check("load_balancing_loss", fn), phrase)


def test_perfect_balance_gives_one(reference):
    loss = reference_fn(reference, "load_balancing_loss")(3.0 * torch.eye(4).repeat(2, 1), 4)
    assert loss.item() == pytest.approx(1.0)


# =============================================================== moe_param_counts

def counts_by_loop(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model
    total = active = 0
    for i in range(n_layers):
        if (i + 1) % moe_every == 0:
            total += n_experts * ffn
            active += k * ffn
        else:
            total += ffn
            active += ffn
    return total, active


def counts_closed_form(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = (2 * d_model + 1) * d_ff + d_model
    n_moe = n_layers // moe_every
    return ffn * (n_layers - n_moe + n_moe * n_experts), ffn * (n_layers - n_moe + n_moe * k)


def counts_first_layer_moe(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = 2 * d_model * d_ff + d_ff + d_model
    n_moe = len(range(0, n_layers, moe_every))  # layers 0, 2, 4, ...
    return ffn * (n_layers - n_moe + n_moe * n_experts), ffn * (n_layers - n_moe + n_moe * k)


def counts_without_biases(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = 2 * d_model * d_ff
    n_moe = n_layers // moe_every
    return ffn * (n_layers - n_moe + n_moe * n_experts), ffn * (n_layers - n_moe + n_moe * k)


def counts_active_experts_only(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = 2 * d_model * d_ff + d_ff + d_model
    n_moe = n_layers // moe_every
    return ffn * (n_layers - n_moe + n_moe * n_experts), ffn * n_moe * k


def counts_with_router(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = 2 * d_model * d_ff + d_ff + d_model
    n_moe = n_layers // moe_every
    router = n_moe * d_model * n_experts
    return ffn * (n_layers - n_moe + n_moe * n_experts) + router, ffn * (n_layers - n_moe + n_moe * k) + router


def counts_all_layers_moe(d_model, d_ff, n_experts, k, n_layers, moe_every=2):
    ffn = 2 * d_model * d_ff + d_ff + d_model
    return ffn * n_layers * n_experts, ffn * n_layers * k


MOE_PARAM_COUNTS_CORRECT = [counts_by_loop, counts_closed_form]
MOE_PARAM_COUNTS_MISTAKES = [
    pytest.param(counts_first_layer_moe, "MoE layers counted at the wrong positions", id="wrong-positions"),
    pytest.param(counts_without_biases, "forgot the biases", id="no-biases"),
    pytest.param(counts_active_experts_only, "without the dense FFN layers", id="active-experts-only"),
    pytest.param(counts_with_router, "counted the router", id="router"),
    pytest.param(counts_all_layers_moe, "every layer counted as an MoE layer", id="all-moe"),
]


@pytest.mark.parametrize("fn", MOE_PARAM_COUNTS_CORRECT, ids=lambda f: f.__name__)
def test_moe_param_counts_accepts_other_correct_answers(fn):
    result = check("moe_param_counts", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MOE_PARAM_COUNTS_MISTAKES)
def test_moe_param_counts_names_the_mistake(fn, phrase):
    assert_fails_naming(check("moe_param_counts", fn), phrase)


def test_glam_counts_match_the_issue(reference):
    total, active = reference_fn(reference, "moe_param_counts")(8192, 32768, 64, 2, 64)
    assert round(total / 1e12, 2) == 1.12 and round(active / 1e9, 1) == 51.5


# =============================================================== model_flops_utilization

def mfu_per_device(n_params, tokens_per_second, peak_flops):
    achieved = 6.0 * n_params * tokens_per_second  # FLOP/s
    return achieved / peak_flops


def mfu_forward_only(n_params, tokens_per_second, peak_flops):
    return 2 * n_params * tokens_per_second / peak_flops


def mfu_percent(n_params, tokens_per_second, peak_flops):
    return 100 * 6 * n_params * tokens_per_second / peak_flops


def mfu_no_six(n_params, tokens_per_second, peak_flops):
    return n_params * tokens_per_second / peak_flops


def mfu_hardware(n_params, tokens_per_second, peak_flops):
    return 8 * n_params * tokens_per_second / peak_flops


def test_model_flops_utilization_accepts_another_correct_answer():
    assert check("model_flops_utilization", mfu_per_device).passed
    as_tensor_then_float = lambda n, t, p: float(torch.tensor(6.0 * n * t / p, dtype=torch.float64))  # noqa: E731
    assert check("model_flops_utilization", as_tensor_then_float).passed


@pytest.mark.parametrize("fn, phrase", [
    pytest.param(mfu_forward_only, "forward pass only", id="forward-only"),
    pytest.param(mfu_percent, "returned a percentage", id="percent"),
    pytest.param(mfu_no_six, "forgot the 6 FLOPs", id="no-six"),
    pytest.param(mfu_hardware, "hardware FLOPs utilization", id="hfu"),
])
def test_model_flops_utilization_names_the_mistake(fn, phrase):
    assert_fails_naming(check("model_flops_utilization", fn), phrase)


def test_palm_mfu_without_the_attention_term():
    n, tps, peak = experts.PALM_PARAMS, experts.PALM_TOKENS_PER_SECOND, experts.PALM_CHIPS * experts.TPU_V4_PEAK
    assert round(6 * n * tps / peak, 3) == 0.457
    attention = 12 * 118 * 48 * 256 * 2048  # PaLM's 12 L H Q T (118 layers, 48 heads of 256, 2,048 tokens)
    assert round((6 * n + attention) * tps / peak, 3) == 0.462  # the 46.2 % PaLM reports


# =============================================================== pipeline_bubble_fraction

def bubble_from_schedule(n_stages, n_microbatches):
    slots = n_microbatches + n_stages - 1  # one pass of the pipeline
    busy = n_microbatches  # every stage works once per micro-batch
    return (slots - busy) / slots


def bubble_megatron(n_stages, n_microbatches):
    return (n_stages - 1) / n_microbatches


def bubble_plus_p(n_stages, n_microbatches):
    return (n_stages - 1) / (n_microbatches + n_stages)


def bubble_swapped(n_stages, n_microbatches):
    return (n_microbatches - 1) / (n_microbatches + n_stages - 1)


def bubble_floor(n_stages, n_microbatches):
    return (n_stages - 1) // (n_microbatches + n_stages - 1)


def test_pipeline_bubble_fraction_accepts_another_correct_answer():
    assert check("pipeline_bubble_fraction", bubble_from_schedule).passed


@pytest.mark.parametrize("fn, phrase", [
    pytest.param(bubble_megatron, "(p - 1) / m is the bubble time relative", id="p-1-over-m"),
    pytest.param(bubble_plus_p, "not m + p", id="m-plus-p"),
    pytest.param(bubble_swapped, "p and m swapped", id="swapped"),
    pytest.param(bubble_floor, "integer division", id="floor"),
])
def test_pipeline_bubble_fraction_names_the_mistake(fn, phrase):
    assert_fails_naming(check("pipeline_bubble_fraction", fn), phrase)


# =============================================================== an answer that changes its input

def test_an_answer_that_changes_x_in_place_fails_naming_it():
    def moe_forward(x, router_weight, experts, k):
        out = moe_per_slot(x, router_weight, experts, k)
        x.zero_()
        return out

    result = check("moe_forward", moe_forward)
    assert not result.passed and "changes its argument `x` in place" in result.feedback


# =============================================================== hidden checks

HIDDEN_WRONG = {
    "top_k_gating": gating_not_renormalised,
    "moe_forward": moe_dense,
    "load_balancing_loss": balance_probs_only,
    "moe_param_counts": counts_first_layer_moe,
    "model_flops_utilization": mfu_forward_only,
    "pipeline_bubble_fraction": bubble_megatron,
}


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [
        pytest.param("top_k_gating", gating_not_renormalised, id="gating-not-renormalised"),
        pytest.param("moe_forward", moe_dense, id="moe-dense"),
        pytest.param("load_balancing_loss", balance_no_factor, id="balance-no-factor"),
        pytest.param("moe_param_counts", counts_without_biases, id="counts-no-biases"),
        pytest.param("pipeline_bubble_fraction", bubble_megatron, id="bubble-megatron"),
    ]
    ALL_OR_NOTHING = [
        ("top_k_gating", gating_topk_then_softmax, gating_not_renormalised),
        ("moe_forward", moe_per_token, moe_dense),
        ("load_balancing_loss", balance_one_hot, balance_probs_only),
        ("moe_param_counts", counts_by_loop, counts_first_layer_moe),
        ("model_flops_utilization", mfu_per_device, mfu_forward_only),
        ("pipeline_bubble_fraction", bubble_from_schedule, bubble_megatron),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
