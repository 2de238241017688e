"""Hidden cases for chapter 09 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other values, so that an answer fitted to the
visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import random

from grader.checks.evaluating_llms import scoring_case
from grader.core import Case


def score_choices_cases():
    return [
        scoring_case("eight choices, two of them equal", 1901, "Q: Which fish is in this movie? a shark\nA:",
                     ["jaws", "finding nemo", "up", "jaws", "the shining hotel", "a fish", "no", "maybe so"]),
        scoring_case("length_normalize=True over choices of one to nine tokens", 1902,
                     "Q: What date is it tomorrow?\nA:", ["Monday", "12/24/1937", "not today", "the day after"],
                     length_normalize=True),
        scoring_case("a long prompt, choices spelled letter by letter", 1903,
                     "Q: What is the capital of Italy? Is it Milan, or is it Rome?\nQ: and so?\nA:",
                     ["Rome", "xyz", "Milan"]),
        scoring_case("a one-token choice, then longer ones", 1904, "Q: Was it fun?\nA:",
                     ["yes", "not very fun", "no, it was boring"], length_normalize=False),
    ]


def multiple_choice_grade_cases():
    rng = random.Random(9090)
    choice_scores, target_scores = [], []
    for k in range(12):
        m = rng.choice([2, 4, 5])
        scores = [float(rng.randint(-6, -1)) for _ in range(m)]  # integers: ties are frequent
        names = [f"option {k}-{j}" for j in range(m)][::-1]
        target_scores.append({n: float(j == k % m) for j, n in enumerate(names)})
        choice_scores.append(scores)
    return [
        Case("twelve examples with frequent ties at various positions", (choice_scores, target_scores)),
        Case("two choices per example, answers in reverse alphabetical order",
             ([[-0.1, -3.0], [-2.0, -0.4], [-1.0, -1.0]], [{"true": 1, "false": 0}, {"true": 0, "false": 1},
                                                            {"true": 0, "false": 1}])),
        Case("partial credit that is never 1", ([[-5.0, -1.0, -9.0], [-1.0, -2.0, -3.0]],
                                                [{"x": 0.2, "y": 0.6, "z": 0.0}, {"u": 0.4, "v": 0.0, "w": 0.9}])),
        Case("an example with a single choice", ([[-4.0], [-1.0, -0.5]], [{"only": 0.5}, {"a": 1, "b": 0}])),
    ]


def grade_chain_of_thought_cases():
    return [
        Case("three answers in one output, the last on the last line, and others",
             (["First the answer is 1.\nThen the answer is 2.\nFinally, the answer is 3.",
               "So the answer is (b).\nCheck: 2 + 2 = 4, and the rest follows.", "tHe AnSwEr Is Yes"],
              ["3", "(B)", "yes"])),
        Case("inner spaces and periods, a near miss of the phrase, tabs and spaces",
             (["The answer is 05/01/2021 at 3 p.m..", "My answer: 12. An answer is not given.",
               "Thus the answer is \t 64.  \nQ:", "The answer is new york."],
              ["05/01/2021 at 3 p.m.", "12", "64", "newyork"])),
        Case("Kannada and emoji answers, whitespace around the targets",
             (["ಉತ್ತರ: the answer is ನದಿ.", "The answer is 🐟 Nemo", "The answer is ಚಂದ್ರ"],
              ["\tನದಿ ", "🐟 nemo\n", "ಆಕಾಶ"])),
        Case("no output has an answer", (["I do not know.", "Maybe 4?"], ["4", "4"])),
    ]


CASES = {
    "score_choices": score_choices_cases,
    "multiple_choice_grade": multiple_choice_grade_cases,
    "grade_chain_of_thought": grade_chain_of_thought_cases,
}
