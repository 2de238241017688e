"""Tests for the chapter-09 checks (grader/checks/evaluating_llms.py): score_choices, multiple_choice_grade,
grade_chain_of_thought.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer (for score_choices: a copied or a cropped cache, every token fed, the old
  `past_key_values` names);
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake (for score_choices also a right answer that reads the prompt again for each
  choice, the lesson's padded batch, and a call of the lesson's harness, which is refused);
- the checks' references agree with independent readings: score_choices' full recomputation with the
  lesson's harness (llmcourse.evaluation.choice_logprobs), multiple_choice_grade with numpy's argmax, the
  final answer with a regex;
- an answer to multiple_choice_grade that differs only on tied examples is named as a tie, not as another
  mistake;
- the hidden checks pass the reference and fail an answer fitted to the visible cases.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

import copy
import hashlib
import random
import re
import statistics

import numpy as np
import pytest
import torch
from chapter_contract import A_MIXED_LIST, DEFAULT_GARBAGE, ChapterContract, assert_fails_naming, reference_fn

import grader
import grader.hidden
from grader import check
from grader.checks import evaluating_llms as evaluation
from grader.core import Case
from grader.forbidden import ANSWER_READER, HARNESS_SCORING, MULTIPLE_CHOICE_HARNESS

ASSIGNMENT = "09-evaluating-llms"

EXERCISES = ["score_choices", "multiple_choice_grade", "grade_chain_of_thought"]


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [4, 2, 2]


# =============================================================== the references against independent readings

def test_score_reference_agrees_with_the_lessons_harness():
    """The check's full recomputation per choice and the harness's batched cache give the same scores."""
    from llmcourse import evaluation as harness

    for case in evaluation.score_cases():
        model, tokenizer, prompt, choices = case.args
        theirs = harness.choice_logprobs(model.lm, tokenizer, prompt, choices)
        ours = evaluation.choice_scores(model, tokenizer, prompt, choices)
        assert ours == pytest.approx(theirs, abs=1e-4), case.label


def test_the_checks_model_spreads_the_choices_apart():
    """A wide initialisation: the choices' scores differ by far more than the tolerance, so mistakes show."""
    case = evaluation.score_cases()[1]
    scores = evaluation.choice_scores(*case.args)
    gaps = [abs(a - b) for i, a in enumerate(scores) for b in scores[i + 1:]]
    assert min(gaps) > 100 * evaluation.SCORE_ATOL


def test_the_tokenizer_boundary_and_bos_matter():
    tokenizer = evaluation.ChoiceTokenizer()
    assert tokenizer.tokenize("A: Paris") == ["A", ": ", "Paris"]
    assert tokenizer.tokenize("A:") + tokenizer.tokenize(" Paris") == ["A", ":", " Paris"]
    assert tokenizer.encode("up")[0] == tokenizer.bos_token_id != tokenizer.encode("up", add_special_tokens=False)[0]


def test_multiple_choice_reference_breaks_ties_like_numpy_argmax():
    rng = random.Random(0)
    for _ in range(200):
        m = rng.randint(2, 6)
        scores = [float(rng.randint(-3, 0)) for _ in range(m)]  # small integers: many ties
        targets = {f"c{j}": rng.random() for j in range(m)}
        expected = list(targets.values())[int(np.argmax(scores))]
        assert evaluation.reference_multiple_choice_grade([scores], [targets]) == expected


def test_final_answer_reference_agrees_with_a_regex_reading():
    texts = [text for case in evaluation.cot_cases() for text in case.args[0]]
    for text in texts:
        found = re.search(r".*the answer is([^\n]*)", text, flags=re.IGNORECASE | re.DOTALL)  # greedy: the last
        expected = re.sub(r"\.$", "", found.group(1).strip()) if found else None
        assert evaluation.reference_final_answer(text) == expected, text


# =============================================================== score_choices

# ---- correct, written in other ways

