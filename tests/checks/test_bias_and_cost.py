"""Tests for the chapter-06 checks (grader/checks/bias_and_cost.py): pronoun_log_odds, weat_effect_size,
lowest_carbon_plan.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways of writing
  the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its feedback
  names the mistake;
- the toy model and tokenizer of the pronoun check behave like a Hugging Face causal LM where it matters
  (padding, the BOS token, several tokens per word) and pickle; the hidden checks.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of mistakes.
"""

import math
import pickle
import statistics
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from chapter_contract import ChapterContract, assert_fails_naming, reference_fn

import grader
import grader.hidden
from grader import check
from grader.checks.bias_and_cost import LogitsOnly, ToyCausalLM, ToyTokenizer

ASSIGNMENT = "06-bias-and-cost"

EXERCISES = ["pronoun_log_odds", "weat_effect_size", "lowest_carbon_plan"]


# =============================================================== pronoun_log_odds

def _pronoun_ids(tokenizer):
    return (tokenizer.encode(" he", add_special_tokens=False)[0], tokenizer.encode(" she", add_special_tokens=False)[0])


# ---- correct, written in other ways

def pronoun_logits_difference(model, tokenizer, prompts):
    """The log-softmax shifts every logit by the same constant, so the logits' difference is the log-odds."""
    he, she = _pronoun_ids(tokenizer)
    out = []
    for prompt in prompts:
        with torch.no_grad():
            logits = model(tokenizer.encode(prompt, return_tensors="pt")).logits
        out.append(float(logits[0, -1, he] - logits[0, -1, she]))
    return out


def pronoun_left_padded_batch(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logprobs = F.log_softmax(model(**batch).logits[:, -1, :], dim=-1)  # (N, V)
    return (logprobs[:, he] - logprobs[:, she]).tolist()


def pronoun_right_padded_own_last_token(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    last = batch["attention_mask"].sum(dim=1) - 1  # each prompt's own last position
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = logits[torch.arange(len(prompts)), last].log_softmax(-1)
    return [float(logprobs[i, he] - logprobs[i, she]) for i in range(len(prompts))]


def pronoun_math_log_of_softmax(model, tokenizer, prompts):
    he = tokenizer(" he", add_special_tokens=False)["input_ids"][0]
    she = tokenizer(" she", add_special_tokens=False)["input_ids"][0]
    out = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt)])
        probs = torch.softmax(model(ids).logits[0, -1].detach().double(), dim=0)
        out.append(math.log(probs[he].item()) - math.log(probs[she].item()))
    return out


# ---- wrong, as learners write them

def _one_prompt_logprobs(model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, -1], dim=-1)


