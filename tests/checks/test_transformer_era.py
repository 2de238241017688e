"""Tests for the chapter-01 checks (grader/checks/transformer_era.py): transformer_param_count, plan_training,
semantic_search.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the published figures the checks use agree with real GPT-2 models built from their configs;
- the hidden checks pass the reference and fail an answer fitted to the visible cases.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from chapter_contract import A_MIXED_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

import grader
import grader.hidden
from grader import check
from grader.checks import transformer_era as scale

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "01-transformer-era"
SOLUTION_DIR = ROOT / "solutions" / ASSIGNMENT

EXERCISES = ["transformer_param_count", "plan_training", "semantic_search"]

# sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(...)).parameters()), the tied lm_head counted once
GPT2_PUBLISHED = {"small": (12, 768, 124_439_808), "medium": (24, 1024, 354_823_168),
                  "large": (36, 1280, 774_030_080), "xl": (48, 1600, 1_557_611_200)}


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [3, 3, 2]


# =============================================================== published figures against real models

def _meta_gpt2_count(n_layers, d_model, vocab_size=50257, n_positions=1024, d_ff=None, n_head=None):
    """sum(p.numel()) of a GPT2LMHeadModel built from a config on the meta device (shapes, no memory)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=n_head or max(1, d_model // 64),
                        vocab_size=vocab_size, n_positions=n_positions, n_inner=d_ff)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: parameters() yields it once
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", GPT2_PUBLISHED)
def test_published_gpt2_counts_match_real_models(reference, size):
    n_layers, d_model, published = GPT2_PUBLISHED[size]
    assert _meta_gpt2_count(n_layers, d_model) == published
    assert reference_fn(reference, "transformer_param_count")(n_layers, d_model, 50257, 1024) == published
    assert scale.gpt_param_count(n_layers, d_model, 50257, 1024) == published


