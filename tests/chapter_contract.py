"""What every chapter's checks must do (COURSE.md, "One set of checks, three consumers"), shared by
the tests/checks/test_<slug>.py files: helpers, and ``ChapterContract``, the tests each chapter inherits.

The fixtures these tests use are in tests/conftest.py: ``reference`` (the reference solution of the
module's ASSIGNMENT) and ``hidden_dir`` (run_hidden reads the hidden cases of the module's ASSIGNMENT, in
``solutions/<ASSIGNMENT>/``). conftest.py also parametrizes the tests over the class's attributes.
"""

from pathlib import Path

import numpy as np
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


# Answers of the wrong type, with what the feedback must say about them (a phrase, or a tuple of phrases it
# must all contain). ChapterContract.GARBAGE by default; a chapter adds its own entries (A_LIST, ...).
DEFAULT_GARBAGE = [
    pytest.param(lambda *a, **k: "hello", ("str", "hello"), id="a-string"),
    pytest.param(lambda *a, **k: None, "None", id="None"),
    pytest.param(lambda *a, **k: np.zeros(3), "NumPy array", id="a-numpy-vector"),
    pytest.param(lambda *a, **k: np.zeros((3, 3)), "NumPy array", id="a-numpy-array"),
    pytest.param(lambda *a, **k: object(), "object", id="an-object"),
]
# Lists are not in the default: a list of ints is the right type for some exercises (semantic_search,
# pronoun_log_odds), and an exercise returning a pair unpacks a list ("got 3 values", "got float 1.5").
A_LIST = pytest.param(lambda *a, **k: [1, 2, 3], "a list of 3", id="a-list")
A_MIXED_LIST = pytest.param(lambda *a, **k: [1.5, "x"], "list", id="a-mixed-list")


class ChapterContract:
    """Subclass with ASSIGNMENT and EXERCISES; tests/conftest.py parametrizes ``exercise`` over EXERCISES,
    and each test marked ``contract_parametrize(argnames, attribute)`` over the rows of that class attribute.

    The subclass defines ``hidden_wrong``: a wrong answer to each exercise that its hidden cases must fail,
    and lists NAMED_MISTAKES and ALL_OR_NOTHING; GARBAGE has a default. A row list left empty shows as a
    skipped test ("got empty parameter set").
    """

    ASSIGNMENT: str
    EXERCISES: list[str]
    # The hidden failure of ``hidden_wrong`` names a mistake ("Likely mistake"); False for a chapter whose
    # hidden_wrong is fitted to the visible cases (right on them, a constant elsewhere): no mistake to name.
    HIDDEN_WRONG_NAMES_A_MISTAKE = True
    # (exercise, wrong answer) rows, or pytest.param with an id: every failing case of these names a mistake
    NAMED_MISTAKES: list = []
    # (exercise, right answer, wrong answer) rows: full points for the one, none for the other
    ALL_OR_NOTHING: list = []
    # pytest.param(function returning garbage, what the feedback says, id=...), tried on every exercise of
    # GARBAGE_EXERCISES (None: of EXERCISES)
    GARBAGE: list = DEFAULT_GARBAGE
    GARBAGE_EXERCISES: list[str] | None = None

    @classmethod
    def garbage_cases(cls):
        """The rows of test_garbage_output_fails_with_a_clear_message: GARBAGE on each of GARBAGE_EXERCISES."""
        exercises = cls.EXERCISES if cls.GARBAGE_EXERCISES is None else cls.GARBAGE_EXERCISES
        return [pytest.param(name, *garbage.values, id=f"{garbage.id}-{name}", marks=garbage.marks)
                for garbage in cls.GARBAGE for name in exercises]

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

    @pytest.mark.contract_parametrize("name, fn", "NAMED_MISTAKES")
    def test_every_failing_case_names_a_likely_mistake(self, name, fn):
        result = check(name, fn)
        assert not result.passed
        unnamed = [c.label for c in result.cases if not c.passed and not c.mistake]
        assert not unnamed, f"no likely mistake named for {unnamed}:\n{result.feedback}"

    @pytest.mark.contract_parametrize("name, right, wrong", "ALL_OR_NOTHING")
    def test_points_are_all_or_nothing(self, name, right, wrong):
        possible = grader.get_exercise(name).points
        assert possible > 0
        assert check(name, right).points == (possible, possible)
        assert check(name, wrong).points == (0, possible)

    @pytest.mark.contract_parametrize("name, fn, what", "garbage_cases")
    def test_garbage_output_fails_with_a_clear_message(self, name, fn, what):
        result = check(name, fn)
        assert not result.passed
        assert result.status == "failed"
        for phrase in (what,) if isinstance(what, str) else what:
            assert phrase in result.feedback, result.feedback
        assert "could not be checked" not in result.feedback, result.feedback
        assert "Traceback" not in result.feedback

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