def score_crop(model, tokenizer, prompt, choices, length_normalize=False):
    """One cache for every choice, the choice's tokens cropped off again after each."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    scores = []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt_ids]))
        cache, last = out.cache, torch.log_softmax(out.logits[0, -1], dim=-1)
        for choice in choices:
            ids = tokenizer.encode(" " + choice, add_special_tokens=False)
            logprobs = [last[ids[0]]]
            if len(ids) > 1:
                step = torch.log_softmax(model(input_ids=torch.tensor([ids[:-1]]), cache=cache).logits[0], dim=-1)
                logprobs += [step[j, ids[j + 1]] for j in range(len(ids) - 1)]
                cache.crop(-(len(ids) - 1))  # transformers 5: a negative count of tokens to drop
            total = float(sum(logprobs))
            scores.append(total / len(ids) if length_normalize else total)
    return scores


def score_feed_everything(model, tokenizer, prompt, choices, length_normalize=False):
    """Every token of each choice is fed (its last logits unused), within the budget; the old names."""
    torch.set_grad_enabled(False)  # a cache that carries gradients cannot be deep-copied
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids  # (1, P)
    out = model(prompt_ids, use_cache=True)
    result = []
    for choice in choices:
        ids = tokenizer(" " + choice, add_special_tokens=False, return_tensors="pt").input_ids  # (1, n)
        step = model(ids, past_key_values=copy.deepcopy(out.past_key_values))
        logits = torch.cat([out.logits[:, -1:], step.logits[:, :-1]], dim=1).log_softmax(-1)  # (1, n, V)
        per_token = logits[0].gather(1, ids[0][:, None])[:, 0]  # (n,)
        result.append((per_token.mean() if length_normalize else per_token.sum()).item())
    torch.set_grad_enabled(True)
    return result


def score_numpy(model, tokenizer, prompt, choices, length_normalize=False):
    """A learner who converts to NumPy and normalises by hand."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([prompt_ids]))
    scores = []
    for choice in choices:
        ids = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        rows = [out.logits[0, -1].double().numpy()]
        if len(ids) > 1:
            with torch.no_grad():
                more = model(torch.tensor([ids[:-1]]), cache=copy.deepcopy(out.cache)).logits[0].double().numpy()
            rows += list(more)
        terms = [row[t] - np.log(np.exp(row - row.max()).sum()) - row.max() for row, t in zip(rows, ids)]
        scores.append(float(np.mean(terms) if length_normalize else np.sum(terms)))
    return scores


SCORE_CORRECT = [score_crop, score_feed_everything, score_numpy]


# ---- wrong, as learners write them

def _scorer(space=" ", special=False, copy_cache=True, skip_first=False, mean=None, logits=False, shift=False):
    """A learner's score_choices with one slip; the defaults give a right answer."""
    def score_choices(model, tokenizer, prompt, choices, length_normalize=False):
        prompt_ids = tokenizer(prompt, add_special_tokens=special).input_ids
        scores = []
        with torch.no_grad():
            out = model(torch.tensor([prompt_ids]))
            first = out.logits[0, -1] if logits else out.logits[0, -1].log_softmax(-1)
            for choice in choices:
                ids = tokenizer(space + choice, add_special_tokens=special).input_ids
                cache = copy.deepcopy(out.cache) if copy_cache else out.cache
                if shift:  # every token fed, each scored by its own position
                    lp = model(torch.tensor([ids]), cache=cache).logits[0].log_softmax(-1)
                    total = sum(lp[j, t].item() for j, t in enumerate(ids))
                else:
                    total = 0.0 if skip_first else first[ids[0]].item()
                    if len(ids) > 1:
                        lg = model(torch.tensor([ids[:-1]]), cache=cache).logits[0]
                        lp = lg if logits else lg.log_softmax(-1)
                        total += sum(lp[j, ids[j + 1]].item() for j in range(len(ids) - 1))
                normalise = length_normalize if mean is None else mean
                scores.append(total / len(ids) if normalise else total)
        return scores
    return score_choices


score_no_space = _scorer(space="")
score_special_tokens = _scorer(special=True)
score_cache_not_copied = _scorer(copy_cache=False)
score_first_token_skipped = _scorer(skip_first=True)
score_always_mean = _scorer(mean=True)
score_always_sum = _scorer(mean=False)
score_logits = _scorer(logits=True)
score_own_position = _scorer(shift=True)


def score_first_token_only(model, tokenizer, prompt, choices, length_normalize=False):
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    logprobs = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    scores = []
    for choice in choices:
        choice_ids = tokenizer(" " + choice, add_special_tokens=False).input_ids
        scores.append(logprobs[choice_ids[0]].item() / (len(choice_ids) if length_normalize else 1))
    return scores


