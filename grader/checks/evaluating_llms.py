"""Chapter 09, evaluating LLMs: multiple_choice_grade, exact_match, extract_final_answer,
chain_of_thought_prompt.

The references are the definitions in COURSE.md written out in plain Python (BIG-bench's
``multiple_choice_grade``: the target score of the highest-scoring choice, the first one on a tie, as
numpy's ``argmax`` picks it; Wei et al. 2022's "Q: ... A: ... The answer is ..." chain-of-thought
format). Every ``Mistake`` is a wrong answer learners write, so that a failing output is named, not
just flagged. All four exercises work on plain Python values (lists, dicts, strings, floats).
"""

import random

from grader.compare import Mistake, Problem, name_mistake
from grader.core import Case, Exercise, register
from grader.numbers import number_problem
from grader.values import describe

ANSWER_PHRASE = "the answer is"


def _number_problem(case: Case, out, expected: float, what: str, mistakes: list) -> str | None:
    """What is wrong with a returned fraction, naming the mistake it matches (None when right)."""
    if isinstance(out, (list, tuple)):
        return (f"returned {describe(out)}, one value per example: return one number, the mean over the "
                f"examples ({what})")
    return number_problem(case, out, expected, what, mistakes, rel_tol=1e-9, abs_tol=1e-12)


def _first_difference(got: str, want: str) -> str:
    """Where two strings first differ, shown with a little context (repr, so spaces and newlines show)."""
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    start = max(0, i - 20)
    return (f"first difference at character {i}: yours {got[start:i + 20]!r}, "
            f"expected {want[start:i + 20]!r}")


def _text_problem(case: Case, out, expected, mistakes: list, what: str) -> str | None:
    """What is wrong with a returned string (or None), naming the mistake it matches."""
    if not isinstance(out, (str, type(None))):
        return f"{what} should be a str{' or None' if expected is None else ''}; got {describe(out)}"
    if out == expected:
        return None
    if expected is None:
        problem = f"returned {out!r}; expected None (the text has no {ANSWER_PHRASE!r})"
    elif out is None:
        problem = f"returned None; expected {expected!r}"
    else:
        problem = f"returned {out!r}; expected {expected!r}"
        if len(expected) > 40 or len(out) > 40:
            problem = _first_difference(out, expected)
    return Problem(problem, name_mistake(out, case, mistakes))


# ---------------------------------------------------------------- multiple_choice_grade

def _first_argmax(values) -> int:
    """Index of the largest value; the first one on a tie (numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def reference_multiple_choice_grade(choice_scores, target_scores) -> float:
    """BIG-bench's metric: mean over examples of the target score of the highest-scoring choice."""
    total = 0.0
    for scores, targets in zip(choice_scores, target_scores):
        total += list(targets.values())[_first_argmax(scores)]
    return total / len(choice_scores)


def _grade_by(pick, credit=lambda targets, i: targets[i], order=lambda t: list(t.values()), mean=True):
    """A multiple_choice_grade variant: ``pick`` chooses an index, ``credit`` scores it."""
    def grade(choice_scores, target_scores):
        total = sum(credit(order(t), pick(s)) for s, t in zip(choice_scores, target_scores))
        return total / len(choice_scores) if mean else total
    return grade


def _last_argmax(values) -> int:
    return max(range(len(values)), key=lambda i: (values[i], i))


def _argmin(values) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


def _sorted_by_choice(targets: dict) -> list:
    return [targets[k] for k in sorted(targets)]


def mcg_mistakes() -> list:
    return [
        Mistake("took the lowest-scoring choice (argmin): the model's answer is the choice with the highest "
                "score (the largest log-likelihood)", _grade_by(_argmin)),
        Mistake("averaged the target scores of all the choices (that is the random-guess baseline): take the "
                "target score of the highest-scoring choice only",
                _grade_by(lambda s: None, credit=lambda t, i: sum(t) / len(t))),
        Mistake("on a tie took the last highest-scoring choice: take the first one, as numpy's argmax does",
                _grade_by(_last_argmax)),
        Mistake("matched the scores to the choices in sorted (alphabetical) order: the i-th choice score belongs "
                "to the i-th key of target_scores in the dict's own order", _grade_by(_first_argmax,
                                                                                      order=_sorted_by_choice)),
        Mistake("counted an example as 1 or 0 (right or wrong): add the chosen choice's target score itself, "
                "which can be a fraction (partial credit)",
                _grade_by(_first_argmax, credit=lambda t, i: float(t[i] == max(t)))),
        Mistake("counted an example as 1 or 0 (right or wrong): add the chosen choice's target score itself, "
                "which can be a fraction (partial credit)",
                _grade_by(_first_argmax, credit=lambda t, i: float(t[i] > 0))),
        Mistake("counted an example as 1 or 0 (right or wrong): add the chosen choice's target score itself, "
                "which can be a fraction (partial credit)",
                _grade_by(_first_argmax, credit=lambda t, i: float(t[i] == 1))),
        Mistake("took the best target score of each example (what a perfect model gets): take the target score "
                "of the choice the model scored highest", _grade_by(lambda s: None, credit=lambda t, i: max(t))),
        Mistake("returned the sum over the examples: divide by the number of examples",
                _grade_by(_first_argmax, mean=False)),
        Mistake("returned a percentage: return a fraction between 0 and 1",
                lambda c, t: 100 * reference_multiple_choice_grade(c, t)),
    ]


