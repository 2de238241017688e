"""Exercises, cases, running a learner's function, and the verdict.

An exercise is a list of cases (inputs built from a fixed seed) and a judge of (case, output).
Running the learner's function and judging its outputs are separate steps, so the function can
run in another process (see ``grader.isolated``) and only plain values come back.
"""

import copy
import difflib
import signal
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from grader.result import CaseReport, CheckResult
from grader.values import to_plain

DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Case:
    """One call of the learner's function: a label a learner can read, and the arguments."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    atol: float = 1e-5  # float32 precision; looser where the inputs are large
    rtol: float = 1e-4

    def call(self, fn):
        # Deep copies: a function that modifies its inputs must not change what the judge sees.
        return fn(*copy.deepcopy(self.args), **copy.deepcopy(self.kwargs))


@dataclass
class Outcome:
    """What one call did: ``ok`` with a plain value, or ``error``/``not_implemented``/``timeout``."""

    status: str
    value: Any = None
    error_type: str = ""
    message: str = ""
    where: str = ""  # the learner's line that raised, when known


@dataclass
class Exercise:
    """A registered exercise: its cases and its judge, plus how many points it is worth."""

    name: str
    chapter: str
    signature: str
    make_cases: Callable[[], list]
    judge: Callable[[Case, Any], str | None]  # None when right, else what is wrong
    points: int = 1
    explain_error: Callable[[Case, Outcome], str | None] = lambda case, outcome: None
    timeout_s: float = DEFAULT_TIMEOUT_S


REGISTRY: dict[str, Exercise] = {}


class UnknownExercise(KeyError):
    """``check`` was given a name that no exercise has."""

    def __str__(self):
        return self.args[0]


def register(exercise: Exercise) -> Exercise:
    if exercise.name in REGISTRY:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    REGISTRY[exercise.name] = exercise
    return exercise


def get_exercise(name: str) -> Exercise:
    """The exercise called ``name``, or an error that lists the close and the available names."""
    import grader.checks  # noqa: F401  (registers every chapter's checks)

    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name), REGISTRY, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    by_chapter = {}
    for ex in REGISTRY.values():
        by_chapter.setdefault(ex.chapter, []).append(ex.name)
    listing = "; ".join(f"{ch}: {', '.join(names)}" for ch, names in sorted(by_chapter.items()))
    raise UnknownExercise(f"No exercise is called {name!r}.{hint} Exercises by chapter: {listing}.")


def exercises_of(chapter: str) -> list[Exercise]:
    """The exercises of one chapter (``"02"``), in the order they were registered."""
    import grader.checks  # noqa: F401

    return [ex for ex in REGISTRY.values() if ex.chapter == chapter]


class _Timeout(BaseException):
    """Raised inside the learner's call by the alarm (a BaseException so ``except Exception`` misses it)."""


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit in the main thread (Jupyter runs cells there); no limit elsewhere."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _learner_line(tb) -> str:
    """The last traceback line that is not in the grader or in a library (the learner's code)."""
    frames = [f for f in traceback.extract_tb(tb) if "/grader/" not in f.filename.replace("\\", "/")
              and "site-packages" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"line {f.lineno}: {f.line}" if f.line else f"line {f.lineno}"


def run_case(fn, case: Case, timeout_s: float) -> Outcome:
    """Call ``fn`` on one case and capture what happened as plain data."""
    try:
        with _time_limit(timeout_s):
            value = case.call(fn)
        return Outcome("ok", to_plain(value))
    except NotImplementedError:
        return Outcome("not_implemented")
    except _Timeout:
        return Outcome("timeout", message=f"no result after {timeout_s:g} s")
    except Exception as err:  # the learner's bug, reported as feedback
        return Outcome("error", error_type=type(err).__name__, message=str(err)[:500],
                       where=_learner_line(err.__traceback__))


def run_cases(fn, cases: list, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Outcome]:
    """Run every case, stopping early once the function is a stub or loops."""
    outcomes = []
    for case in cases:
        outcome = run_case(fn, case, timeout_s)
        outcomes.append(outcome)
        if outcome.status in ("not_implemented", "timeout"):
            break
    return outcomes


def verdict(exercise: Exercise, cases: list, outcomes: list[Outcome], origin: str = "") -> CheckResult:
    """Judge the outcomes of the cases (in this process, from plain data only)."""
    reports = []
    for case, outcome in zip(cases, outcomes):
        if outcome.status == "ok":
            try:
                problem = exercise.judge(case, outcome.value)
            except Exception as err:  # a judge must not crash on strange output: say what came back
                problem = f"the output could not be checked ({type(err).__name__}: {err})"
            reports.append(CaseReport(case.label, problem is None, problem or ""))
        elif outcome.status == "not_implemented":
            return CheckResult.not_implemented(exercise, origin)
        elif outcome.status == "timeout":
            reports.append(CaseReport(case.label, False,
                                      f"timed out ({outcome.message}): is there an endless loop?"))
        else:
            hint = exercise.explain_error(case, outcome)
            where = f" at {outcome.where}" if outcome.where else ""
            msg = f"raised {outcome.error_type}{where}: {outcome.message}"
            reports.append(CaseReport(case.label, False, msg + (f"\nLikely mistake: {hint}" if hint else "")))
    if len(outcomes) < len(cases):
        reports.append(CaseReport("remaining cases", False, "not run (an earlier case stopped the check)"))
    return CheckResult(exercise.name, exercise.signature, exercise.points, reports, origin=origin)


def check(name: str, fn: Callable) -> CheckResult:
    """Check a learner's function against the visible cases of exercise ``name``.

    ``result.passed``, ``result.feedback``, ``result.points``, ``result.assert_passed()``.
    """
    exercise = get_exercise(name)
    if not callable(fn):
        raise TypeError(f"check({name!r}, fn) needs the function itself, got {type(fn).__name__}. "
                        f"Pass it without calling it: check({name!r}, {name}).")
    cases = exercise.make_cases()
    return verdict(exercise, cases, run_cases(fn, cases, exercise.timeout_s))
