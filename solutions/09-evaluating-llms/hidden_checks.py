"""Hidden cases for chapter 09 (instructor's tree only: never released, never shown in feedback).

They test the same behaviour as the visible checks on other values, so that an answer fitted to the
visible cases fails. ``grader.hidden.run_hidden`` judges them with the visible judge.
"""

import random

from grader.core import Case


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
    ]


def exact_match_cases():
    return [
        Case("Kannada and emoji answers with stray whitespace",
             (["\tನದಿ ", "🐟 nemo", "ಚಂದ್ರ"], ["ನದಿ", "🐟 Nemo\n", "ಆಕಾಶ"])),
        Case("upper-case targets, lower-case predictions", (["rg5#", "qxf7#", "e4"], ["Rg5#", "Qxf7#", "Ke2"])),
        Case("a longer list with a few matches", ([str(n) for n in range(10)], [str(n) for n in (0, 2, 1, 3, 9, 5, 6,
                                                                                                 8, 7, 4)])),
        Case("prefixes are not matches", (["1000", "10", "ab"], ["100", "100", "abc"])),
    ]


def extract_final_answer_cases():
    return [
        Case("three answers, the last on the last line",
             ("First the answer is 1.\nThen the answer is 2.\nFinally, the answer is 3.",)),
        Case("the answer line is followed by a check",
             ("So the answer is (b).\nCheck: 2 + 2 = 4, and the rest follows.",)),
        Case("mixed-case phrase at the very start", ("tHe AnSwEr Is Yes",)),
        Case("the answer has inner spaces and a period in it", ("The answer is 05/01/2021 at 3 p.m..",)),
        Case("a near miss of the phrase", ("My answer: 12. An answer is not given.",)),
        Case("tabs and spaces around the answer", ("Thus the answer is \t 64.  \nQ:",)),
    ]


def chain_of_thought_prompt_cases():
    return [
        Case("one date exemplar, a date question",
             ([("Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?",
                "One day after 04/30/2021 is 05/01/2021.", "05/01/2021")],
              "Today is Christmas Eve of 1937. What is the date tomorrow in MM/DD/YYYY?")),
        Case("multiple-choice answers in parentheses",
             ([("Which is heavier? (a) a feather (b) a brick", "A brick weighs more than a feather.", "(b)"),
               ("Which is warmer? (a) ice (b) tea", "Tea is hot and ice is cold.", "(b)"),
               ("Which is a fruit? (a) apple (b) chair", "An apple grows on a tree.", "(a)")],
              "Which is louder? (a) a whisper (b) a drum")),
        Case("an exemplar whose reasoning spans two lines",
             ([("What is 3 times 4 plus 1?", "3 * 4 = 12.\n12 + 1 = 13.", 13)], "What is 2 times 5 plus 2?")),
    ]


CASES = {
    "multiple_choice_grade": multiple_choice_grade_cases,
    "exact_match": exact_match_cases,
    "extract_final_answer": extract_final_answer_cases,
    "chain_of_thought_prompt": chain_of_thought_prompt_cases,
}