def _random_items(rng: random.Random, n: int, n_choices, fractional: bool = False):
    """n random examples: log-likelihood-like scores and one-hot (or partial-credit) target scores."""
    choice_scores, target_scores = [], []
    for k in range(n):
        m = n_choices if isinstance(n_choices, int) else rng.choice(n_choices)
        names = [f"choice {k}.{j}" for j in range(m)]
        rng.shuffle(names)  # the dict order is not alphabetical
        right = rng.randrange(m)
        scores = [round(-rng.uniform(0.5, 25.0), 4) for _ in range(m)]
        credit = [1.0 if j == right else (rng.choice([0.0, 0.0, 0.5]) if fractional else 0.0) for j in range(m)]
        choice_scores.append(scores)
        target_scores.append(dict(zip(names, credit)))
    return choice_scores, target_scores


def mcg_cases() -> list:
    rng = random.Random(909)
    emoji = [{"finding nemo": 1, "the wolf of wall street": 0, "se7en": 0, "the shining": 0,
              "mr. smith goes to washington": 0},
             {"zootopia": 0, "jaws": 1, "up": 0, "frozen": 0, "cars": 0},
             {"the lion king": 0, "coco": 0, "avatar": 0, "titanic": 1, "toy story": 0}]
    emoji_scores = [[-3.1, -9.4, -7.2, -6.0, -14.5], [-4.0, -5.5, -6.2, -6.1, -3.3], [-8.2, -5.0, -9.9, -4.1, -6.6]]
    return [
        Case("three emoji_movie examples, one right answer each (log-likelihoods, higher is better)",
             (emoji_scores, emoji)),
        Case("a tie between the best two choices: the first one counts",
             ([[-2.0, -2.0, -5.0], [-1.5, -0.7, -0.7], [-1.0, -5.0, -1.0]],
              [{"yes": 1, "no": 0, "maybe": 0}, {"red": 0, "green": 1, "blue": 0}, {"p": 1, "q": 0.5, "r": 0}])),
        Case("partial credit: target scores between 0 and 1",
             ([[-2.0, -1.0, -3.0], [-4.0, -1.0, -2.5], [-3.0, -2.0, -1.0], [-0.2, -0.9, -1.0]],
              [{"Paris, France": 0.5, "Paris": 1.0, "Lyon": 0.0},
               {"6": 0.0, "12": 0.25, "13": 1.0},
               {"a": 0.0, "b": 1.0, "c": 0.75},
               {"no": 0.0, "yes": 1.0, "perhaps": 0.5}])),
        Case("the choices are not in alphabetical order",
             ([[-0.5, -3.0, -4.0], [-6.0, -1.0, -2.0]],
              [{"zebra": 1, "apple": 0, "mango": 0}, {"yak": 0, "cat": 1, "bee": 0}])),
        Case("one example, probabilities instead of log-likelihoods",
             ([[0.3, 0.6, 0.1]], [{"B": 0.25, "A": 1, "C": 0}])),
        Case("checkmate_in_one-sized: 4 examples of 39 choices", _random_items(rng, 4, 39)),
        Case("20 examples with 2 to 7 choices and partial credit", _random_items(rng, 20, [2, 3, 4, 5, 6, 7],
                                                                                fractional=True)),
    ]


def judge_multiple_choice_grade(case: Case, out) -> str | None:
    expected = reference_multiple_choice_grade(*case.args)
    return _number_problem(case, out, expected, "the mean score", mcg_mistakes())


def explain_mcg_error(case: Case, outcome) -> str | None:
    message = outcome.message
    if outcome.error_type == "KeyError":
        return ("target_scores[i] is a dict choice -> score: take its values in order "
                "(list(target_scores[i].values())[best]), or its keys to look a choice up")
    if "not subscriptable" in message or "dict_values" in message or "dict_keys" in message:
        return "dict.values() is not a list: wrap it, list(target_scores[i].values())[best]"
    if "ambiguous" in message or outcome.error_type == "ValueError":
        return "choice_scores is a list of lists of floats (one list per example, of its own length)"
    return None