def test_gpt2_small_count_matches_a_real_initialised_model():
    """Not only on the meta device: a real GPT-2 small, with memory, has the same count."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config())
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_gpt3_shape_count_is_stated_exactly():
    assert scale.GPT3_PARAMS_EXACT == _meta_gpt2_count(96, 12288, n_positions=2048, n_head=96)
    assert abs(scale.GPT3_PARAMS_EXACT / 175e9 - 1) < 0.01  # "175B"
    assert f"{scale.GPT3_PARAMS_EXACT:,}" in " ".join(c.label for c in scale.param_count_cases())


@pytest.mark.parametrize("case", scale.param_count_cases(), ids=lambda c: c.label[:40])
def test_every_param_count_case_matches_transformers(case):
    """The check's reference count equals GPT2LMHeadModel's on every visible case (d_ff as n_inner)."""
    args = dict(zip(["n_layers", "d_model", "vocab_size", "n_positions", "d_ff"], case.args), **case.kwargs)
    expected = scale.gpt_param_count(*case.args, **case.kwargs)
    assert _meta_gpt2_count(**args, n_head=1) == expected


# =============================================================== transformer_param_count

# ---- correct, written in other ways

def param_count_by_parts(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    d_ff = d_ff or 4 * d_model
    block = {
        "ln_1.weight": d_model, "ln_1.bias": d_model,
        "attn.c_attn.weight": d_model * 3 * d_model, "attn.c_attn.bias": 3 * d_model,
        "attn.c_proj.weight": d_model * d_model, "attn.c_proj.bias": d_model,
        "ln_2.weight": d_model, "ln_2.bias": d_model,
        "mlp.c_fc.weight": d_model * d_ff, "mlp.c_fc.bias": d_ff,
        "mlp.c_proj.weight": d_ff * d_model, "mlp.c_proj.bias": d_model,
    }
    total = vocab_size * d_model + n_positions * d_model
    for _ in range(n_layers):
        for count in block.values():
            total += count
    return total + 2 * d_model  # ln_f


def param_count_closed_formula(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    L, d = n_layers, d_model
    f = 4 * d if d_ff is None else d_ff
    return L * (4 * d * d + 2 * d * f + 9 * d + f) + (vocab_size + n_positions + 2) * d


def param_count_with_torch_modules(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    d_ff = d_ff if d_ff is not None else 4 * d_model
    with torch.device("meta"):
        block = torch.nn.ModuleList([torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, 3 * d_model),
                                     torch.nn.Linear(d_model, d_model), torch.nn.LayerNorm(d_model),
                                     torch.nn.Linear(d_model, d_ff), torch.nn.Linear(d_ff, d_model)])
        rest = torch.nn.ModuleList([torch.nn.Embedding(vocab_size, d_model), torch.nn.Embedding(n_positions, d_model),
                                    torch.nn.LayerNorm(d_model)])
    per_block = sum(p.numel() for p in block.parameters())
    return n_layers * per_block + sum(p.numel() for p in rest.parameters())


def param_count_numpy_ints(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    d = np.int64(d_model)
    f = 4 * d if d_ff is None else np.int64(d_ff)
    return (vocab_size + n_positions) * d + n_layers * (4 * (d * d + d) + 2 * d * f + f + d + 4 * d) + 2 * d


# ---- wrong, as learners write them

def _count(n_layers, d_model, vocab_size, n_positions, d_ff=None, *, output=0, positions=True, biases=True,
           final_ln=True, lns=2, projections=4, default_ff=4):
    d_ff = default_ff * d_model if d_ff is None else d_ff
    emb = vocab_size * d_model + (n_positions * d_model if positions else 0)
    attn = projections * d_model * d_model + (projections * d_model if biases else 0)
    ffn = 2 * d_model * d_ff + ((d_ff + d_model) if biases else 0)
    return emb + n_layers * (attn + ffn + lns * 2 * d_model) + (2 * d_model if final_ln else 0) + output


def param_count_untied(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    lm_head = vocab_size * d_model  # the output layer, counted separately
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, output=lm_head)


def param_count_no_positions(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, positions=False)


def param_count_no_biases(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, biases=False)


def param_count_no_final_ln(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, final_ln=False)


def param_count_one_ln_per_block(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, lns=1)


def param_count_ff_default_d_model(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, default_ff=1)


def param_count_ff_default_2d(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, default_ff=2)


def param_count_three_projections(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, projections=3)


def param_count_ignores_d_ff(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, None)


def param_count_12ld2(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return 12 * n_layers * d_model ** 2


def param_count_true_division(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return param_count_closed_formula(n_layers, d_model, vocab_size, n_positions, d_ff) / 1  # a float


def param_count_untied_and_no_final_ln(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return _count(n_layers, d_model, vocab_size, n_positions, d_ff, output=vocab_size * d_model, final_ln=False)


def param_count_d_ff_none_used(n_layers, d_model, vocab_size, n_positions, d_ff=None):
    return vocab_size * d_model + n_layers * (2 * d_model * d_ff)  # crashes when d_ff is None


PARAM_COUNT_CORRECT = [param_count_by_parts, param_count_closed_formula, param_count_with_torch_modules,
                       param_count_numpy_ints]

PARAM_COUNT_MISTAKES = [
    pytest.param(param_count_untied, "untied output layer", id="untied-output"),
    pytest.param(param_count_no_positions, "forgot the position embeddings", id="no-position-embeddings"),
    pytest.param(param_count_no_biases, "forgot the biases", id="no-biases"),
    pytest.param(param_count_no_final_ln, "forgot the final LayerNorm", id="no-final-layernorm"),
    pytest.param(param_count_one_ln_per_block, "one LayerNorm per block instead of two", id="one-layernorm"),
    pytest.param(param_count_ff_default_d_model, "d_ff defaults to d_model", id="d_ff-default-d"),
    pytest.param(param_count_ff_default_2d, "d_ff defaults to 2 * d_model", id="d_ff-default-2d"),
    pytest.param(param_count_three_projections, "attention as 3 projections", id="three-projections"),
    pytest.param(param_count_ignores_d_ff, "ignored the d_ff argument", id="ignores-d_ff"),
    pytest.param(param_count_12ld2, "12 * n_layers * d_model**2", id="12-L-d-squared"),
    pytest.param(param_count_true_division, "a parameter count is an int", id="float"),
    pytest.param(param_count_d_ff_none_used, "d_ff=None means the default 4 * d_model", id="d_ff-None-crash"),
]


@pytest.mark.parametrize("fn", PARAM_COUNT_CORRECT, ids=lambda f: f.__name__)
def test_param_count_accepts_other_correct_answers(fn):
    result = check("transformer_param_count", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", PARAM_COUNT_MISTAKES)
def test_param_count_names_the_mistake(fn, phrase):
    assert_fails_naming(check("transformer_param_count", fn), phrase)


def test_param_count_names_two_mistakes_at_once():
    result = check("transformer_param_count", param_count_untied_and_no_final_ln)
    assert_fails_naming(result, "two mistakes at once")
    assert "untied output layer" in result.feedback and "final LayerNorm" in result.feedback


def test_param_count_feedback_gives_the_difference():
    feedback = check("transformer_param_count", param_count_untied).feedback
    assert "expected 124,439,808" in feedback
    assert f"{50257 * 768:,} more" in feedback


def test_param_count_single_mistakes_are_distinct_on_gpt2_small():
    """On GPT-2 small every named mistake gives its own number, so the diagnosis is unambiguous."""
    case = scale.param_count_cases()[0]
    values = [case.call(m.make) for m in scale.param_count_mistakes()
              if "d_ff argument" not in m.description]  # ignoring d_ff changes nothing without d_ff
    assert len(set(values)) == len(values)
    assert scale.gpt_param_count(*case.args) not in values


# =============================================================== plan_training

SECONDS_PER_DAY = 24 * 3600


# ---- correct, written in other ways

def plan_step_by_step(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    if utilization <= 0 or utilization > 1:
        raise ValueError("utilization out of range")
    flop_per_second = n_devices * peak_flops_per_device * utilization
    total = flop_per_second * datetime.timedelta(days=days).total_seconds()
    forward, backward = 2, 4  # FLOPs per parameter and token
    ranked = sorted(models, key=models.get, reverse=True)
    plan = {}
    for name in ranked:
        n = models[name]
        d = total / ((forward + backward) * n)
        if d / n >= tokens_per_param:
            plan[name] = d
    return plan


def plan_comprehension(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    assert_fraction = 0 < utilization <= 1
    if not assert_fraction:
        raise ValueError(f"bad utilization {utilization}")
    tokens = {m: n_devices * peak_flops_per_device * utilization * days * SECONDS_PER_DAY / (6 * n)
              for m, n in models.items()}
    order = sorted(range(len(models)), key=lambda i: (-list(models.values())[i], i))
    names = [list(models)[i] for i in order]
    return {m: tokens[m] for m in names if tokens[m] >= tokens_per_param * models[m]}


def plan_numpy(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    if not 0 < utilization <= 1:
        raise ValueError("utilization")
    names = list(models)
    n = np.array([models[m] for m in names], dtype=np.float64)
    tokens = np.float64(n_devices) * peak_flops_per_device * utilization * days * 86_400 / (6 * n)
    order = np.argsort(-n, kind="stable")
    return {names[i]: tokens[i] for i in order if tokens[i] >= tokens_per_param * n[i]}  # NumPy floats: plain once out


# ---- wrong, as learners write them

def _plan(models, n_devices, peak, utilization, days, tokens_per_param=20.0, *, per_token=6, seconds=86_400,
          use_u=True, check_u=True, keep=None, order="largest"):
    if check_u and not 0 < utilization <= 1:
        raise ValueError("utilization")
    budget = n_devices * peak * (utilization if use_u else 1) * days * seconds
    keep = keep or (lambda tokens, n: tokens >= tokens_per_param * n)
    names = {"largest": sorted(models, key=lambda m: models[m], reverse=True),
             "smallest-reversed": sorted(models, key=lambda m: models[m])[::-1], "given": list(models)}[order]
    return {m: budget / (per_token * models[m]) for m in names if keep(budget / (per_token * models[m]), models[m])}


def plan_2nd(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, per_token=2)


def plan_no_utilization(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, use_u=False)


def plan_days_as_seconds(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, seconds=1)


def plan_hours(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, seconds=24)


def plan_3600(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, seconds=3600)


def plan_accepts_any_utilization(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, check_u=False)


def plan_percent(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    if utilization > 1:  # "40 means 40 %"
        utilization = utilization / 100
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param)


def plan_threshold_without_n(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param,
                 keep=lambda tokens, n: tokens >= tokens_per_param)


def plan_given_order(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param, order="given")


def plan_reversed_ties(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param,
                 order="smallest-reversed")


def plan_sorted_items(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    if not 0 < utilization <= 1:
        raise ValueError("utilization")
    budget = n_devices * peak_flops_per_device * utilization * days * 86400
    ranked = sorted(models.items(), reverse=True)  # compares the names first
    return {name: budget / (6 * n) for name, n in ranked if budget / (6 * n) >= tokens_per_param * n}


def plan_tokens_per_param(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    plan = _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param)
    return {m: tokens / models[m] for m, tokens in plan.items()}


def plan_no_devices(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return _plan(models, 1, peak_flops_per_device, utilization, days, tokens_per_param)


def plan_list_of_names(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    return list(_plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param))


def plan_tensor_tokens(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    plan = _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param)
    return {m: torch.tensor(tokens) for m, tokens in plan.items()}


def plan_asserts(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param=20.0):
    assert 0 < utilization <= 1, "utilization"
    return _plan(models, n_devices, peak_flops_per_device, utilization, days, tokens_per_param)


PLAN_CORRECT = [plan_step_by_step, plan_comprehension, plan_numpy]

PLAN_MISTAKES = [
    pytest.param(plan_2nd, "counted 2 FLOPs per parameter and token: that is the forward pass alone", id="2ND"),
    pytest.param(plan_no_utilization, "forgot the utilization", id="no-utilization"),
    pytest.param(plan_days_as_seconds, "treated the days as seconds", id="days-as-seconds"),
    pytest.param(plan_hours, "converted the days to hours only", id="hours"),
    pytest.param(plan_3600, "used 3,600 seconds per day", id="3600"),
    pytest.param(plan_accepts_any_utilization, "accepted a utilization outside (0, 1]", id="no-range-check"),
    pytest.param(plan_percent, "accepted a utilization outside (0, 1]", id="percent-converted"),
    pytest.param(plan_threshold_without_n, "compared the tokens with tokens_per_param itself", id="threshold-no-N"),
    pytest.param(plan_given_order, "kept the order of `models`", id="given-order"),
    pytest.param(plan_reversed_ties, "put models of equal size in reverse order", id="reversed-ties"),
    pytest.param(plan_tokens_per_param, "returned tokens per parameter", id="tokens-per-param"),
    pytest.param(plan_sorted_items, "sorted the models by name", id="sorted-by-name"),
    pytest.param(plan_no_devices, "forgot n_devices", id="no-devices"),
    pytest.param(plan_list_of_names, "expected a dict {model name: tokens}", id="list-of-names"),
    pytest.param(plan_tensor_tokens, "return Python numbers (use .item())", id="tensor-tokens"),
    pytest.param(plan_asserts, "not assert", id="assert"),
]


@pytest.mark.parametrize("fn", PLAN_CORRECT, ids=lambda f: f.__name__)
def test_plan_accepts_other_correct_answers(fn):
    result = check("plan_training", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", PLAN_MISTAKES)
def test_plan_names_the_mistake(fn, phrase):
    assert_fails_naming(check("plan_training", fn), phrase)


def test_plan_feedback_gives_the_factor():
    assert "(yours is 3 times the expected value)" in check("plan_training", plan_2nd).feedback


def test_plan_names_several_mistakes_when_a_case_cannot_tell_them_apart():
    """Far too few tokens leave an empty plan: every slip that causes it is listed, none is claimed alone."""
    feedback = check("plan_training", plan_days_as_seconds).feedback
    assert "one of these mistakes" in feedback
    assert "treated the days as seconds" in feedback and "converted the days to hours only" in feedback


def test_plan_every_named_mistake_fails_a_visible_case():
    cases = scale.plan_cases()
    for mistake in scale.plan_mistakes():
        assert any(not scale._same_plan(case.call(mistake.make), case.call(scale.reference_plan)) for case in cases), \
            mistake.description


def test_gpt3_plan_is_near_the_paper(reference):
    """GPT-3's run as Patterson et al. give it, at the PaLM paper's 21.3 %: about the paper's 300B tokens."""
    plan = reference_fn(reference, "plan_training")({"GPT-3": scale.GPT3_PARAMS_EXACT}, 10_000, 125e12, 0.213, 14.8,
                                                    tokens_per_param=1.7)
    assert abs(plan["GPT-3"] / 300e9 - 1) < 0.1