def pronoun_probabilities(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    return [(_one_prompt_logprobs(model, tokenizer, p).exp()[he] - _one_prompt_logprobs(model, tokenizer, p).exp()[she])
            .item() for p in prompts]


def pronoun_swapped(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    return [(_one_prompt_logprobs(model, tokenizer, p)[she] - _one_prompt_logprobs(model, tokenizer, p)[he]).item()
            for p in prompts]


def pronoun_no_space(model, tokenizer, prompts):
    he = tokenizer.encode("he", add_special_tokens=False)[0]
    she = tokenizer.encode("she", add_special_tokens=False)[0]
    return [(_one_prompt_logprobs(model, tokenizer, p)[he] - _one_prompt_logprobs(model, tokenizer, p)[she]).item()
            for p in prompts]


def pronoun_last_token(model, tokenizer, prompts):
    he = tokenizer.encode(" he", add_special_tokens=False)[-1]
    she = tokenizer.encode(" she", add_special_tokens=False)[-1]
    return [(_one_prompt_logprobs(model, tokenizer, p)[he] - _one_prompt_logprobs(model, tokenizer, p)[she]).item()
            for p in prompts]


def pronoun_token_lookup(model, tokenizer, prompts):
    he, she = tokenizer.convert_tokens_to_ids("Ġhe"), tokenizer.convert_tokens_to_ids("Ġshe")
    return [(_one_prompt_logprobs(model, tokenizer, p)[he] - _one_prompt_logprobs(model, tokenizer, p)[she]).item()
            for p in prompts]


def pronoun_bos_as_first_token(model, tokenizer, prompts):
    he, she = tokenizer(" he").input_ids[0], tokenizer(" she").input_ids[0]
    return [(_one_prompt_logprobs(model, tokenizer, p)[he] - _one_prompt_logprobs(model, tokenizer, p)[she]).item()
            for p in prompts]


def pronoun_first_position(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    out = []
    for p in prompts:
        with torch.no_grad():
            lp = model(tokenizer(p, return_tensors="pt").input_ids).logits[0, 0].log_softmax(-1)
        out.append(float(lp[he] - lp[she]))
    return out


def pronoun_right_padded_batch(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logprobs = model(**batch).logits[:, -1].log_softmax(-1)
    return (logprobs[:, he] - logprobs[:, she]).tolist()


def pronoun_log10(model, tokenizer, prompts):
    he, she = _pronoun_ids(tokenizer)
    out = []
    for p in prompts:
        probs = _one_prompt_logprobs(model, tokenizer, p).exp()
        out.append(math.log10(probs[he].item()) - math.log10(probs[she].item()))
    return out


def pronoun_whole_word(model, tokenizer, prompts):
    out = []
    for p in prompts:
        prompt_ids = tokenizer.encode(p, add_special_tokens=False)
        scores = []
        for word in (" he", " she"):
            word_ids = tokenizer.encode(word, add_special_tokens=False)
            with torch.no_grad():
                lp = model(torch.tensor([prompt_ids + word_ids])).logits[0].log_softmax(-1)
            scores.append(sum(lp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(word_ids)))
        out.append(scores[0] - scores[1])
    return out


def pronoun_mean(model, tokenizer, prompts):
    return float(np.mean(pronoun_logits_difference(model, tokenizer, prompts)))


def pronoun_tensor(model, tokenizer, prompts):
    return torch.tensor(pronoun_logits_difference(model, tokenizer, prompts))


PRONOUN_CORRECT = [pronoun_logits_difference, pronoun_left_padded_batch, pronoun_right_padded_own_last_token,
                   pronoun_math_log_of_softmax]

PRONOUN_MISTAKES = [
    pytest.param(pronoun_probabilities, "probabilities instead of log-probabilities", id="P-not-log-P"),
    pytest.param(pronoun_swapped, "he and she swapped", id="he-she-swapped"),
    pytest.param(pronoun_no_space, "without the leading space", id="no-leading-space"),
    pytest.param(pronoun_last_token, "used the last token", id="last-token-of-the-word"),
    pytest.param(pronoun_token_lookup, "the whole-word token instead of the first token", id="whole-word-token"),
    pytest.param(pronoun_whole_word, "summed the log-probabilities of every token", id="whole-word-sequence"),
    pytest.param(pronoun_bos_as_first_token, "beginning-of-sequence token", id="BOS-as-the-pronoun"),
    pytest.param(pronoun_first_position, "first position", id="logits-at-position-0"),
    pytest.param(pronoun_right_padded_batch, "padding on the right", id="right-padded-batch"),
    pytest.param(pronoun_log10, "log base 10", id="log10"),
    pytest.param(pronoun_mean, "returned the mean over the prompts", id="mean-over-prompts"),
]


@pytest.mark.parametrize("fn", PRONOUN_CORRECT, ids=lambda f: f.__name__)
def test_pronoun_log_odds_accepts_other_correct_answers(fn):
    result = check("pronoun_log_odds", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", PRONOUN_MISTAKES)
def test_pronoun_log_odds_names_the_mistake(fn, phrase):
    assert_fails_naming(check("pronoun_log_odds", fn), phrase)


def test_pronoun_log_odds_returning_a_tensor_says_to_return_a_list():
    feedback = check("pronoun_log_odds", pronoun_tensor).feedback
    assert "return a list of Python floats" in feedback


def test_a_model_assumed_to_be_an_nn_module_gets_a_hint():
    def pronoun_calls_eval(model, tokenizer, prompts):
        model.eval()
        return pronoun_logits_difference(model, tokenizer, prompts)

    result = check("pronoun_log_odds", pronoun_calls_eval)
    assert not result.passed
    assert "may be any callable" in result.feedback
    assert result.n_passed == len(result.cases) - 1  # only the plain-callable case fails


def test_the_first_token_rule_matters_in_the_visible_cases():
    """At least one case cuts ' she' into several tokens and one cuts ' he', and one adds a BOS token."""
    tokenizers = [case.args[1] for case in grader.get_exercise("pronoun_log_odds").make_cases()]
    assert any(len(t.encode(" she", add_special_tokens=False)) > 1 for t in tokenizers)
    assert any(len(t.encode(" he", add_special_tokens=False)) > 1 for t in tokenizers)
    assert any(t.encode("x") != t.encode("x", add_special_tokens=False) for t in tokenizers)


# ---- the toy model and tokenizer

def _toy():
    tokenizer = ToyTokenizer((" he", " the", " nurse", " said", " that", "he", "she"))
    return ToyCausalLM(len(tokenizer), seed=1), tokenizer


def test_toy_tokenizer_pieces_and_round_trip():
    _, tokenizer = _toy()
    assert tokenizer.tokenize(" she") == ["Ġs", "he"]
    assert tokenizer.tokenize(" he") == ["Ġhe"]
    assert tokenizer.decode(tokenizer.encode("The nurse said that she")) == "The nurse said that she"
    bos = ToyTokenizer(add_bos=True)
    assert bos.encode("a")[0] == bos.bos_token_id and bos.encode("a", add_special_tokens=False)[0] != bos.bos_token_id
    assert bos.decode(bos.encode("hi"), skip_special_tokens=True) == "hi"


def test_toy_model_left_padding_and_bos_do_not_change_the_prediction():
    model, tokenizer = _toy()
    prompts = ["The nurse said that", "said"]
    alone = [model(tokenizer.encode(p, return_tensors="pt")).logits[0, -1] for p in prompts]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    left = model(**batch).logits[:, -1]
    for i in range(2):
        assert torch.allclose(left[i], alone[i], atol=1e-6)
    with_bos = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode(prompts[0])])
    assert torch.allclose(model(with_bos).logits[0, -1], alone[0], atol=1e-6)
    tokenizer.padding_side = "right"
    right = model(**tokenizer(prompts, return_tensors="pt", padding=True)).logits[:, -1]
    assert not torch.allclose(right[1], alone[1], atol=1e-3)  # the short prompt's last position is padding


def test_toy_model_needs_a_batch_dimension():
    model, tokenizer = _toy()
    with pytest.raises(ValueError, match=r"\(batch, T\)"):
        model(torch.tensor(tokenizer.encode("The nurse")))


def test_plain_callable_is_not_a_module():
    model, _ = _toy()
    plain = LogitsOnly(model)
    assert not hasattr(plain, "eval") and not hasattr(plain, "device")
    assert plain(torch.tensor([[5, 6]])).logits.shape == (1, 2, len(_toy()[1]))


@pytest.mark.parametrize("name", EXERCISES)
def test_cases_pickle(name):
    """Cases are built in the grading process and sent to a child: they must pickle and come back equal."""
    cases = grader.get_exercise(name).make_cases()
    restored = pickle.loads(pickle.dumps(cases))
    assert [c.label for c in restored] == [c.label for c in cases]
    if name == "pronoun_log_odds":
        from grader.checks.bias_and_cost import reference_log_odds
        for before, after in zip(cases, restored):
            assert reference_log_odds(*before.args) == reference_log_odds(*after.args)


# =============================================================== weat_effect_size

# ---- correct

def weat_numpy(X, Y, A, B):
    X, Y, A, B = (np.asarray(t, dtype=np.float64) for t in (X, Y, A, B))

    def s(W):
        W = W / np.linalg.norm(W, axis=1, keepdims=True)
        a = A / np.linalg.norm(A, axis=1, keepdims=True)
        b = B / np.linalg.norm(B, axis=1, keepdims=True)
        return (W @ a.T).mean(axis=1) - (W @ b.T).mean(axis=1)

    sx, sy = s(X), s(Y)
    spread = np.concatenate([sx, sy]).std(ddof=1)
    if spread == 0:
        raise ValueError("zero spread")
    return float((sx.mean() - sy.mean()) / spread)


def weat_loops(X, Y, A, B):
    X, Y, A, B = (torch.as_tensor(t).float() for t in (X, Y, A, B))

    def s(w):
        to_a = [F.cosine_similarity(w, a, dim=0).item() for a in A]
        to_b = [F.cosine_similarity(w, b, dim=0).item() for b in B]
        return sum(to_a) / len(to_a) - sum(to_b) / len(to_b)

    sx, sy = [s(x) for x in X], [s(y) for y in Y]
    try:
        return (statistics.mean(sx) - statistics.mean(sy)) / statistics.stdev(sx + sy)
    except ZeroDivisionError:
        raise ValueError("every s(w) is equal") from None


def weat_normalize_then_einsum(X, Y, A, B):
    X, Y, A, B = (F.normalize(torch.as_tensor(t, dtype=torch.float64), dim=-1) for t in (X, Y, A, B))
    s_all = torch.einsum("wd,ad->wa", torch.cat([X, Y]), A).mean(-1) - torch.einsum("wd,bd->wb", torch.cat([X, Y]),
                                                                                    B).mean(-1)
    sx, sy = s_all[:len(X)], s_all[len(X):]
    if s_all.std() == 0:
        raise ValueError("undefined")
    return float((sx.mean() - sy.mean()) / s_all.std())


# ---- wrong

def _cos(W, V):
    W, V = np.asarray(W, dtype=np.float64), np.asarray(V, dtype=np.float64)
    return (W / np.linalg.norm(W, axis=1, keepdims=True)) @ (V / np.linalg.norm(V, axis=1, keepdims=True)).T


def _s(W, A, B):
    return _cos(W, A).mean(1) - _cos(W, B).mean(1)


def weat_population_std(X, Y, A, B):
    sx, sy = _s(X, A, B), _s(Y, A, B)
    return float((sx.mean() - sy.mean()) / np.std(np.concatenate([sx, sy])))


def weat_dot_products(X, Y, A, B):
    X, Y, A, B = (np.asarray(t, dtype=np.float64) for t in (X, Y, A, B))
    sx = (X @ A.T).mean(1) - (X @ B.T).mean(1)
    sy = (Y @ A.T).mean(1) - (Y @ B.T).mean(1)
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def weat_normalise_columns(X, Y, A, B):
    X, Y, A, B = (F.normalize(torch.as_tensor(t, dtype=torch.float64), dim=0) for t in (X, Y, A, B))
    sx = (X @ A.T).mean(1) - (X @ B.T).mean(1)
    sy = (Y @ A.T).mean(1) - (Y @ B.T).mean(1)
    return ((sx.mean() - sy.mean()) / torch.cat([sx, sy]).std()).item()


def weat_y_minus_x(X, Y, A, B):
    sx, sy = _s(X, A, B), _s(Y, A, B)
    return float((sy.mean() - sx.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def weat_absolute(X, Y, A, B):
    return abs(weat_numpy(X, Y, A, B))


def weat_no_std(X, Y, A, B):
    return float(_s(X, A, B).mean() - _s(Y, A, B).mean())


def weat_pooled_std(X, Y, A, B):
    sx, sy = _s(X, A, B), _s(Y, A, B)
    pooled = math.sqrt(((len(sx) - 1) * sx.var(ddof=1) + (len(sy) - 1) * sy.var(ddof=1)) / (len(sx) + len(sy) - 2))
    return float((sx.mean() - sy.mean()) / pooled)


def weat_test_statistic(X, Y, A, B):
    return float(_s(X, A, B).sum() - _s(Y, A, B).sum())


def weat_zip_pairs(X, Y, A, B):
    def s(w):
        return np.mean([c_a - c_b for c_a, c_b in zip(_cos([w], A)[0], _cos([w], B)[0])])

    sx = np.array([s(x) for x in np.asarray(X)])
    sy = np.array([s(y) for y in np.asarray(Y)])
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def weat_std_of_x(X, Y, A, B):
    sx, sy = _s(X, A, B), _s(Y, A, B)
    return float((sx.mean() - sy.mean()) / sx.std(ddof=1))


WEAT_CORRECT = [weat_numpy, weat_loops, weat_normalize_then_einsum]

WEAT_MISTAKES = [
    pytest.param(weat_population_std, "population standard deviation", id="population-std"),
    pytest.param(weat_dot_products, "cosine without normalising", id="dot-products"),
    pytest.param(weat_normalise_columns, "normalised along the wrong axis", id="normalised-columns"),
    pytest.param(weat_y_minus_x, "the sign is flipped", id="Y-minus-X"),
    pytest.param(weat_absolute, "absolute value", id="absolute-value"),
    pytest.param(weat_no_std, "forgot to divide by the standard deviation", id="no-std"),
    pytest.param(weat_pooled_std, "pooled within-group standard deviation", id="pooled-std"),
    pytest.param(weat_test_statistic, "test statistic", id="test-statistic"),
    pytest.param(weat_zip_pairs, "paired A and B", id="zip-A-B"),
    pytest.param(weat_std_of_x, "standard deviation over X only", id="std-of-X"),
]


@pytest.mark.parametrize("fn", WEAT_CORRECT, ids=lambda f: f.__name__)
def test_weat_accepts_other_correct_answers(fn):
    result = check("weat_effect_size", fn)
    assert result.passed, result.feedback


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 0 / 0 in the zero-spread case: nan, as the answers written
@pytest.mark.parametrize("fn, phrase", WEAT_MISTAKES)
def test_weat_names_the_mistake(fn, phrase):
    assert_fails_naming(check("weat_effect_size", fn), phrase)


def weat_nan_on_zero_spread(X, Y, A, B):
    """Right everywhere except that it returns nan where the text asks for a ValueError."""
    try:
        return weat_numpy(X, Y, A, B)
    except ValueError:
        return float("nan")


def test_weat_zero_spread_needs_a_value_error():
    result = check("weat_effect_size", weat_nan_on_zero_spread)
    assert_fails_naming(result, "no ValueError for zero spread")
    assert [c.passed for c in result.cases].count(False) == 1


def test_weat_torch_only_code_on_numpy_inputs_gets_a_hint():
    def weat_torch_only(X, Y, A, B):
        return X.norm(dim=1)  # a NumPy array has no .norm

    feedback = check("weat_effect_size", weat_torch_only).feedback
    assert "torch.as_tensor" in feedback


def test_weat_matches_the_published_definition_on_a_hand_example():
    """Two attributes on the axes, targets at known angles: s(w) = cos to A - cos to B, worked out by hand."""
    from grader.checks.bias_and_cost import weat_variant

    A, B = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    X = np.array([[1.0, 0.0], [2.0, 2.0]])  # s = 1, 0
    Y = np.array([[0.0, 3.0], [1.0, 1.0]])  # s = -1, 0
    s = np.array([1.0, 0.0, -1.0, 0.0])
    assert math.isclose(weat_variant(X, Y, A, B), (0.5 - (-0.5)) / s.std(ddof=1))


# =============================================================== lowest_carbon_plan

# ---- correct, written in other ways

def plan_best_so_far(train_flops, hardware, regions, deadline_days):
    """One pass keeping the best plan so far, with the tie rule as a comparison; energy through joules."""
    if len(hardware) == 0 or len(regions) == 0:
        raise ValueError("empty")
    best, fastest = None, math.inf
    for name, h in sorted(hardware.items()):
        seconds = train_flops / (h["devices"] * h["peak_flops"] * h["mfu"])
        days = seconds / 86_400
        fastest = min(fastest, days)
        if days > deadline_days:
            continue
        for region, r in sorted(regions.items()):
            joules = h["devices"] * h["watts"] * seconds * r["pue"]
            mwh = joules / 3.6e9
            plan = {"hardware": name, "region": region, "days": days, "mwh": mwh, "tco2e": mwh * r["kg_co2e_per_kwh"]}
            if best is None or (plan["tco2e"] < best["tco2e"] and not math.isclose(plan["tco2e"], best["tco2e"],
                                                                                  rel_tol=1e-9)):
                best = plan
            elif math.isclose(plan["tco2e"], best["tco2e"], rel_tol=1e-9) and plan["days"] < best["days"]:
                best = plan
    if best is None:
        raise ValueError(f"fastest: {fastest} days")
    return best


def plan_numpy(train_flops, hardware, regions, deadline_days):
    if not (hardware and regions):
        raise ValueError("nothing to choose from")
    names = [(h, r) for h in hardware for r in regions]
    days = np.array([train_flops / (hardware[h]["devices"] * hardware[h]["peak_flops"] * hardware[h]["mfu"]) / 86_400
                     for h, r in names])
    kw = np.array([hardware[h]["devices"] * hardware[h]["watts"] / 1000 * regions[r]["pue"] for h, r in names])
    mwh = kw * days * 24 / 1000
    t = mwh * np.array([regions[r]["kg_co2e_per_kwh"] for h, r in names])
    ok = days <= deadline_days
    if not ok.any():
        raise ValueError(f"the fastest plan needs {days.min():.1f} days")
    tied = [i for i in np.flatnonzero(ok) if np.isclose(t[i], t[ok].min(), rtol=1e-9, atol=0)]
    i = min(tied, key=lambda i: (days[i], names[i]))
    return {"hardware": names[i][0], "region": names[i][1], "days": float(days[i]), "mwh": float(mwh[i]),
            "tco2e": float(t[i])}


# ---- wrong, as learners write them

def _plans(train_flops, hardware, regions, pue=True, mfu=True, kwh=False):
    if not hardware or not regions:
        raise ValueError("empty")
    plans = []
    for h_name, h in hardware.items():
        days = train_flops / (h["devices"] * h["peak_flops"] * (h["mfu"] if mfu else 1)) / 86_400
        for r_name, r in regions.items():
            energy = h["devices"] * h["watts"] * days * 24 * (r["pue"] if pue else 1) / (1e3 if kwh else 1e6)
            plans.append({"hardware": h_name, "region": r_name, "days": days, "mwh": energy,
                          "tco2e": energy * r["kg_co2e_per_kwh"]})
    return plans


def _pick(plans, deadline_days, key="tco2e", deadline=True, tie_key=lambda p: (p["days"], p["hardware"], p["region"])):
    ok = [p for p in plans if p["days"] <= deadline_days or not deadline]
    if not ok:
        raise ValueError(f"fastest {min(p['days'] for p in plans):.2f} days")
    least = min(p[key] for p in ok)
    return min([p for p in ok if math.isclose(p[key], least, rel_tol=1e-9)], key=tie_key)


def plan_no_pue(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions, pue=False), deadline_days)


def plan_no_mfu(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions, mfu=False), deadline_days)


def plan_kwh(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions, kwh=True), deadline_days)


def plan_ignores_deadline(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions), deadline_days, deadline=False)


def plan_least_energy(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions), deadline_days, key="mwh")