register(Exercise(
    name="multiple_choice_grade", chapter="09", signature="(choice_scores, target_scores)", points=2,
    make_cases=mcg_cases, judge=judge_multiple_choice_grade, explain_error=explain_mcg_error,
))


# ---------------------------------------------------------------- exact_match

def _normalise(text: str) -> str:
    return text.strip().lower()


def reference_exact_match(predictions, targets) -> float:
    """Fraction of predictions equal to their target after stripping whitespace and lower-casing."""
    return sum(_normalise(p) == _normalise(t) for p, t in zip(predictions, targets)) / len(targets)


def _match_by(same, mean=True, scale=1.0):
    def match(predictions, targets):
        hits = sum(bool(same(p, t)) for p, t in zip(predictions, targets))
        return scale * hits / len(targets) if mean else hits
    return match


def exact_match_mistakes() -> list:
    return [
        Mistake("compared case-sensitively: lower-case both strings (\"Paris\" matches \"paris\")",
                _match_by(lambda p, t: p.strip() == t.strip())),
        Mistake("did not strip the surrounding whitespace: \" Paris\\n\" matches \"paris\"",
                _match_by(lambda p, t: p.lower() == t.lower())),
        Mistake("normalised only the predictions: strip and lower-case the targets too",
                _match_by(lambda p, t: _normalise(p) == t)),
        Mistake("counted a prediction that contains the target as a match: exact match means equal strings",
                _match_by(lambda p, t: _normalise(t) in _normalise(p))),
        Mistake("counted a prediction that starts with the target as a match: exact match means equal strings",
                _match_by(lambda p, t: _normalise(p).startswith(_normalise(t)))),
        Mistake("removed every space, also those inside the answer: strip only the ends (\"new york\" is not "
                "\"newyork\")", _match_by(lambda p, t: "".join(p.split()).lower() == "".join(t.split()).lower())),
        Mistake("returned the number of matches: divide by the number of examples", _match_by(
            lambda p, t: _normalise(p) == _normalise(t), mean=False)),
        Mistake("returned a percentage: return a fraction between 0 and 1",
                _match_by(lambda p, t: _normalise(p) == _normalise(t), scale=100.0)),
    ]


def exact_match_cases() -> list:
    return [
        Case("case and surrounding whitespace differ",
             (["Paris", " london ", "Rome\n", "berlin"], ["paris", "London", "rome", "Madrid"])),
        Case("spaces inside an answer matter", (["new york", "newyork", "Los  Angeles"],
                                                 ["New York", "new york", "los angeles"])),
        Case("a prediction that contains the target is not a match",
             (["the answer is 42", "42", "4", "1093"], ["42", "42", "42", "109"])),
        Case("whitespace around the targets", (["yes", "No", "maybe"], [" yes\t", "no\n", "Maybe "])),
        Case("numbers as strings", (["109", "1,000", " 7 ", "-3"], ["109", "1000", "7", "-3"])),
        Case("no prediction matches", (["11", "cat"], ["12", "dog"])),
        Case("a single example that matches", (["Finding Nemo"], ["finding nemo"])),
    ]


def judge_exact_match(case: Case, out) -> str | None:
    expected = reference_exact_match(*case.args)
    if isinstance(out, list) and all(isinstance(v, bool) for v in out):
        return "returned a list of True/False, one per example: return their mean (a fraction)"
    return _number_problem(case, out, expected, "the fraction of exact matches", exact_match_mistakes())


register(Exercise(
    name="exact_match", chapter="09", signature="(predictions, targets)", points=1,
    make_cases=exact_match_cases, judge=judge_exact_match,
))


# ---------------------------------------------------------------- extract_final_answer

def reference_extract_final_answer(text: str):
    """The text after the last "the answer is" (any case) to the end of its line, stripped, one period off."""
    start = text.lower().rfind(ANSWER_PHRASE)
    if start < 0:
        return None
    answer = text[start + len(ANSWER_PHRASE):].split("\n", 1)[0].strip()
    return answer[:-1] if answer.endswith(".") else answer


