"""What every chapter's checks must do (COURSE.md, "One set of checks, three consumers"), shared by
the tests/test_checks_NN.py files: helpers, and ``ChapterContract``, the tests each chapter inherits.

The ``hidden_dir`` fixture these tests use (run_hidden reads the hidden cases of the module's
ASSIGNMENT, in ``solutions/<ASSIGNMENT>/``) is in tests/conftest.py.
"""

from pathlib import Path

import pytest
import torch

import grader
import grader.core
import grader.hidden
from grader import check
from grader.notebook import load_definitions

ROOT = Path(__file__).resolve().parents[1]


def load_reference(assignment: str):
    """The reference solution notebook of ``assignment``, loaded in-process (it is trusted)."""
    loaded = load_definitions(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    assert not loaded.problems, loaded.problems
    return loaded


def reference_fn(reference, name):
    fn = reference.function(name)
    assert fn is not None, reference.missing_message(name)
    return fn


def assert_fails_naming(result, phrase):
    """The check failed, and its feedback contains the diagnosis ``phrase``."""
    assert not result.passed, f"a wrong answer passed:\n{result.feedback}"
    assert result.status == "failed"
    assert phrase in result.feedback, f"expected the diagnosis {phrase!r} in the feedback:\n{result.feedback}"


def own_softmax(x, dim=-1):
    """A learner's own softmax, as written in exercise 02 (the exercises refuse torch.softmax itself)."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def own_layer_norm(x, weight, bias, eps=1e-5):
    """A learner's own LayerNorm, as written in exercise 03 (the exercises refuse F.layer_norm itself)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def stub(*args, **kwargs):
    # YOUR CODE HERE
    raise NotImplementedError()


def loops_forever(*args, **kwargs):
    while True:
        pass


class ChapterContract:
    """Subclass with ASSIGNMENT and EXERCISES; tests/conftest.py parametrizes ``exercise`` over EXERCISES.

    The module defining the subclass provides a ``reference`` fixture (``load_reference``), and the
    subclass defines ``hidden_wrong``: a wrong answer to each exercise that its hidden cases must fail.
    """

    ASSIGNMENT: str
    EXERCISES: list[str]
    # The hidden failure of ``hidden_wrong`` names a mistake ("Likely mistake"); False for a chapter whose
    # hidden_wrong is fitted to the visible cases (right on them, a constant elsewhere): no mistake to name.
    HIDDEN_WRONG_NAMES_A_MISTAKE = True

    def hidden_wrong(self, exercise, reference):
        """A wrong answer to ``exercise`` (a function) that its hidden cases must fail."""
        raise NotImplementedError(f"{type(self).__module__}.{type(self).__name__} defines no hidden_wrong")

    def test_reference_solution_passes(self, reference, exercise):
        result = check(exercise, reference_fn(reference, exercise))
        assert result.passed, result.feedback
        assert result.status == "passed"

    def test_stub_is_not_implemented_yet(self, exercise):
        result = check(exercise, stub)
        assert not result.passed
        assert result.status == "not implemented"
        assert "not implemented yet" in result.feedback
        assert "Traceback" not in result.feedback
        assert result.points == (0, grader.get_exercise(exercise).points)

    def test_released_stub_is_not_implemented_yet(self, exercise):
        released = ROOT / "exercises" / self.ASSIGNMENT / f"{self.ASSIGNMENT}.ipynb"
        if not released.is_file():
            pytest.skip("the released exercise notebook is not generated")
        released_stub = load_definitions(released).function(exercise)
        assert released_stub is not None, f"{released} does not define {exercise}"
        result = check(exercise, released_stub)
        assert result.status == "not implemented", result.feedback
        assert "not implemented yet" in result.feedback

    def test_chapter_has_exactly_these_exercises(self):
        assert [ex.name for ex in grader.exercises_of(self.ASSIGNMENT[:2])] == self.EXERCISES

    def test_endless_loop_times_out(self, monkeypatch, exercise):
        monkeypatch.setattr(grader.core.get_exercise(exercise), "timeout_s", 1.0)  # restored after the test
        result = check(exercise, loops_forever)
        assert not result.passed
        assert result.status == "failed"
        assert "timed out" in result.feedback
        assert "endless loop" in result.feedback

    # ---- hidden checks (run_hidden, as the source notebook's hidden test cells call it)

    def test_hidden_checks_pass_the_reference(self, hidden_dir, reference, exercise, capsys):
        grader.hidden.run_hidden(exercise, reference_fn(reference, exercise))
        assert "hidden tests passed" in capsys.readouterr().out

    def test_hidden_checks_on_a_stub_say_not_implemented(self, hidden_dir, exercise):
        with pytest.raises(AssertionError, match="not implemented yet"):
            grader.hidden.run_hidden(exercise, stub)

    def test_hidden_checks_fail_a_wrong_answer_without_showing_the_cases(self, hidden_dir, reference, exercise):
        wrong = self.hidden_wrong(exercise, reference)
        with pytest.raises(AssertionError) as info:
            grader.hidden.run_hidden(exercise, wrong)
        message = str(info.value)
        assert exercise in message
        assert "hidden test cases" in message
        if self.HIDDEN_WRONG_NAMES_A_MISTAKE:
            assert "Likely mistake" in message
        labels = [case.label for case in grader.hidden.load_hidden_cases(exercise)]
        assert labels
        for label in labels:
            assert label not in message, f"the hidden case {label!r} is shown: {message}"