def plan_ties_alphabetical(train_flops, hardware, regions, deadline_days):
    return _pick(_plans(train_flops, hardware, regions), deadline_days,
                 tie_key=lambda p: (p["hardware"], p["region"]))


def plan_message_without_days(train_flops, hardware, regions, deadline_days):
    try:
        return plan_numpy(train_flops, hardware, regions, deadline_days)
    except ValueError:
        raise ValueError("no plan meets the deadline") from None


PLAN_CORRECT = [plan_best_so_far, plan_numpy]

PLAN_MISTAKES = [
    pytest.param(plan_no_pue, "forgot the PUE", id="no-PUE"),
    pytest.param(plan_no_mfu, "forgot the MFU", id="no-MFU"),
    pytest.param(plan_kwh, "kWh/MWh slip", id="kWh"),
    pytest.param(plan_ignores_deadline, "ignored the deadline", id="deadline-ignored"),
    pytest.param(plan_least_energy, "least energy (MWh) instead of the least carbon", id="least-energy"),
    pytest.param(plan_ties_alphabetical, "ties broken wrong", id="ties-alphabetical"),
    pytest.param(plan_message_without_days, "should give the fastest plan's days", id="message-without-days"),
]


@pytest.mark.parametrize("fn", PLAN_CORRECT, ids=lambda f: f.__name__)
def test_plan_accepts_other_correct_answers(fn):
    result = check("lowest_carbon_plan", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", PLAN_MISTAKES)
def test_plan_names_the_mistake(fn, phrase):
    assert_fails_naming(check("lowest_carbon_plan", fn), phrase)


def test_gpt3_plan_from_patterson_et_al_inputs(reference):
    """10,000 V100s x 14.8 days x 330 W x PUE 1.1 x 0.429 kg/kWh: 1,289 MWh and 553 t (published, with the days
    rounded: 1,287 MWh and 552 t)."""
    from grader.checks.bias_and_cost import GPT3_FLOPS, GPT3_REGION, GPT3_V100

    plan = reference_fn(reference, "lowest_carbon_plan")(GPT3_FLOPS, {"V100": GPT3_V100}, {"OK": GPT3_REGION}, 30)
    assert plan["days"] == pytest.approx(14.8)
    assert round(plan["mwh"]) == 1_289 and round(plan["tco2e"]) == 553
    assert plan["mwh"] == pytest.approx(1_287, rel=3e-3) and plan["tco2e"] == pytest.approx(552, rel=3e-3)


def test_plan_returned_as_a_tuple_is_told_the_dict():
    feedback = check("lowest_carbon_plan", lambda *a: ("A100", "north", 1.0, 2.0, 3.0)).feedback
    assert "expected a dict with the keys hardware, region, days, mwh, tco2e" in feedback


def test_plan_raising_where_a_plan_exists_says_so():
    def always_raises(train_flops, hardware, regions, deadline_days):
        raise ValueError("no plan")

    assert "but a plan meets the deadline" in check("lowest_carbon_plan", always_raises).feedback


# =============================================================== the API around a check

RIGHT = {"pronoun_log_odds": pronoun_logits_difference, "weat_effect_size": weat_numpy,
         "lowest_carbon_plan": plan_numpy}
WRONG = {"pronoun_log_odds": pronoun_swapped, "weat_effect_size": weat_population_std,
         "lowest_carbon_plan": plan_ignores_deadline}


@pytest.mark.parametrize("name", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(name):
    check(name, RIGHT[name])  # warm-up
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    start = time.perf_counter()
    check(name, WRONG[name])  # a failing check names mistakes too
    elapsed = time.perf_counter() - start
    assert torch.equal(torch.rand(3), expected_draw), "the check moved the global random stream"
    assert elapsed < 5.0, f"check({name!r}) took {elapsed:.2f} s"


def test_a_scalar_returned_as_a_tensor_says_use_item():
    feedback = check("weat_effect_size", lambda X, Y, A, B: torch.tensor(weat_numpy(X, Y, A, B),
                                                                          dtype=torch.float64)).feedback
    assert "use .item()" in feedback


def test_a_crash_is_reported_with_the_learners_line():
    def weat_effect_size(X, Y, A, B):
        return undefined_spread  # noqa: F821

    feedback = check("weat_effect_size", weat_effect_size).feedback
    assert "NameError" in feedback and "undefined_spread" in feedback
    assert "Traceback" not in feedback


# =============================================================== hidden checks

def _key(args) -> tuple:
    """What tells one case's inputs from another's: shapes of arrays, prompts, numbers."""
    key = []
    for a in args:
        if isinstance(a, (torch.Tensor, np.ndarray)):
            key.append(("array", tuple(a.shape)))
        elif isinstance(a, list):
            key.append(("prompts", tuple(a)))
        elif isinstance(a, (int, float)):
            key.append(("number", a))
        else:
            key.append(("object", type(a).__name__))
    return tuple(key)


def fitted_to_the_visible_cases(name):
    """Right on inputs like a visible case's, wrong on any other: what hidden cases must catch."""
    visible = {_key(case.args) for case in grader.get_exercise(name).make_cases()}

    def fitted(*args, **kwargs):
        fn = RIGHT[name] if _key(args) in visible else WRONG[name]
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


def test_hidden_pronoun_cases_need_the_first_token_rule(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("pronoun_log_odds", pronoun_last_token)
    assert "used the last token" in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

def _named(fn, name):
    return pytest.param(name, fn, id=fn.__name__)


class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES

    NAMED_MISTAKES = [
        _named(pronoun_probabilities, "pronoun_log_odds"), _named(pronoun_swapped, "pronoun_log_odds"),
        _named(pronoun_no_space, "pronoun_log_odds"), _named(pronoun_last_token, "pronoun_log_odds"),
        _named(pronoun_token_lookup, "pronoun_log_odds"), _named(pronoun_bos_as_first_token, "pronoun_log_odds"),
        _named(pronoun_right_padded_batch, "pronoun_log_odds"), _named(pronoun_whole_word, "pronoun_log_odds"),
        _named(weat_population_std, "weat_effect_size"), _named(weat_dot_products, "weat_effect_size"),
        _named(weat_zip_pairs, "weat_effect_size"), _named(weat_pooled_std, "weat_effect_size"),
        _named(plan_no_pue, "lowest_carbon_plan"), _named(plan_no_mfu, "lowest_carbon_plan"),
        _named(plan_ignores_deadline, "lowest_carbon_plan"), _named(plan_least_energy, "lowest_carbon_plan"),
        _named(plan_ties_alphabetical, "lowest_carbon_plan"), _named(plan_kwh, "lowest_carbon_plan"),
    ]
    ALL_OR_NOTHING = [(name, RIGHT[name], WRONG[name]) for name in EXERCISES]

    def hidden_wrong(self, exercise, reference):
        return WRONG[exercise]