def test_plan_text_example(reference):
    """The exercise text's example: GPT-2 large, about 16.3 billion tokens, 21 per parameter; xl falls short."""
    plan = reference_fn(reference, "plan_training")(scale.GPT2_SIZES, 1, 312e12, 0.4, 7)
    assert list(plan)[0] == "gpt2-large" and "gpt2-xl" not in plan
    assert round(plan["gpt2-large"] / 1e9, 1) == 16.3
    assert round(plan["gpt2-large"] / scale.GPT2_SIZES["gpt2-large"]) == 21


def test_plan_cases_stay_clear_of_the_threshold(hidden_dir):
    """Float rounding never decides a model's place: every ratio is at least 2 % from tokens_per_param."""
    for case in scale.plan_cases() + grader.hidden.load_hidden_cases("plan_training", SOLUTION_DIR):
        budget = case.budget
        plan = case.call(scale.reference_plan)
        if isinstance(plan, tuple):
            continue
        ratio = budget.get("tokens_per_param", 20.0)
        full = case.call(lambda *a, **k: scale.reference_plan(*a, **k, threshold="none"))
        for name, tokens in full.items():
            if tokens:
                assert abs(tokens / budget["models"][name] / ratio - 1) > 0.02, (case.label, name)


# =============================================================== semantic_search

