"""The shared judging of one-number answers (grader/numbers.py)."""

import numpy as np
import torch

from grader.compare import Mistake
from grader.core import Case
from grader.numbers import number_problem, ratio_hint, scalar_problem
from grader.values import to_plain


def test_a_plain_number_has_no_type_problem_and_a_bool_is_not_one():
    assert scalar_problem(3.0, 3.0, "the cost") is None and scalar_problem(3, 3.0, "the cost") is None
    assert "should be a Python float; got" in scalar_problem(True, 1.0, "the cost")


def test_tensors_strings_and_arrays_are_named_with_what_to_do():
    right = scalar_problem(to_plain(torch.tensor(2.5)), 2.5, "the cost")
    assert "holding the right number: return a Python float (use .item())" in right
    assert right.mistake == "returned a tensor: return a Python float (use .item())"
    text = scalar_problem("2.5 MWh", 2.5, "the energy")
    assert "not formatted text" in text and text.mistake.startswith("returned formatted text")
    assert "NumPy array of shape (3,)" in scalar_problem(np.zeros(3), 2.5, "the cost")


def test_an_overflowed_int64_tensor_is_explained_only_when_the_answer_is_beyond_int64():
    huge = 6 * 175e9 * 300e9
    overflowed = to_plain(torch.tensor(int(175e9)) * torch.tensor(int(300e9)) * 6)
    assert "int64 overflows" in scalar_problem(overflowed, huge, "the FLOPs")
    assert "overflows" not in scalar_problem(to_plain(torch.tensor(3)), 5, "the count", "int")


def test_ratio_hint_says_how_far_off_and_the_sign():
    assert ratio_hint(3000.0, 3.0) == " (yours is 1000 times the expected value)"
    assert ratio_hint(0.5, 2.0) == " (yours is 1/4 of the expected value)"
    assert ratio_hint(-2.0, 2.0) == " (the opposite sign)"
    assert ratio_hint(0.0, 2.0) == ""


def test_number_problem_names_the_mistake_made_on_the_same_inputs():
    case = Case("two numbers", (3.0, 4.0))
    mistakes = [Mistake("added instead of multiplied", lambda a, b: a + b),
                Mistake("a mistake that does not apply here", lambda a, b: 1 / 0)]
    assert number_problem(case, 12.0, 12.0, "the product", mistakes) is None
    wrong = number_problem(case, 7.0, 12.0, "the product", mistakes, unit="m2")
    assert wrong.startswith("returned 7; expected 12 m2") and wrong.mistake == "added instead of multiplied"
    assert getattr(number_problem(case, 5.0, 12.0, "the product", mistakes), "mistake", None) is None
