"""Tests for the chapter-07 checks (grader/checks/experts_and_scale.py): top_k_gating, moe_forward, load_balancing_loss,
moe_param_counts, pipeline_schedule.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways of writing
  the answer (topk then softmax, a loop per token, one-hot counts, a closed form, timetables from closed forms
  and from Megatron's order of operations);
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

EXERCISES = ["top_k_gating", "moe_forward", "load_balancing_loss", "moe_param_counts", "pipeline_schedule"]


# =============================================================== top_k_gating

def checks_k(gating):
    """The same gating with the text's ValueError for k outside 1..E (the wrong answers below keep it too)."""
    def checked(router_logits, k):
        if not 1 <= k <= router_logits.shape[-1]:
            raise ValueError(f"k = {k} out of range")
        return gating(router_logits, k)
    checked.__name__ = gating.__name__
    return checked


@checks_k
def gating_topk_then_softmax(router_logits, k):
    top, indices = router_logits.topk(k, dim=-1)  # softmax of the kept logits = renormalised probabilities
    return torch.softmax(top, dim=-1), indices


@checks_k
def gating_sorted(router_logits, k):
    probs = F.softmax(router_logits, dim=1)
    values, order = torch.sort(probs, dim=1, descending=True)
    kept = values[:, :k]
    return kept / kept.sum(1, keepdim=True), order[:, :k]


@checks_k
def gating_log_space(router_logits, k):
    log_probs = router_logits - torch.logsumexp(router_logits, dim=-1, keepdim=True)
    top, indices = log_probs.topk(k)
    return torch.exp(top - torch.logsumexp(top, dim=-1, keepdim=True)), indices


