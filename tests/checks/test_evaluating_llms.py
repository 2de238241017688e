"""Tests for the chapter-09 checks (grader/checks/evaluating_llms.py): multiple_choice_grade, exact_match,
extract_final_answer, chain_of_thought_prompt.

What is tested (COURSE.md, "One set of checks, three consumers"):
- every check passes the reference solution (from the solutions notebook) and other correct ways
  of writing the answer;
- every check fails a stub with "not implemented yet";
- every check fails common wrong answers, written here the way a learner would write them, and its
  feedback names the mistake;
- the checks' references agree with numpy's argmax (BIG-bench's tie rule) and with a regex reading of
  the final answer;
- the hidden checks pass the reference and fail an answer fitted to the visible cases.

The wrong answers are deliberately written out by hand, not taken from the grader's own list of
mistakes, so that a mistake the grader models differently from how learners write it shows up here.
"""

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

ASSIGNMENT = "09-evaluating-llms"

EXERCISES = ["multiple_choice_grade", "exact_match", "extract_final_answer", "chain_of_thought_prompt"]


def test_points():
    assert [grader.get_exercise(n).points for n in EXERCISES] == [2, 1, 2, 1]


# =============================================================== the references against independent readings

def test_multiple_choice_reference_breaks_ties_like_numpy_argmax():
    rng = random.Random(0)
    for _ in range(200):
        m = rng.randint(2, 6)
        scores = [float(rng.randint(-3, 0)) for _ in range(m)]  # small integers: many ties
        targets = {f"c{j}": rng.random() for j in range(m)}
        expected = list(targets.values())[int(np.argmax(scores))]
        assert evaluation.reference_multiple_choice_grade([scores], [targets]) == expected


def test_extract_reference_agrees_with_a_regex_reading():
    texts = [c.args[0] for c in evaluation.extract_cases()]
    for text in texts:
        found = re.search(r".*the answer is([^\n]*)", text, flags=re.IGNORECASE | re.DOTALL)  # greedy: the last
        expected = re.sub(r"\.$", "", found.group(1).strip()) if found else None
        assert evaluation.reference_extract_final_answer(text) == expected, text


def test_cot_reference_reproduces_wei_et_al_figure_1():
    """The tennis-ball exemplar of Wei et al. (2022), Figure 1, in the exercise's format."""
    prompt = evaluation.reference_chain_of_thought_prompt([evaluation.TENNIS_EXEMPLAR], "How many?")
    assert prompt == ("Q: Roger has 5 tennis balls. He buys 2 more cans of tennis balls. Each can has 3 tennis "
                      "balls. How many tennis balls does he have now?\nA: Roger started with 5 balls. 2 cans of 3 "
                      "tennis balls each is 6 tennis balls. 5 + 6 = 11. The answer is 11.\n\nQ: How many?\nA:")
    assert evaluation.reference_extract_final_answer(prompt.split("\n\n")[0]) == "11"


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


MCG_CORRECT = [mcg_numpy, mcg_by_choice_name, mcg_torch, mcg_statistics]

MCG_MISTAKES = [
    pytest.param(mcg_argmin, "took the lowest-scoring choice (argmin)", id="argmin"),
    pytest.param(mcg_mean_of_targets, "averaged the target scores of all the choices", id="mean-of-targets"),
    pytest.param(mcg_last_on_tie, "on a tie took the last highest-scoring choice", id="last-on-tie"),
    pytest.param(mcg_sorted_choices, "sorted (alphabetical) order", id="sorted-choices"),
    pytest.param(mcg_right_or_wrong, "counted an example as 1 or 0", id="right-or-wrong"),
    pytest.param(mcg_sum, "returned the sum over the examples", id="sum"),
    pytest.param(mcg_percent, "returned a percentage", id="percentage"),
    pytest.param(mcg_per_example, "one value per example", id="per-example-list"),
    pytest.param(mcg_dict_values_indexed, "dict.values() is not a list", id="dict-values-index"),
]