def _extract_by(find="last", case_sensitive=False, one_line=True, strip=True, period="one",
                lowered=False, absent=None, period_first=False):
    """An extract_final_answer variant that reproduces one mistake."""
    def extract(text):
        haystack = text if case_sensitive else text.lower()
        start = haystack.rfind(ANSWER_PHRASE) if find == "last" else haystack.find(ANSWER_PHRASE)
        if start < 0:
            return absent
        answer = (haystack if lowered else text)[start + len(ANSWER_PHRASE):]
        if one_line:
            answer = answer.split("\n", 1)[0]
        if period == "first-period":
            answer = answer.split(".", 1)[0]
        if period_first and answer.endswith("."):
            answer = answer[:-1]
        if strip:
            answer = answer.strip()
        if period == "one" and not period_first and answer.endswith("."):
            answer = answer[:-1]
        elif period == "all":
            answer = answer.rstrip(".")
        return answer
    return extract


def extract_mistakes() -> list:
    return [
        Mistake("took the first \"the answer is\" instead of the last one: the final answer comes last "
                "(use rfind, or the last match)", _extract_by(find="first")),
        Mistake("left the trailing period: strip the spaces, then remove one period at the end of the answer",
                _extract_by(period="none")),
        Mistake("searched case-sensitively: \"The answer is\" must be found too (search in text.lower())",
                _extract_by(case_sensitive=True)),
        Mistake("took everything after the phrase: stop at the end of that line (the text after a newline is "
                "not part of the answer)", _extract_by(one_line=False)),
        Mistake("did not strip the spaces around the answer", _extract_by(strip=False)),
        Mistake("removed every trailing period: remove one (\"D.C..\" becomes \"D.C.\")", _extract_by(period="all")),
        Mistake("returned \"\" when the phrase is absent: return None", _extract_by(absent="")),
        Mistake("returned the answer lower-cased: find the phrase in text.lower(), but cut the answer from the "
                "original text", _extract_by(lowered=True)),
        Mistake("cut the answer at the first period: a decimal point or an abbreviation is not the end; cut at "
                "the end of the line, then remove one trailing period", _extract_by(period="first-period")),
    ]


TENNIS = ("Roger started with 5 balls. 2 cans of 3 tennis balls each is 6 tennis balls. 5 + 6 = 11. "
          "The answer is 11.")


def extract_cases() -> list:
    return [
        Case("the tennis-ball reasoning of Wei et al. (2022)", (TENNIS,)),
        Case("two answers in the text: the last one counts",
             ("The answer is 12, but 4 of them are broken. 12 - 4 = 8. So the answer is 8.",)),
        Case("lower-case phrase, then the model goes on with a new question",
             ("23 - 20 = 3 and 3 + 6 = 9, so the answer is 9.\n\nQ: What is 7 plus 5?\nA:",)),
        Case("upper-case phrase, the answer keeps its case", ("Paris is the capital. THE ANSWER IS Paris.",)),
        Case("no final answer at all", ("I think it is 7 or maybe 8.",)),
        Case("a decimal number keeps its point", ("Half of 7 is 3.5. The answer is 3.5.",)),
        Case("only one trailing period is removed", ("The answer is Washington D.C..",)),
        Case("a space after the period, then a new line", ("6 * 7 = 42. The answer is 42. \nQ: next",)),
        Case("an abbreviation inside the answer", ("He flew to Missouri. The answer is St. Louis.",)),
        Case("no period at the end", ("Ten plus seven is seventeen.\nThe answer is  17",)),
    ]


def judge_extract(case: Case, out) -> str | None:
    expected = reference_extract_final_answer(*case.args)
    return _text_problem(case, out, expected, extract_mistakes(), "the answer")


def explain_extract_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "IndexError":
        return (f"the text may not contain {ANSWER_PHRASE!r} (then return None), and split(...)[1] fails; "
                f"check for the phrase first")
    if outcome.error_type == "AttributeError" and "NoneType" in outcome.message:
        return "re.search returns None when there is no match: return None in that case"
    return None


register(Exercise(
    name="extract_final_answer", chapter="09", signature="(text)", points=2,
    make_cases=extract_cases, judge=judge_extract, explain_error=explain_extract_error,
))


# ---------------------------------------------------------------- chain_of_thought_prompt

def reference_chain_of_thought_prompt(exemplars, question) -> str:
    """Wei et al.'s format: "Q: ...\\nA: reasoning The answer is X." blocks, then "Q: ...\\nA:", blank lines between."""
    blocks = [f"Q: {q}\nA: {reasoning} The answer is {answer}." for q, reasoning, answer in exemplars]
    return "\n\n".join(blocks + [f"Q: {question}\nA:"])