@checks_k
def gating_not_renormalised(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    return probs.topk(k, dim=-1)


@checks_k
def gating_token_axis(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    gates, indices = torch.topk(probs, k, dim=0)
    return gates / gates.sum(0, keepdim=True), indices


@checks_k
def gating_argmax_only(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    gate, index = probs.max(dim=-1, keepdim=True)
    return gate / gate, index


@checks_k
def gating_raw_logits(router_logits, k):
    gates, indices = router_logits.topk(k)
    return gates / gates.sum(-1, keepdim=True), indices


@checks_k
def gating_exp_overflow(router_logits, k):
    e = router_logits.exp()
    probs = e / e.sum(-1, keepdim=True)
    gates, indices = probs.topk(k)
    return gates / gates.sum(-1, keepdim=True), indices


@checks_k
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


def gating_without_k_check(router_logits, k):
    gates, indices = torch.softmax(router_logits, dim=-1).topk(k, dim=-1)
    return gates / gates.sum(-1, keepdim=True), indices


def gating_clamps_k(router_logits, k):
    return gating_without_k_check(router_logits, min(k, router_logits.shape[-1]))


def test_top_k_gating_names_topk_refusing_k_above_the_experts():
    result = check("top_k_gating", gating_without_k_check)
    assert_fails_naming(result, "torch.topk refuses it with its own error")
    assert [c.label for c in result.cases if not c.passed] == ["k = 5 > 4 experts: ValueError"]


def test_top_k_gating_clamping_k_is_not_the_rule():
    assert_fails_naming(check("top_k_gating", gating_clamps_k), "no check of k")


@checks_k
def gating_ties_to_the_highest_index(router_logits, k):
    """Correct: a stable sort of the probabilities with the experts reversed keeps the highest tied index."""
    probs = torch.softmax(router_logits.flip(-1), dim=-1)
    values, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    kept = values[:, :k]
    return kept / kept.sum(-1, keepdim=True), router_logits.shape[-1] - 1 - order[:, :k]


@checks_k
def gating_ties_to_the_lowest_index(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)
    values, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    kept = values[:, :k]
    return kept / kept.sum(-1, keepdim=True), order[:, :k]


@pytest.mark.parametrize("fn", [gating_ties_to_the_lowest_index, gating_ties_to_the_highest_index],
                         ids=lambda f: f.__name__)
def test_top_k_gating_accepts_any_tied_expert(fn):
    result = check("top_k_gating", fn)
    assert result.passed, result.feedback


@checks_k
def gating_repeats_a_tied_expert(router_logits, k):
    gates, indices = gating_ties_to_the_lowest_index(router_logits, k)
    indices = indices.clone()
    indices[:, -1] = indices[:, 0]  # the same expert twice on every row: never a top-k choice
    return gates, indices


def test_top_k_gating_refuses_an_expert_kept_twice():
    result = check("top_k_gating", gating_repeats_a_tied_expert)
    assert not result.passed and "indices has the right shape but wrong values" in result.feedback


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
    pytest.param(moe_transposed_router, "the transposed router weight", id="router-transposed"),
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


# =============================================================== pipeline_schedule

def validated(schedule_fn):
    """The text's ValueErrors around a timetable builder (every answer below but one checks its inputs)."""
    def checked(n_stages, n_microbatches, schedule="gpipe"):
        if n_stages < 1 or n_microbatches < 1 or schedule not in ("gpipe", "1f1b"):
            raise ValueError("bad inputs")
        return schedule_fn(n_stages, n_microbatches, schedule)
    checked.__name__ = schedule_fn.__name__
    return checked


def table_from_steps(n_stages, steps):
    """table[stage][step] from {(kind, stage, micro-batch): step}."""
    table = [[None] * (max(steps.values()) + 1) for _ in range(n_stages)]
    for (kind, s, i), t in steps.items():
        table[s][t] = (kind, i)
    return table


def earliest_steps(n_stages, n_microbatches, order):
    """Each stage runs its operations in the given order, each at the earliest step its dependencies allow."""
    p = n_stages
    steps = {}
    while len(steps) < 2 * p * n_microbatches:
        for s in range(p):
            free = -1
            for kind, i in order[s]:
                if (kind, s, i) in steps:
                    free = steps[kind, s, i]
                    continue
                before = [("F", s - 1, i)] if kind == "F" and s > 0 else []
                if kind == "B":
                    before = [("F", s, i)] + ([("B", s + 1, i)] if s < p - 1 else [])
                if not all(d in steps for d in before):
                    break
                free = max([free] + [steps[d] for d in before]) + 1
                steps[kind, s, i] = free
    return steps


@validated
def schedule_closed_form(n_stages, n_microbatches, schedule):
    """Correct: GPipe's steps written out, the backwards in reverse order as in GPipe's figure; 1F1B from
    Megatron-LM's order of operations (warm-up forwards, then one forward one backward, then cool-down)."""
    p, m = n_stages, n_microbatches
    if schedule == "gpipe":
        steps = {("F", s, i): s + i for s in range(p) for i in range(m)}
        steps |= {("B", s, i): (m + p - 1) + (p - 1 - s) + (m - 1 - i) for s in range(p) for i in range(m)}
        return table_from_steps(p, steps)
    order = []
    for s in range(p):
        warmup = min(p - s - 1, m)
        ops = [("F", i) for i in range(warmup)]
        for i in range(m - warmup):
            ops += [("F", warmup + i), ("B", i)]
        ops += [("B", i) for i in range(m - warmup, m)]
        order.append(ops)
    return table_from_steps(p, earliest_steps(p, m, order))


@validated
def schedule_per_stage_order(n_stages, n_microbatches, schedule):
    """Correct: GPipe as every stage's forwards then backwards in micro-batch order, placed at the earliest steps."""
    if schedule == "1f1b":
        return schedule_closed_form(n_stages, n_microbatches, schedule)
    ops = [("F", i) for i in range(n_microbatches)] + [("B", i) for i in range(n_microbatches)]
    return table_from_steps(n_stages, earliest_steps(n_stages, n_microbatches, [ops] * n_stages))


def _gpipe(n_stages, n_microbatches, *, forward_at, backward_at):
    steps = {("F", s, i): forward_at(s, i) for s in range(n_stages) for i in range(n_microbatches)}
    steps |= {("B", s, i): backward_at(s, i) for s in range(n_stages) for i in range(n_microbatches)}
    return table_from_steps(n_stages, steps)


@validated
def schedule_without_stagger(n_stages, n_microbatches, schedule):
    """Every stage starts at step 0, as if the stages did not wait for each other."""
    m = n_microbatches
    return _gpipe(n_stages, m, forward_at=lambda s, i: i, backward_at=lambda s, i: m + (n_stages - 1 - s) + i)


@validated
def schedule_backward_from_the_first_stage(n_stages, n_microbatches, schedule):
    """The backward pattern copied from the forward one: stage 0 first."""
    p, m = n_stages, n_microbatches
    return _gpipe(p, m, forward_at=lambda s, i: s + i, backward_at=lambda s, i: m + p - 1 + s + i)


@validated
def schedule_gpipe_always(n_stages, n_microbatches, schedule):
    """GPipe's table whatever the schedule asked."""
    return schedule_closed_form(n_stages, n_microbatches, "gpipe")


@validated
def schedule_one_microbatch_at_a_time(n_stages, n_microbatches, schedule):
    """No overlap: each micro-batch goes forward and back through the whole pipeline before the next starts."""
    p = n_stages
    steps = {}
    for i in range(n_microbatches):
        start = 2 * p * i
        steps |= {("F", s, i): start + s for s in range(p)}
        steps |= {("B", s, i): start + p + (p - 1 - s) for s in range(p)}
    return table_from_steps(p, steps)


@validated
def schedule_same_step_forward(n_stages, n_microbatches, schedule):
    """A clock that lets stage s see what stage s - 1 ran in the same step (<= where < belongs)."""
    p, m = n_stages, n_microbatches
    ran_at = {}
    next_f, next_b = [0] * p, [0] * p
    table = [[] for _ in range(p)]
    step = 0
    while min(next_b) < m:
        for s in range(p):
            f, b = next_f[s], next_b[s]
            forward_ready = f < m and (s == 0 or ran_at.get(("F", s - 1, f), step + 1) <= step)
            after = ("F", s, b) if s == p - 1 else ("B", s + 1, b)
            backward_ready = b < f and ran_at.get(after, step) < step
            op = ("F", f) if forward_ready else ("B", b) if backward_ready and f == m else None
            if op is not None:
                ran_at[(op[0], s, op[1])] = step
                next_f[s] += op[0] == "F"
                next_b[s] += op[0] == "B"
            table[s].append(op)
        step += 1
    return table


@validated
def schedule_one_based(n_stages, n_microbatches, schedule):
    return [[None if op is None else (op[0], op[1] + 1) for op in row]
            for row in schedule_closed_form(n_stages, n_microbatches, schedule)]


@validated
def schedule_transposed(n_stages, n_microbatches, schedule):
    return [list(column) for column in zip(*schedule_closed_form(n_stages, n_microbatches, schedule))]


def schedule_without_input_check(n_stages, n_microbatches, schedule="gpipe"):
    if n_stages < 1 or n_microbatches < 1:
        return []
    return schedule_closed_form(n_stages, n_microbatches, "1f1b" if schedule == "1f1b" else "gpipe")


@validated
def schedule_with_a_trailing_idle_step(n_stages, n_microbatches, schedule):
    return [row + [None] for row in schedule_closed_form(n_stages, n_microbatches, schedule)]


PIPELINE_SCHEDULE_CORRECT = [schedule_closed_form, schedule_per_stage_order]
PIPELINE_SCHEDULE_MISTAKES = [
    pytest.param(schedule_without_stagger, "before the stage before it had finished it", id="no-stagger"),
    pytest.param(schedule_same_step_forward, "before the stage before it had finished it", id="same-step"),
    pytest.param(schedule_backward_from_the_first_stage, "from the first stage to the last", id="backward-wrong-way"),
    pytest.param(schedule_gpipe_always, "1F1B holds too many micro-batches", id="gpipe-for-1f1b"),
    pytest.param(schedule_one_microbatch_at_a_time, "GPipe mixes forwards and backwards", id="serial"),
    pytest.param(schedule_one_based, "numbered from 1", id="one-based"),
    pytest.param(schedule_transposed, "indexed [step][stage]", id="transposed"),
    pytest.param(schedule_without_input_check, "no check of the inputs", id="no-input-check"),
    pytest.param(schedule_with_a_trailing_idle_step, "longer than it has to be", id="trailing-idle-step"),
]


@pytest.mark.parametrize("fn", PIPELINE_SCHEDULE_CORRECT, ids=lambda f: f.__name__)
def test_pipeline_schedule_accepts_other_correct_answers(fn):
    result = check("pipeline_schedule", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", PIPELINE_SCHEDULE_MISTAKES)
def test_pipeline_schedule_names_the_mistake(fn, phrase):
    assert_fails_naming(check("pipeline_schedule", fn), phrase)


def test_one_microbatch_at_a_time_is_too_long_for_1f1b():
    result = check("pipeline_schedule", schedule_one_microbatch_at_a_time)
    failed = {c.label: c.mistake for c in result.cases if not c.passed}
    assert "longer than it has to be" in failed["1F1B, 4 stages, 8 micro-batches"]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", [(1, 1), (1, 5), (4, 1), (4, 8), (8, 3), (5, 16)])
def test_the_reference_tables_idle_as_gpipes_formula_says(reference, p, m, schedule):
    table = reference_fn(reference, "pipeline_schedule")(p, m, schedule)
    idle = sum(op is None for row in table for op in row)
    assert len(table[0]) == 2 * (m + p - 1)
    assert idle * (m + p - 1) == (p - 1) * p * len(table[0])  # idle share (p - 1) / (m + p - 1), exactly
    assert experts.schedule_problem(table, p, m, schedule) is None


def test_1f1b_holds_fewer_microbatches_than_gpipe(reference):
    def most_held(row):
        held = most = 0
        for op in row:
            held += 0 if op is None else 1 if op[0] == "F" else -1
            most = max(most, held)
        return most

    build = reference_fn(reference, "pipeline_schedule")
    assert [most_held(row) for row in build(4, 8, "gpipe")] == [8, 8, 8, 8]
    assert [most_held(row) for row in build(4, 8, "1f1b")] == [4, 3, 2, 1]


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
    "pipeline_schedule": schedule_backward_from_the_first_stage,
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
        pytest.param("pipeline_schedule", schedule_without_stagger, id="schedule-no-stagger"),
        pytest.param("pipeline_schedule", schedule_backward_from_the_first_stage, id="schedule-backward-wrong-way"),
        pytest.param("pipeline_schedule", schedule_gpipe_always, id="schedule-gpipe-for-1f1b"),
        pytest.param("pipeline_schedule", schedule_one_microbatch_at_a_time, id="schedule-serial"),
        pytest.param("pipeline_schedule", schedule_without_input_check, id="schedule-no-input-check"),
    ]
    ALL_OR_NOTHING = [
        ("top_k_gating", gating_topk_then_softmax, gating_not_renormalised),
        ("moe_forward", moe_per_token, moe_dense),
        ("load_balancing_loss", balance_one_hot, balance_probs_only),
        ("moe_param_counts", counts_by_loop, counts_first_layer_moe),
        ("pipeline_schedule", schedule_closed_form, schedule_gpipe_always),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_LIST]

    def hidden_wrong(self, exercise, reference):
        return HIDDEN_WRONG[exercise]