# ---- correct


def _cosines(query, documents):
    """Cosine similarities of the documents (n, d) to the query (d,), from dot products and lengths (the
    exercise refuses `F.cosine_similarity`)."""
    return documents @ query / (documents.norm(dim=-1) * query.norm())

def search_cosine_argsort(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)  # (n,)
    return torch.argsort(sims, descending=True, stable=True)[:k].tolist()


def search_normalised_argsort(query_embedding, document_embeddings, k):
    q = query_embedding / query_embedding.norm()
    docs = document_embeddings / document_embeddings.norm(dim=1, keepdim=True)
    return docs.matmul(q).argsort(descending=True, stable=True)[:min(k, len(docs))].tolist()


def search_numpy(query_embedding, document_embeddings, k):
    q, docs = query_embedding.numpy(), document_embeddings.numpy()
    sims = docs @ q / (np.linalg.norm(docs, axis=1) * np.linalg.norm(q))
    return list(np.argsort(-sims, kind="stable")[:k])  # NumPy ints: plain ints once they leave the function


def search_sorted_loop(query_embedding, document_embeddings, k):
    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    scored = [(cosine(query_embedding, doc), i) for i, doc in enumerate(document_embeddings)]
    return [i for _, i in sorted(scored, key=lambda pair: -pair[0])[:k]]