def _cot_by(block="Q: {q}\nA: {r} The answer is {a}.", final="Q: {q}\nA:", sep="\n\n", tail="",
            reverse=False, with_question=True):
    def prompt(exemplars, question):
        items = list(exemplars)[::-1] if reverse else list(exemplars)
        blocks = [block.format(q=q, r=r, a=a) for q, r, a in items]
        if with_question:
            blocks.append(final.format(q=question))
        return sep.join(blocks) + tail
    return prompt


def cot_mistakes() -> list:
    return [
        Mistake("missing blank line between the blocks: join them with \"\\n\\n\", not \"\\n\"", _cot_by(sep="\n")),
        Mistake("left a space after the final \"A:\": the prompt ends exactly with \"A:\" (the model writes the space)",
                _cot_by(final="Q: {q}\nA: ")),
        Mistake("no period after the answer: each exemplar ends \"The answer is {answer}.\"",
                _cot_by(block="Q: {q}\nA: {r} The answer is {a}")),
        Mistake("wrote \"the answer is\" in lower case: the exemplars say \"The answer is\"",
                _cot_by(block="Q: {q}\nA: {r} the answer is {a}.")),
        Mistake("left out \"The answer is\": the exemplars must show the phrase the answer is read from",
                _cot_by(block="Q: {q}\nA: {r} {a}.")),
        Mistake("put the answer on its own line: the reasoning and \"The answer is ...\" are separated by one space",
                _cot_by(block="Q: {q}\nA: {r}\nThe answer is {a}.")),
        Mistake("no space after \"A:\" in the exemplars: \"A: {reasoning}\"",
                _cot_by(block="Q: {q}\nA:{r} The answer is {a}.")),
        Mistake("forgot the final question: end with \"Q: {question}\\nA:\"", _cot_by(with_question=False)),
        Mistake("added text after the final \"A:\": nothing comes after it", _cot_by(tail="\n")),
        Mistake("added text after the final \"A:\": nothing comes after it", _cot_by(tail="\n\n")),
        Mistake("put the exemplars in reverse order: keep their order", _cot_by(reverse=True)),
        Mistake("used \"Question:\"/\"Answer:\" labels: the format is \"Q:\" and \"A:\"",
                _cot_by(block="Question: {q}\nAnswer: {r} The answer is {a}.", final="Question: {q}\nAnswer:")),
    ]


TENNIS_EXEMPLAR = ("Roger has 5 tennis balls. He buys 2 more cans of tennis balls. Each can has 3 tennis balls. "
                   "How many tennis balls does he have now?",
                   "Roger started with 5 balls. 2 cans of 3 tennis balls each is 6 tennis balls. 5 + 6 = 11.", "11")
CAFETERIA_EXEMPLAR = ("The cafeteria had 23 apples. If they used 20 to make lunch and bought 6 more, how many "
                      "apples do they have?",
                      "The cafeteria had 23 apples originally. They used 20 to make lunch. So they had 23 - 20 = 3. "
                      "They bought 6 more apples, so they have 3 + 6 = 9.", "9")


def cot_cases() -> list:
    return [
        Case("two exemplars of Wei et al. (2022), then a new question",
             ([TENNIS_EXEMPLAR, CAFETERIA_EXEMPLAR], "What is 38 plus 45?")),
        Case("no exemplars: only the question", ([], "What is 80 plus 29?")),
        Case("three short arithmetic exemplars",
             ([("What is 12 plus 30?", "12 + 30 = 42.", "42"), ("What is 7 times 6?", "7 * 6 = 42.", "42"),
               ("What is 50 minus 8?", "50 - 8 = 42.", "42")], "What is 21 times 2?")),
        Case("answers given as ints", ([("What is 2 plus 2?", "2 + 2 = 4.", 4), ("What is 9 plus 1?",
                                                                               "9 + 1 = 10.", 10)],
                                       "What is 5 plus 5?")),
    ]


def judge_cot(case: Case, out) -> str | None:
    expected = reference_chain_of_thought_prompt(*case.args)
    if out is None:
        return "returned None: return the prompt string (did you print it instead?)"
    return _text_problem(case, out, expected, cot_mistakes(), "the prompt")


def explain_cot_error(case: Case, outcome) -> str | None:
    if outcome.error_type == "TypeError" and ("str" in outcome.message and "int" in outcome.message):
        return "an answer may be a number: build the strings with an f-string (or str(answer)), not +"
    if outcome.error_type == "ValueError" and "unpack" in outcome.message:
        return "each exemplar is a tuple (question, reasoning, answer): unpack three values"
    return None


register(Exercise(
    name="chain_of_thought_prompt", chapter="09", signature="(exemplars, question)", points=1,
    make_cases=cot_cases, judge=judge_cot, explain_error=explain_cot_error,
))