@pytest.mark.parametrize("fn", MCG_CORRECT, ids=lambda f: f.__name__)
def test_mcg_accepts_other_correct_answers(fn):
    result = check("multiple_choice_grade", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", MCG_MISTAKES)
def test_mcg_names_the_mistake(fn, phrase):
    assert_fails_naming(check("multiple_choice_grade", fn), phrase)


# =============================================================== exact_match

def em_loop(predictions, targets):
    hits = 0
    for prediction, target in zip(predictions, targets):
        if prediction.strip().lower() == target.strip().lower():
            hits += 1
    return hits / len(predictions)


def em_numpy(predictions, targets):
    normalise = np.vectorize(lambda s: s.strip().lower())
    return float(np.mean(normalise(np.array(predictions)) == normalise(np.array(targets))))


def em_casefold(predictions, targets):
    return sum(p.strip().casefold() == t.strip().casefold() for p, t in zip(predictions, targets)) / len(targets)


def em_case_sensitive(predictions, targets):
    return sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / len(targets)


def em_no_strip(predictions, targets):
    return sum(p.lower() == t.lower() for p, t in zip(predictions, targets)) / len(targets)


def em_contains(predictions, targets):
    return sum(t.strip().lower() in p.lower() for p, t in zip(predictions, targets)) / len(targets)


def em_no_spaces(predictions, targets):
    return sum("".join(p.split()).lower() == "".join(t.split()).lower() for p, t in zip(predictions, targets)) / len(
        targets)


def em_count(predictions, targets):
    return sum(p.strip().lower() == t.strip().lower() for p, t in zip(predictions, targets))


def em_list_of_bools(predictions, targets):
    return [p.strip().lower() == t.strip().lower() for p, t in zip(predictions, targets)]


def em_normalise_predictions_only(predictions, targets):
    return sum(p.strip().lower() == t for p, t in zip(predictions, targets)) / len(targets)


EM_CORRECT = [em_loop, em_numpy, em_casefold]

EM_MISTAKES = [
    pytest.param(em_case_sensitive, "compared case-sensitively", id="case-sensitive"),
    pytest.param(em_no_strip, "did not strip the surrounding whitespace", id="no-strip"),
    pytest.param(em_contains, "contains the target", id="contains"),
    pytest.param(em_no_spaces, "removed every space", id="no-spaces"),
    pytest.param(em_count, "returned the number of matches", id="count"),
    pytest.param(em_list_of_bools, "a list of True/False", id="list-of-bools"),
    pytest.param(em_normalise_predictions_only, "normalised only the predictions", id="predictions-only"),
]


@pytest.mark.parametrize("fn", EM_CORRECT, ids=lambda f: f.__name__)
def test_exact_match_accepts_other_correct_answers(fn):
    result = check("exact_match", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", EM_MISTAKES)
def test_exact_match_names_the_mistake(fn, phrase):
    assert_fails_naming(check("exact_match", fn), phrase)


# =============================================================== extract_final_answer

def extract_regex(text):
    found = re.search(r".*the answer is([^\n]*)", text, flags=re.IGNORECASE | re.DOTALL)  # greedy .*: the last
    if not found:
        return None
    return re.sub(r"\.$", "", found.group(1).strip())


def extract_rpartition(text):
    lowered = text.lower()
    if "the answer is" not in lowered:
        return None
    head, phrase, _ = lowered.rpartition("the answer is")
    rest = text[len(head) + len(phrase):]
    line = rest.splitlines()[0] if rest.splitlines() else ""
    return line.strip().removesuffix(".")


def extract_line_by_line(text):
    answer = None
    for line in text.split("\n"):
        position = line.lower().rfind("the answer is")
        if position >= 0:
            answer = line[position + len("the answer is"):].strip()
            if answer.endswith("."):
                answer = answer[:-1]
    return answer


def extract_first(text):
    start = text.lower().find("the answer is")
    if start == -1:
        return None
    answer = text[start + len("the answer is"):].split("\n")[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def extract_keeps_period(text):
    start = text.lower().rfind("the answer is")
    if start == -1:
        return None
    return text[start + len("the answer is"):].split("\n")[0].strip()


def extract_case_sensitive(text):
    start = text.rfind("the answer is")
    if start == -1:
        return None
    answer = text[start + len("the answer is"):].split("\n")[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def extract_to_the_end(text):
    start = text.lower().rfind("the answer is")
    if start == -1:
        return None
    answer = text[start + len("the answer is"):].strip()
    return answer[:-1] if answer.endswith(".") else answer


def extract_all_periods(text):
    start = text.lower().rfind("the answer is")
    if start == -1:
        return None
    return text[start + len("the answer is"):].split("\n")[0].strip().rstrip(".")


def extract_empty_string(text):
    start = text.lower().rfind("the answer is")
    if start == -1:
        return ""
    answer = text[start + len("the answer is"):].split("\n")[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def extract_from_lowered(text):
    parts = text.lower().split("the answer is")
    if len(parts) == 1:
        return None
    answer = parts[-1].split("\n")[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def extract_first_sentence(text):
    start = text.lower().rfind("the answer is")
    if start == -1:
        return None
    return text[start + len("the answer is"):].split(".")[0].strip()


def extract_split_index(text):
    return text.split("The answer is")[1].strip().rstrip(".")  # IndexError without the phrase


EXTRACT_CORRECT = [extract_regex, extract_rpartition, extract_line_by_line]

EXTRACT_MISTAKES = [
    pytest.param(extract_first, "instead of the last one", id="first"),
    pytest.param(extract_keeps_period, "left the trailing period", id="keeps-period"),
    pytest.param(extract_case_sensitive, "searched case-sensitively", id="case-sensitive"),
    pytest.param(extract_to_the_end, "stop at the end of that line", id="to-the-end"),
    pytest.param(extract_all_periods, "removed every trailing period", id="all-periods"),
    pytest.param(extract_empty_string, "return None", id="empty-string"),
    pytest.param(extract_from_lowered, "returned the answer lower-cased", id="lowered"),
    pytest.param(extract_first_sentence, "cut the answer at the first period", id="first-period"),
    pytest.param(extract_split_index, "check for the phrase first", id="split-index-error"),
]


@pytest.mark.parametrize("fn", EXTRACT_CORRECT, ids=lambda f: f.__name__)
def test_extract_accepts_other_correct_answers(fn):
    result = check("extract_final_answer", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", EXTRACT_MISTAKES)
def test_extract_names_the_mistake(fn, phrase):
    assert_fails_naming(check("extract_final_answer", fn), phrase)


# =============================================================== chain_of_thought_prompt

def cot_loop(exemplars, question):
    prompt = ""
    for q, reasoning, answer in exemplars:
        prompt += f"Q: {q}\nA: {reasoning} The answer is {answer}.\n\n"
    return prompt + f"Q: {question}\nA:"


def cot_format(exemplars, question):
    template = "Q: {}\nA: {} The answer is {}."
    return "\n\n".join([template.format(*e) for e in exemplars] + ["Q: {}\nA:".format(question)])


def cot_lines(exemplars, question):
    lines = []
    for q, reasoning, answer in exemplars:
        lines += ["Q: " + q, "A: " + reasoning + " The answer is " + str(answer) + ".", ""]
    return "\n".join(lines + ["Q: " + question, "A:"])


def cot_single_newline(exemplars, question):
    blocks = [f"Q: {q}\nA: {r} The answer is {a}." for q, r, a in exemplars]
    return "\n".join(blocks + [f"Q: {question}\nA:"])


def cot_trailing_space(exemplars, question):
    blocks = [f"Q: {q}\nA: {r} The answer is {a}." for q, r, a in exemplars]
    return "\n\n".join(blocks + [f"Q: {question}\nA: "])


def cot_no_period(exemplars, question):
    blocks = [f"Q: {q}\nA: {r} The answer is {a}" for q, r, a in exemplars]
    return "\n\n".join(blocks + [f"Q: {question}\nA:"])


def cot_lower_case(exemplars, question):
    blocks = [f"Q: {q}\nA: {r} the answer is {a}." for q, r, a in exemplars]
    return "\n\n".join(blocks + [f"Q: {question}\nA:"])


def cot_answer_on_new_line(exemplars, question):
    blocks = [f"Q: {q}\nA: {r}\nThe answer is {a}." for q, r, a in exemplars]
    return "\n\n".join(blocks + [f"Q: {question}\nA:"])


def cot_forgets_question(exemplars, question):
    return "\n\n".join(f"Q: {q}\nA: {r} The answer is {a}." for q, r, a in exemplars)


def cot_string_concatenation(exemplars, question):
    blocks = ["Q: " + q + "\nA: " + r + " The answer is " + a + "." for q, r, a in exemplars]  # a may be an int
    return "\n\n".join(blocks + ["Q: " + question + "\nA:"])


def cot_prints(exemplars, question):
    print("\n\n".join([f"Q: {q}\nA: {r} The answer is {a}." for q, r, a in exemplars] + [f"Q: {question}\nA:"]))


COT_CORRECT = [cot_loop, cot_format, cot_lines]

COT_MISTAKES = [
    pytest.param(cot_single_newline, "missing blank line between the blocks", id="single-newline"),
    pytest.param(cot_trailing_space, "left a space after the final", id="trailing-space"),
    pytest.param(cot_no_period, "no period after the answer", id="no-period"),
    pytest.param(cot_lower_case, "in lower case", id="lower-case"),
    pytest.param(cot_answer_on_new_line, "put the answer on its own line", id="answer-new-line"),
    pytest.param(cot_forgets_question, "forgot the final question", id="no-question"),
    pytest.param(cot_string_concatenation, "an answer may be a number", id="str-plus-int"),
    pytest.param(cot_prints, "did you print it instead?", id="prints"),
]


@pytest.mark.parametrize("fn", COT_CORRECT, ids=lambda f: f.__name__)
def test_cot_accepts_other_correct_answers(fn):
    result = check("chain_of_thought_prompt", fn)
    assert result.passed, result.feedback


@pytest.mark.parametrize("fn, phrase", COT_MISTAKES)
def test_cot_names_the_mistake(fn, phrase):
    assert_fails_naming(check("chain_of_thought_prompt", fn), phrase)


def test_cot_feedback_shows_where_a_long_prompt_differs():
    result = check("chain_of_thought_prompt", cot_single_newline)
    assert "first difference at character" in result.feedback


# =============================================================== every named mistake fails a visible case

def test_the_visible_cases_separate_the_named_mistakes():
    """Each named mistake fails at least one visible case (none slips through the visible check)."""
    for name, mistakes in [("multiple_choice_grade", evaluation.mcg_mistakes()),
                           ("exact_match", evaluation.exact_match_mistakes()),
                           ("extract_final_answer", evaluation.extract_mistakes()),
                           ("chain_of_thought_prompt", evaluation.cot_mistakes())]:
        for mistake in mistakes:
            assert not check(name, mistake.make).passed, f"{name}: {mistake.description}"


# =============================================================== the API around a check

def test_mcg_accepts_a_numpy_float():
    assert check("multiple_choice_grade", lambda c, t: np.float64(mcg_numpy(c, t))).passed


def test_mcg_tensor_holding_the_right_number_says_use_item():
    result = check("multiple_choice_grade", lambda c, t: torch.tensor(mcg_numpy(c, t)))
    assert not result.passed and ".item()" in result.feedback


# =============================================================== hidden checks

def _fitted(name, reference):
    """An answer fitted to the visible cases: it looks up their results and returns a default otherwise."""
    fn = reference_fn(reference, name)
    table = {repr(case.args): case.call(fn) for case in grader.get_exercise(name).make_cases()}
    default = {"multiple_choice_grade": 0.0, "exact_match": 0.0, "extract_final_answer": None,
               "chain_of_thought_prompt": ""}[name]

    def fitted(*args):
        return table.get(repr(args), default)

    return fitted


@pytest.mark.parametrize("name", EXERCISES)
def test_fitted_answer_passes_the_visible_check(reference, name):
    assert check(name, _fitted(name, reference)).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_hidden_checks_pass_other_correct_answers(hidden_dir, name, capsys):
    right = {"multiple_choice_grade": mcg_by_choice_name, "exact_match": em_numpy,
             "extract_final_answer": extract_line_by_line, "chain_of_thought_prompt": cot_lines}[name]
    grader.hidden.run_hidden(name, right)
    assert "hidden tests passed" in capsys.readouterr().out


def test_hidden_failure_names_the_mistake(hidden_dir):
    with pytest.raises(AssertionError) as info:
        grader.hidden.run_hidden("extract_final_answer", extract_first)
    assert "instead of the last one" in str(info.value)


# =============================================================== the chapter contract (tests/chapter_contract.py)

class TestChapterContract(ChapterContract):
    ASSIGNMENT = ASSIGNMENT
    EXERCISES = EXERCISES
    HIDDEN_WRONG_NAMES_A_MISTAKE = False  # a fitted answer returns a constant off the visible cases

    NAMED_MISTAKES = [  # less obvious mistakes: every failing case still names one
        pytest.param("multiple_choice_grade", mcg_last_on_tie, id="mcg-last-on-tie"),
        pytest.param("multiple_choice_grade", mcg_right_or_wrong, id="mcg-right-or-wrong"),
        pytest.param("multiple_choice_grade", mcg_sorted_choices, id="mcg-sorted"),
        pytest.param("exact_match", em_no_spaces, id="em-no-spaces"),
        pytest.param("exact_match", em_case_sensitive, id="em-case-sensitive"),
        pytest.param("extract_final_answer", extract_first, id="extract-first"),
        pytest.param("extract_final_answer", extract_all_periods, id="extract-all-periods"),
        pytest.param("chain_of_thought_prompt", cot_trailing_space, id="cot-trailing-space"),
    ]
    ALL_OR_NOTHING = [
        ("multiple_choice_grade", mcg_numpy, mcg_argmin),
        ("exact_match", em_loop, em_case_sensitive),
        ("extract_final_answer", extract_regex, extract_first),
        ("chain_of_thought_prompt", cot_loop, cot_single_newline),
    ]
    GARBAGE = [
        # extract_final_answer and chain_of_thought_prompt return text: "hello" is a wrong answer, not of
        # the wrong type, so their feedback need not say "str"
        pytest.param(lambda *a, **k: "hello", "hello", id="a-string"),
        *(garbage for garbage in DEFAULT_GARBAGE if garbage.id != "a-string"),
        A_MIXED_LIST,
    ]

    def hidden_wrong(self, exercise, reference):
        return _fitted(exercise, reference)
