"""The course's grader: one set of checks for learners, nbgrader and pytest.

    from grader import check
    check("softmax", softmax).assert_passed()
"""

from grader.core import UnknownExercise, check, exercises_of, get_exercise
from grader.result import CheckFailed, CheckResult

__all__ = ["check", "CheckResult", "CheckFailed", "UnknownExercise", "get_exercise", "exercises_of"]