# ---- wrong

def search_dot_product(query_embedding, document_embeddings, k):
    return torch.topk(document_embeddings @ query_embedding, k).indices.tolist()


def search_euclidean(query_embedding, document_embeddings, k):
    distances = torch.cdist(query_embedding[None], document_embeddings)[0]  # (n,)
    return torch.topk(distances, k, largest=False).indices.tolist()


def search_worst_first(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.argsort(sims)[:k].tolist()


def search_k_plus_one(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.argsort(sims, descending=True)[:k + 1].tolist()


def search_k_minus_one(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.argsort(sims, descending=True)[:k - 1].tolist()


def search_returns_tensor(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.topk(sims, k).indices


def search_returns_similarities(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.topk(sims, k).values.tolist()


def search_one_based(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return [i + 1 for i in torch.argsort(sims, descending=True, stable=True)[:k].tolist()]


def search_list_of_tensors(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return list(torch.topk(sims, k).indices)


def search_sorted_indices(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return sorted(torch.topk(sims, k).indices.tolist())


def search_normalise_dim_0(query_embedding, document_embeddings, k):
    docs = F.normalize(document_embeddings, dim=0)
    return torch.topk(docs @ F.normalize(query_embedding, dim=0), k).indices.tolist()


def search_topk(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    return torch.topk(sims, min(k, len(sims))).indices.tolist()  # k > n handled, ties in topk's order


def search_topk_k_too_large(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings)
    order = torch.sort(sims, descending=True, stable=True).indices
    return order[:k].tolist() if k <= len(sims) else torch.topk(sims, k).indices.tolist()  # crashes past n


def search_reverse_sorted_pairs(query_embedding, document_embeddings, k):
    sims = _cosines(query_embedding, document_embeddings).tolist()
    return [i for _, i in sorted(zip(sims, range(len(sims))), reverse=True)[:k]]  # ties: higher index first


SEARCH_CORRECT = [search_cosine_argsort, search_normalised_argsort, search_numpy, search_sorted_loop]

SEARCH_MISTAKES = [
    pytest.param(search_dot_product, "ranked by the dot product", id="dot-product"),
    pytest.param(search_euclidean, "ranked by Euclidean distance", id="euclidean"),
    pytest.param(search_worst_first, "worst matches first", id="worst-first"),
    pytest.param(search_k_plus_one, "returned k + 1 documents", id="k-plus-1"),
    pytest.param(search_k_minus_one, "returned k - 1 documents", id="k-minus-1"),
    pytest.param(search_returns_tensor, "use .tolist()", id="tensor"),
    pytest.param(search_returns_similarities, "similarity scores of the k best documents, not their indices",
                 id="similarities"),
    pytest.param(search_one_based, "indices start at 1", id="one-based"),
    pytest.param(search_list_of_tensors, "a list of tensors", id="list-of-tensors"),
    pytest.param(search_sorted_indices, "sorted the chosen indices", id="sorted-indices"),
    pytest.param(search_normalise_dim_0, "along dim 0", id="normalised-dim-0"),
    pytest.param(search_reverse_sorted_pairs, "documents of equal similarity were not put lower index first",
                 id="ties-higher-index-first"),
    pytest.param(search_topk_k_too_large, "the rule is to return every document then", id="topk-k-too-large"),
]


@pytest.mark.parametrize("fn", SEARCH_CORRECT, ids=lambda f: f.__name__)
def test_search_accepts_other_correct_answers(fn):
    result = check("semantic_search", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SEARCH_MISTAKES)
def test_search_names_the_mistake(fn, phrase):
    assert_fails_naming(check("semantic_search", fn), phrase)


def _search_cases_visible_and_hidden():
    return scale.search_cases() + grader.hidden.load_hidden_cases("semantic_search", SOLUTION_DIR)


def test_search_cases_have_no_near_ties(hidden_dir):
    """Consecutive cosine similarities up to rank k + 1 are exactly equal (a tie the text's rule decides) or differ
    by more than float32 noise."""
    for case in _search_cases_visible_and_hidden():
        query, docs, k = case.args
        ranked = torch.sort(scale.cosine_scores(query, docs), descending=True).values
        gaps = (ranked[:-1] - ranked[1:])[:k]
        assert all(gap == 0 or gap > 1e-3 for gap in gaps.tolist()), case.label


def test_search_ties_are_exact_in_float32():
    """The tied documents of the visible and hidden cases tie in float32 too, however the cosine is computed."""
    ties = [case for case in _search_cases_visible_and_hidden() if "ties" in case.label]
    assert len(ties) == 2
    for case in ties:
        query, docs, _ = case.args
        for fn in (lambda q, d: F.cosine_similarity(d, q[None], dim=-1),
                   lambda q, d: d @ q / (d.norm(dim=1) * q.norm()),
                   lambda q, d: F.normalize(d, dim=-1) @ F.normalize(q, dim=-1)):
            sims = fn(query, docs).tolist()
            assert len(set(sims)) < len(sims), case.label


def test_search_topk_fails_only_on_the_tie_case_or_passes():
    """torch.topk with k capped is right except for the order of ties, which only the tie case can show."""
    result = check("semantic_search", search_topk)
    failed = [c.label for c in result.cases if not c.passed]
    assert all("ties" in label for label in failed), failed


def test_search_cases_tell_cosine_from_dot_product_and_distance():
    """In most visible cases the dot-product and the distance rankings differ from the cosine one."""
    dot, distance = scale.search_mistakes()[:2]
    differs = [(case.call(dot.make) != judge, case.call(distance.make) != judge)
               for case in scale.search_cases() for judge in [scale._best_first(scale.cosine_scores(*case.args[:2]),
                                                                                case.args[2])]]
    assert sum(d for d, _ in differs) >= 3 and sum(e for _, e in differs) >= 3


# =============================================================== the API around a check

def test_search_accepts_a_tuple_of_ints():
    result = check("semantic_search", lambda q, d, k: tuple(search_cosine_argsort(q, d, k)))
    assert result.passed, result.feedback


# =============================================================== hidden checks

def _fitted(name, reference):
    """An answer fitted to the visible cases: it looks up their results and returns 0 otherwise."""
    fn = reference_fn(reference, name)

    def key(args):
        return repr([(tuple(a.shape), round(float(a.sum()), 3)) if isinstance(a, torch.Tensor) else a for a in args])

    table = {key(case.args + tuple(case.kwargs.values())): case.call(fn)
             for case in grader.get_exercise(name).make_cases()}

    def fitted(*args, **kwargs):
        found = key(args + tuple(kwargs.values()))
        if found in table:
            return table[found]
        return [0] * args[-1] if name == "semantic_search" else {} if name == "plan_training" else 0

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_fitted_answer_passes_the_visible_check(reference, name):
    assert check(name, _fitted(name, reference)).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    right = {"transformer_param_count": param_count_by_parts, "plan_training": plan_step_by_step,
             "semantic_search": search_sorted_loop}[name]
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


def test_hidden_failure_names_the_mistake(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("plan_training", plan_2nd)
    assert "counted 2 FLOPs per parameter and token" in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES
    HIDDEN_WRONG_NAMES_A_MISTAKE = False  # a fitted answer returns a constant off the visible cases

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("transformer_param_count", param_count_untied, id="param-count-untied"),
        pytest.param("transformer_param_count", param_count_three_projections, id="param-count-three-projections"),
        pytest.param("plan_training", plan_2nd, id="plan-2ND"),
        pytest.param("plan_training", plan_no_utilization, id="plan-no-utilization"),
        pytest.param("plan_training", plan_hours, id="plan-hours"),
        pytest.param("plan_training", plan_reversed_ties, id="plan-reversed-ties"),
        pytest.param("plan_training", plan_percent, id="plan-percent"),
        pytest.param("semantic_search", search_reverse_sorted_pairs, id="search-ties-higher-index-first"),
        pytest.param("semantic_search", search_worst_first, id="search-worst-first"),
        pytest.param("semantic_search", search_one_based, id="search-one-based"),
    ]
    ALL_OR_NOTHING = [
        ("transformer_param_count", param_count_closed_formula, param_count_untied),
        ("plan_training", plan_numpy, plan_2nd),
        ("semantic_search", search_normalised_argsort, search_dot_product),
    ]
    GARBAGE = DEFAULT_GARBAGE + [A_MIXED_LIST]

    def hidden_wrong(self, exercise, reference):
        return _fitted(exercise, reference)