def score_together(model, tokenizer, prompt, choices, length_normalize=False):
    """Prompt and choice tokenized as one text, the prompt's length taken from the prompt alone."""
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    with torch.no_grad():
        out = model(torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids]))
    scores = []
    for choice in choices:
        ids = tokenizer(prompt + " " + choice, add_special_tokens=False).input_ids
        rest = ids[n_prompt:]
        lp = model(torch.tensor([ids[n_prompt - 1:-1]]), cache=copy.deepcopy(out.cache)).logits[0].log_softmax(-1)
        total = sum(lp[j, t].item() for j, t in enumerate(rest))
        scores.append(total / len(rest) if length_normalize else total)
    return scores


def score_full_pass_per_choice(model, tokenizer, prompt, choices, length_normalize=False):
    """Right values, but the prompt is read again for every choice."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    scores = []
    for choice in choices:
        ids = tokenizer(" " + choice, add_special_tokens=False).input_ids
        lp = model(torch.tensor([prompt_ids + ids])).logits[0].log_softmax(-1)
        total = sum(lp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(ids))
        scores.append(total / len(ids) if length_normalize else total)
    return scores


def score_padded_batch(model, tokenizer, prompt, choices, length_normalize=False):
    """The lesson's batch of all the choices on repeated copies of the cache, right-padded: right values,
    but the padding counts against the budget."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    continuations = [tokenizer(" " + c, add_special_tokens=False).input_ids for c in choices]
    with torch.no_grad():
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        first = out.logits[0, -1].log_softmax(-1)
        width = max(1, max(map(len, continuations)) - 1)
        batch = torch.zeros(len(continuations), width, dtype=torch.long)
        for i, c in enumerate(continuations):
            batch[i, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        cache = out.cache
        cache.batch_repeat_interleave(len(continuations))
        rest = model(batch, cache=cache, use_cache=True).logits.log_softmax(-1)
    sums = [first[c[0]].item() + sum(rest[i, j - 1, c[j]].item() for j in range(1, len(c)))
            for i, c in enumerate(continuations)]
    return [s / len(c) for s, c in zip(sums, continuations)] if length_normalize else sums


def score_with_the_harness(model, tokenizer, prompt, choices, length_normalize=False):
    from llmcourse import evaluation as harness

    return harness.choice_logprobs(model, tokenizer, prompt, choices)


def score_returns_a_tensor(model, tokenizer, prompt, choices, length_normalize=False):
    return torch.tensor(score_crop(model, tokenizer, prompt, choices, length_normalize))


def score_returns_tensors(model, tokenizer, prompt, choices, length_normalize=False):
    return [torch.tensor(s) for s in score_crop(model, tokenizer, prompt, choices, length_normalize)]


def score_one_dimensional_ids(model, tokenizer, prompt, choices, length_normalize=False):
    return model(torch.tensor(tokenizer(prompt, add_special_tokens=False).input_ids)).logits


def score_copies_a_cache_with_gradients(model, tokenizer, prompt, choices, length_normalize=False):
    out = model(torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids]))
    return [copy.deepcopy(out.cache) and 0.0 for _ in choices]  # RuntimeError: not a graph leaf


SCORE_MISTAKES = [
    pytest.param(score_no_space, "without its leading space", id="no-space"),
    pytest.param(score_special_tokens, "tokenized with special tokens", id="special-tokens"),
    pytest.param(score_cache_not_copied, "reused without copying", id="cache-not-copied"),
    pytest.param(score_first_token_skipped, "the first token of each choice was not scored", id="first-skipped"),
    pytest.param(score_first_token_only, "scored only the first token", id="first-only"),
    pytest.param(score_always_mean, "averaged over the choice's tokens although length_normalize is False",
                 id="always-mean"),
    pytest.param(score_always_sum, "returned the sum although length_normalize is True", id="always-sum"),
    pytest.param(score_logits, "added logits, not log-probabilities", id="logits"),
    pytest.param(score_own_position, "logits at its own position", id="own-position"),
    pytest.param(score_together, "tokenized together", id="together"),
    pytest.param(score_full_pass_per_choice, "run the prompt once", id="prompt-per-choice"),
    pytest.param(score_padded_batch, "run the prompt once", id="padded-batch"),
    pytest.param(score_with_the_harness, "calls `llmcourse.evaluation.choice_logprobs`", id="harness"),
    pytest.param(score_returns_a_tensor, "returned a tensor", id="a-tensor"),
    pytest.param(score_returns_tensors, "the scores are tensors", id="tensors"),
    pytest.param(score_one_dimensional_ids, "a tensor of shape (1, T)", id="1-d-ids"),
    pytest.param(score_copies_a_cache_with_gradients, "torch.no_grad()", id="copy-with-gradients"),
]


@pytest.mark.parametrize("fn", SCORE_CORRECT, ids=lambda f: f.__name__)
def test_score_accepts_other_correct_answers(fn):
    result = check("score_choices", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", SCORE_MISTAKES)
def test_score_names_the_mistake(fn, phrase):
    assert_fails_naming(check("score_choices", fn), phrase)


def test_a_cache_not_copied_gets_the_first_choice_right_and_fails_only_with_several():
    result = check("score_choices", score_cache_not_copied)
    passed = [c.label for c in result.cases if c.passed]
    assert passed == ["two choices of one token each", "a single choice of several tokens, length_normalize=True"]


def test_the_harness_is_refused_under_every_name_it_is_built_from():
    from llmcourse import evaluation as harness

    def by_read(model, tokenizer, prompt, choices, length_normalize=False):
        context = harness.read(model, harness.encode(tokenizer, prompt))
        return harness.continuation_logprobs(model, context, [harness.encode(tokenizer, " " + c) for c in choices])

    result = check("score_choices", by_read)
    assert list(result.mistakes) == [HARNESS_SCORING.mistake]
    assert "`llmcourse.evaluation.read` is what this exercise builds" in result.feedback


def test_the_token_count_sees_every_call_and_the_cache_each_one_started_from():
    case = evaluation.score_cases()[1]
    _, observations = case.run(score_crop)
    prompt_tokens = len(evaluation.ChoiceTokenizer().encode(case.args[2], add_special_tokens=False))
    assert observations["calls"][0] == [1, prompt_tokens, 0]
    assert {cached for _, _, cached in observations["calls"][1:]} == {prompt_tokens}
    _, observations = case.run(score_cache_not_copied)
    assert evaluation._reused_cache(observations)


def test_every_named_score_mistake_changes_a_visible_score():
    """Each switch of the check's model of a mistake gives other scores than the reference on some visible case."""
    cases = evaluation.score_cases()
    for mistake in evaluation.score_mistakes("", []):
        assert any(not evaluation._same_scores(
            evaluation.choice_scores(*c.args, evaluation._length_normalize(c), **mistake.switches),
            evaluation.choice_scores(*c.args, evaluation._length_normalize(c))) for c in cases), mistake.switches


# =============================================================== multiple_choice_grade

# ---- correct, written in other ways

def mcg_numpy(choice_scores, target_scores):
    earned = [list(t.values())[int(np.argmax(s))] for s, t in zip(choice_scores, target_scores)]
    return float(np.mean(earned))


def mcg_by_choice_name(choice_scores, target_scores):
    total = 0
    for scores, targets in zip(choice_scores, target_scores):
        names = list(targets.keys())
        best = scores.index(max(scores))  # index() finds the first maximum
        total += targets[names[best]]
    return total / len(target_scores)


def mcg_torch(choice_scores, target_scores):
    earned = [torch.tensor(list(t.values()))[torch.tensor(s).argmax()] for s, t in zip(choice_scores, target_scores)]
    return torch.stack(earned).double().mean().item()  # torch's argmax also returns the first maximum


def mcg_statistics(choice_scores, target_scores):
    def first_best(scores):
        best = 0
        for i in range(1, len(scores)):
            if scores[i] > scores[best]:
                best = i
        return best
    return statistics.mean(list(t.values())[first_best(s)] for s, t in zip(choice_scores, target_scores))


# ---- wrong, as learners write them

def mcg_argmin(choice_scores, target_scores):
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        total += list(targets.values())[scores.index(min(scores))]
    return total / len(choice_scores)


def mcg_mean_of_targets(choice_scores, target_scores):
    return float(np.mean([np.mean(list(t.values())) for t in target_scores]))


def mcg_last_on_tie(choice_scores, target_scores):
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        best = len(scores) - 1 - scores[::-1].index(max(scores))
        total += list(targets.values())[best]
    return total / len(choice_scores)


def mcg_sorted_choices(choice_scores, target_scores):
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        choice = sorted(targets)[int(np.argmax(scores))]
        total += targets[choice]
    return total / len(choice_scores)


def mcg_right_or_wrong(choice_scores, target_scores):
    correct = 0
    for scores, targets in zip(choice_scores, target_scores):
        values = list(targets.values())
        correct += values[int(np.argmax(scores))] == max(values)
    return correct / len(choice_scores)


def mcg_sum(choice_scores, target_scores):
    return float(sum(list(t.values())[int(np.argmax(s))] for s, t in zip(choice_scores, target_scores)))


def mcg_percent(choice_scores, target_scores):
    return 100 * mcg_numpy(choice_scores, target_scores)


def mcg_per_example(choice_scores, target_scores):
    return [list(t.values())[int(np.argmax(s))] for s, t in zip(choice_scores, target_scores)]


def mcg_dict_values_indexed(choice_scores, target_scores):
    total = 0
    for scores, targets in zip(choice_scores, target_scores):
        total += targets.values()[int(np.argmax(scores))]  # dict_values is not subscriptable
    return total / len(choice_scores)


def mcg_max_of_pairs(choice_scores, target_scores):
    """max over (score, name) pairs: on a tie the alphabetically largest name wins."""
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        _, name = max(zip(scores, targets))
        total += targets[name]
    return total / len(choice_scores)


def mcg_bigbench_hash(choice_scores, target_scores):
    """BIG-bench's own tie-break (bigbench/api/task_metrics.py): among the tied, one chosen by a hash."""
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        array = np.array(scores)
        tied = np.arange(len(array))[array == np.max(array)]
        best = tied[int(hashlib.sha256(array.tobytes()).hexdigest(), 16) % len(tied)]
        total += list(targets.values())[best]
    return total / len(choice_scores)


MCG_CORRECT = [mcg_numpy, mcg_by_choice_name, mcg_torch, mcg_statistics]

MCG_MISTAKES = [
    pytest.param(mcg_argmin, "took the lowest-scoring choice (argmin)", id="argmin"),
    pytest.param(mcg_mean_of_targets, "averaged the target scores of all the choices", id="mean-of-targets"),
    pytest.param(mcg_last_on_tie, "on a tie picked another of the highest-scoring choices", id="last-on-tie"),
    pytest.param(mcg_max_of_pairs, "on a tie picked another of the highest-scoring choices", id="max-of-pairs"),
    pytest.param(mcg_bigbench_hash, "on a tie picked another of the highest-scoring choices", id="bigbench-hash"),
    pytest.param(mcg_sorted_choices, "sorted (alphabetical) order", id="sorted-choices"),
    pytest.param(mcg_right_or_wrong, "counted an example as 1 or 0", id="right-or-wrong"),
    pytest.param(mcg_sum, "returned the sum over the examples", id="sum"),
    pytest.param(mcg_percent, "returned a percentage", id="percentage"),
    pytest.param(mcg_per_example, "one value per example", id="per-example-list"),
    pytest.param(mcg_dict_values_indexed, "dict.values() is a view, not a list", id="dict-values-index"),
]


@pytest.mark.parametrize("fn", MCG_CORRECT, ids=lambda f: f.__name__)
def test_mcg_accepts_other_correct_answers(fn):
    result = check("multiple_choice_grade", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MCG_MISTAKES)
def test_mcg_names_the_mistake(fn, phrase):
    assert_fails_naming(check("multiple_choice_grade", fn), phrase)


def test_a_difference_on_tied_examples_only_is_named_as_a_tie():
    """The last maximum, or ties broken by name: a tie is named on every failing case, never "sorted order"."""
    for fn in (mcg_last_on_tie, mcg_max_of_pairs):
        result = check("multiple_choice_grade", fn)
        failing = [c for c in result.cases if not c.passed]
        assert failing and all(c.mistake == evaluation.TIE for c in failing), result.feedback
    tied = Case("ties", ([[-1.0, -1.0, -2.0], [-3.0, -0.5]], [{"z": 0, "a": 1, "m": 0}, {"b": 0, "c": 1}]))
    problem = evaluation.judge_multiple_choice_grade(tied, 1.0)  # the second choice of the tie, right elsewhere
    assert problem.mistake == evaluation.TIE


def test_mcg_refuses_the_harness_that_picks_the_choices():
    from llmcourse import evaluation as harness

    def by_pick_choices(choice_scores, target_scores):
        _, earned = harness.pick_choices(choice_scores, [list(t.values()) for t in target_scores])
        return sum(earned) / len(earned)

    result = check("multiple_choice_grade", by_pick_choices)
    assert list(result.mistakes) == [MULTIPLE_CHOICE_HARNESS.mistake]
    assert "`llmcourse.evaluation.pick_choices` is what this exercise builds" in result.feedback


def test_mcg_accepts_a_numpy_float():
    assert check("multiple_choice_grade", lambda c, t: np.float64(mcg_numpy(c, t))).passed


def test_mcg_tensor_holding_the_right_number_says_use_item():
    result = check("multiple_choice_grade", lambda c, t: torch.tensor(mcg_numpy(c, t)))
    assert not result.passed and ".item()" in result.feedback


# =============================================================== grade_chain_of_thought

def _answer_by_regex(text):
    found = re.search(r".*the answer is([^\n]*)", text, flags=re.IGNORECASE | re.DOTALL)  # greedy .*: the last
    return re.sub(r"\.$", "", found.group(1).strip()) if found else None


def _accuracy(answers, targets):
    return sum(a is not None and a.strip().casefold() == t.strip().casefold()
               for a, t in zip(answers, targets)) / len(targets)


def cot_regex(outputs, targets):
    answers = [_answer_by_regex(o) for o in outputs]
    return answers, _accuracy(answers, targets)


def cot_rpartition(outputs, targets):
    answers = []
    for text in outputs:
        lowered = text.lower()
        if "the answer is" not in lowered:
            answers.append(None)
            continue
        head, phrase, _ = lowered.rpartition("the answer is")
        line = text[len(head) + len(phrase):].split("\n")[0]
        answers.append(line.strip().removesuffix("."))
    hits = [int(a is not None and a.lower() == t.lower().strip()) for a, t in zip(answers, targets)]
    return answers, float(np.mean(hits))


def cot_line_by_line(outputs, targets):
    answers = []
    for text in outputs:
        answer = None
        for line in text.split("\n"):
            position = line.lower().rfind("the answer is")
            if position >= 0:
                answer = line[position + len("the answer is"):].strip()
                if answer.endswith("."):
                    answer = answer[:-1]
        answers.append(answer)
    return answers, _accuracy(answers, targets)


def _cot_with(extract):
    def grade_chain_of_thought(outputs, targets):
        answers = [extract(o) for o in outputs]
        return answers, _accuracy(answers, targets)
    return grade_chain_of_thought


def _cut(text, find=str.rfind, lower=True, strip=str.strip, one_period=True, absent=None, whole_line=True):
    start = find(text.lower() if lower else text, "the answer is")
    if start == -1:
        return absent
    rest = text[start + len("the answer is"):]
    answer = strip(rest.split("\n")[0] if whole_line else rest)
    if one_period:
        return answer[:-1] if answer.endswith(".") else answer
    return answer


cot_first = _cot_with(lambda t: _cut(t, find=str.find))
cot_keeps_period = _cot_with(lambda t: _cut(t, one_period=False))
cot_case_sensitive = _cot_with(lambda t: _cut(t, lower=False))
cot_to_the_end = _cot_with(lambda t: _cut(t, whole_line=False))
cot_strips_spaces_only = _cot_with(lambda t: _cut(t, strip=lambda s: s.strip(" ")))
cot_all_periods = _cot_with(lambda t: _cut(t, one_period=False, strip=lambda s: s.strip().rstrip(".")))
cot_empty_string = _cot_with(lambda t: _cut(t, absent=""))
cot_first_sentence = _cot_with(lambda t: None if "the answer is" not in t.lower() else
                               t[t.lower().rfind("the answer is") + 13:].split(".")[0].strip())


def cot_lowered(outputs, targets):
    answers = [None if "the answer is" not in o.lower() else
               _cut(o.lower()) for o in outputs]
    return answers, _accuracy(answers, targets)


def cot_split_index(outputs, targets):
    answers = [o.split("The answer is")[1].strip().rstrip(".") for o in outputs]  # IndexError without the phrase
    return answers, _accuracy(answers, targets)


def _cot_accuracy(same, scale=1.0, mean=True):
    def grade_chain_of_thought(outputs, targets):
        answers = [_answer_by_regex(o) for o in outputs]
        hits = sum(a is not None and same(a, t) for a, t in zip(answers, targets))
        return answers, (scale * hits / len(targets) if mean else hits)
    return grade_chain_of_thought


cot_compares_case = _cot_accuracy(lambda a, t: a.strip() == t.strip())
cot_targets_unstripped = _cot_accuracy(lambda a, t: a.lower() == t.lower())
cot_contains = _cot_accuracy(lambda a, t: t.strip().lower() in a.lower())
cot_count = _cot_accuracy(lambda a, t: a.lower() == t.strip().lower(), mean=False)
cot_percent = _cot_accuracy(lambda a, t: a.lower() == t.strip().lower(), scale=100.0)


def cot_whole_output(outputs, targets):
    answers = [_answer_by_regex(o) for o in outputs]
    return answers, sum(o.strip().lower() == t.strip().lower() for o, t in zip(outputs, targets)) / len(targets)


def cot_accuracy_only(outputs, targets):
    return cot_regex(outputs, targets)[1]


def cot_answers_only(outputs, targets):
    return cot_regex(outputs, targets)[0]


COT_CORRECT = [cot_regex, cot_rpartition, cot_line_by_line]

COT_MISTAKES = [
    pytest.param(cot_first, "instead of the last one", id="first"),
    pytest.param(cot_keeps_period, "left the trailing period", id="keeps-period"),
    pytest.param(cot_case_sensitive, "searched case-sensitively", id="case-sensitive"),
    pytest.param(cot_to_the_end, "stop at the end of that line", id="to-the-end"),
    pytest.param(cot_strips_spaces_only, "removed only spaces around the answer", id="spaces-only"),
    pytest.param(cot_all_periods, "removed every trailing period", id="all-periods"),
    pytest.param(cot_empty_string, "its answer is None", id="empty-string"),
    pytest.param(cot_lowered, "returned the answer lower-cased", id="lowered"),
    pytest.param(cot_first_sentence, "cut the answer at the first period", id="first-period"),
    pytest.param(cot_split_index, "check for the phrase before", id="split-index-error"),
    pytest.param(cot_compares_case, "compared case-sensitively", id="compares-case"),
    pytest.param(cot_targets_unstripped, "did not strip the whitespace around the targets", id="targets-unstripped"),
    pytest.param(cot_contains, "contains the target", id="contains"),
    pytest.param(cot_count, "returned the number of matches", id="count"),
    pytest.param(cot_percent, "returned a percentage", id="percent"),
    pytest.param(cot_whole_output, "compared the whole output", id="whole-output"),
    pytest.param(cot_accuracy_only, "returned the accuracy alone", id="accuracy-only"),
    pytest.param(cot_answers_only, "returned the answers alone", id="answers-only"),
]


@pytest.mark.parametrize("fn", COT_CORRECT, ids=lambda f: f.__name__)
def test_cot_accepts_other_correct_answers(fn):
    result = check("grade_chain_of_thought", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", COT_MISTAKES)
def test_cot_names_the_mistake(fn, phrase):
    assert_fails_naming(check("grade_chain_of_thought", fn), phrase)


def test_cot_refuses_the_lessons_integer_reader():
    from llmcourse import evaluation as harness

    def by_final_integers(outputs, targets):
        answers = [None if n is None else str(n) for n in harness.final_integers(outputs)]
        return answers, sum(a == t.strip() for a, t in zip(answers, targets)) / len(targets)

    result = check("grade_chain_of_thought", by_final_integers)
    assert list(result.mistakes) == [ANSWER_READER.mistake]
    assert "`llmcourse.evaluation.final_integers` is what this exercise builds" in result.feedback


def test_a_tab_around_the_answer_is_a_visible_case():
    assert any("\t" in text for case in evaluation.cot_cases() for text in case.args[0])
    result = check("grade_chain_of_thought", cot_strips_spaces_only)
    assert [c.label for c in result.cases if not c.passed] == ["a tab and spaces around the answer"]


# =============================================================== every named mistake fails a visible case

def test_the_visible_cases_separate_the_named_mistakes():
    """Each named mistake fails at least one visible case (none slips through the visible check)."""
    for name, mistakes in [("multiple_choice_grade", evaluation.mcg_mistakes())]:
        for mistake in mistakes:
            assert not check(name, mistake.make).passed, f"{name}: {mistake.description}"
    for description, extract in evaluation.extraction_mistakes():
        assert not check("grade_chain_of_thought", _cot_with(extract)).passed, description
    for mistake in evaluation.accuracy_mistakes():
        def wrong(outputs, targets, accuracy=mistake.make):
            return [evaluation.reference_final_answer(o) for o in outputs], accuracy(outputs, targets)
        assert not check("grade_chain_of_thought", wrong).passed, mistake.description


# =============================================================== hidden checks

def _key(args, kwargs):
    """A visible case's identity without its model (whose repr is the same for every seed)."""
    if len(args) >= 4 and isinstance(args[0], evaluation.CountingLM):
        return repr((args[2], args[3], kwargs.get("length_normalize", False)))
    return repr(args)


def _fitted(name, reference):
    """An answer fitted to the visible cases: it looks up their results and returns a default otherwise."""
    fn = reference_fn(reference, name)
    table = {_key(case.args, case.kwargs): case.call(fn) for case in grader.get_exercise(name).make_cases()}

    def fitted(*args, **kwargs):
        default = {"score_choices": lambda: [0.0] * len(args[3]), "multiple_choice_grade": lambda: 0.0,
                   "grade_chain_of_thought": lambda: ([None] * len(args[0]), 0.0)}[name]
        key = _key(args, kwargs)
        return table[key] if key in table else default()

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_fitted_answer_passes_the_visible_check(reference, name):
    assert check(name, _fitted(name, reference)).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    right = {"score_choices": score_crop, "multiple_choice_grade": mcg_by_choice_name,
             "grade_chain_of_thought": cot_line_by_line}[name]
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("name, wrong, phrase", [
    ("score_choices", score_cache_not_copied, "reused without copying"),
    ("grade_chain_of_thought", cot_first, "instead of the last one"),
    ("multiple_choice_grade", mcg_last_on_tie, "on a tie picked another"),
])
def test_hidden_failure_names_the_mistake(hidden_dir, name, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden(name, wrong)
    assert phrase in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES
    HIDDEN_WRONG_NAMES_A_MISTAKE = False  # a fitted answer returns a constant off the visible cases

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("score_choices", score_cache_not_copied, id="score-cache-not-copied"),
        pytest.param("score_choices", score_special_tokens, id="score-special-tokens"),
        pytest.param("score_choices", score_no_space, id="score-no-space"),
        pytest.param("score_choices", score_first_token_skipped, id="score-first-skipped"),
        pytest.param("score_choices", score_always_sum, id="score-always-sum"),
        pytest.param("score_choices", score_full_pass_per_choice, id="score-prompt-per-choice"),
        pytest.param("multiple_choice_grade", mcg_last_on_tie, id="mcg-last-on-tie"),
        pytest.param("multiple_choice_grade", mcg_right_or_wrong, id="mcg-right-or-wrong"),
        pytest.param("multiple_choice_grade", mcg_sorted_choices, id="mcg-sorted"),
        pytest.param("grade_chain_of_thought", cot_first, id="cot-first"),
        pytest.param("grade_chain_of_thought", cot_all_periods, id="cot-all-periods"),
        pytest.param("grade_chain_of_thought", cot_strips_spaces_only, id="cot-spaces-only"),
        pytest.param("grade_chain_of_thought", cot_compares_case, id="cot-compares-case"),
    ]
    ALL_OR_NOTHING = [
        ("score_choices", score_crop, score_cache_not_copied),
        ("multiple_choice_grade", mcg_numpy, mcg_argmin),
        ("grade_chain_of_thought", cot_regex, cot_first),
    ]
    GARBAGE = [
        *DEFAULT_GARBAGE,
        A_MIXED_LIST,
    ]

    def hidden_wrong(self, exercise, reference):
        return _fitted(exercise, reference)
