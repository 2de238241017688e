"""Exercises, cases, running a learner's function, and the verdict.

An exercise is a list of cases (inputs built from a fixed seed) and a judge of (case, output).
Running the learner's function and judging its outputs are separate steps, so the function can
run in another process (see ``grader.isolated``) and only plain values come back.
"""

import copy
import difflib
import inspect
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from grader.forbidden import ForbiddenCall, enforced
from grader.result import CaseReport, CheckResult
from grader.values import to_plain

DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Case:
    """One call of the learner's function: a label a learner can read, and the arguments.

    ``run`` calls the function on fresh copies of the arguments and returns ``(output, observations)``:
    plain facts about what the call did besides returning (by default, which arguments it changed in
    place). A case that judges side effects (an optimizer stepped, an expert called) overrides ``run``,
    does its set-up and bookkeeping around the call, and returns what it saw as plain values. Cases are
    built in the grading process and may run in a child process, so they must pickle: subclasses live
    in ``grader``, and their arguments are tensors, numbers, strings and containers of them.
    """

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    atol: float = 1e-5  # float32 precision; looser where the inputs are large
    rtol: float = 1e-4

    def inputs(self) -> tuple[tuple, dict]:
        # Deep copies: a function that modifies its inputs must not change what the judge sees.
        return copy.deepcopy(self.args), copy.deepcopy(self.kwargs)

    def invoke(self, fn, args: tuple, kwargs: dict):
        """How the function is called (a subclass may catch an expected exception here)."""
        return fn(*args, **kwargs)

    def call(self, fn):
        args, kwargs = self.inputs()
        return self.invoke(fn, args, kwargs)

    def run(self, fn) -> tuple:
        """(output, observations) of one call of ``fn``."""
        args, kwargs = self.inputs()
        value = self.invoke(fn, args, kwargs)
        changed = [i for i, (after, before) in enumerate(zip(args, self.args)) if _changed(after, before)]
        changed += [k for k in kwargs if _changed(kwargs[k], self.kwargs[k])]
        return value, ({"modified_inputs": changed} if changed else {})


RAISED = "raised ValueError"  # what a RaisesCase returns, with the message, when the call raised ValueError


@dataclass
class RaisesCase(Case):
    """A case whose call may raise ValueError (an exercise's rule for bad input, right in some cases and wrong
    in others): the error comes back as the plain value ``(RAISED, message)`` for the judge."""

    def invoke(self, fn, args, kwargs):
        try:
            return super().invoke(fn, args, kwargs)
        except ValueError as err:
            return (RAISED, str(err)[:300])


def raised(out) -> bool:
    """Did the call of a RaisesCase raise ValueError?"""
    return isinstance(out, tuple) and len(out) == 2 and out[0] == RAISED


def _changed(after, before) -> bool:
    """Did a call change this argument in place (tensors, and containers of tensors)?"""
    import torch

    if isinstance(before, torch.Tensor):
        if not isinstance(after, torch.Tensor) or after.shape != before.shape or after.dtype != before.dtype:
            return True
        same = (after == before) | (after.isnan() & before.isnan()) if after.is_floating_point() else after == before
        return not bool(same.all())
    if isinstance(before, (list, tuple)):
        return len(after) != len(before) or any(_changed(a, b) for a, b in zip(after, before))
    if isinstance(before, dict):
        return set(after) != set(before) or any(_changed(after[k], before[k]) for k in before)
    return False


@dataclass
class Outcome:
    """What one call did: ``ok`` with a plain value, or ``error``/``not_implemented``/``timeout``/``forbidden``."""

    status: str  # "ok", "error", "not_implemented", "timeout" or "forbidden"
    value: Any = None
    error_type: str = ""
    message: str = ""
    where: str = ""  # the learner's line that raised, when known
    observations: dict = field(default_factory=dict)  # plain facts the case saw besides the output


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
    forbidden: tuple = ()  # grader.forbidden.Forbidden: library functions this exercise rebuilds
    pure: bool = True  # the function must not change its arguments in place

    @property
    def argument_names(self) -> list[str]:
        """The parameter names of the signature, for messages about arguments."""
        return [part.split("=")[0].strip() for part in self.signature.strip("()").split(",") if part.strip()]

    def judge_outcome(self, case: Case, value, observations: dict):
        """The judge's verdict on one output; judges with a third parameter also get the observations."""
        if len(inspect.signature(self.judge).parameters) >= 3:
            return self.judge(case, value, observations)
        return self.judge(case, value)

    @property
    def forbidden_text(self) -> str:
        """How the exercise's text names what it forbids ("" when nothing is)."""
        return ", ".join(f"`{f.name}`" for f in self.forbidden)


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
    from grader.checks import register_all

    if name in REGISTRY:  # its chapter is registered already (``exercises_of``): no other chapter is imported
        return REGISTRY[name]
    register_all()
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
    from grader.checks import register_chapter

    register_chapter(chapter)
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


def run_case(fn, case: Case, exercise: Exercise, timeout_s: float | None = None) -> Outcome:
    """Call ``fn`` on one case and capture what happened as plain data."""
    timeout_s = exercise.timeout_s if timeout_s is None else timeout_s
    with enforced(exercise.forbidden, fn) as hits:
        try:
            with _time_limit(timeout_s):
                value, observations = case.run(fn)
            outcome = Outcome("ok", to_plain(value), observations=to_plain(observations))
        except NotImplementedError:
            outcome = Outcome("not_implemented")
        except _Timeout:
            outcome = Outcome("timeout", message=f"no result after {timeout_s:g} s")
        except SystemExit as err:  # exit() or sys.exit() inside the function: this case fails, the check goes on
            outcome = Outcome("error", error_type="SystemExit", message=f"the function called exit() or sys.exit() "
                              f"({err.code!r})", where=_learner_line(err.__traceback__))
        except ForbiddenCall as err:
            outcome = Outcome("forbidden", error_type=err.forbidden.name, message=str(err),
                              where=_learner_line(err.__traceback__))
        except Exception as err:  # the learner's bug, reported as feedback
            outcome = Outcome("error", error_type=type(err).__name__, message=str(err)[:500],
                              where=_learner_line(err.__traceback__))
    if hits and outcome.status != "forbidden":  # caught and hidden by the learner's code: still refused
        outcome = Outcome("forbidden", error_type=hits[0][0].name, message=hits[0][1])
    return outcome


def run_cases(fn, cases: list, exercise: Exercise, budget_s: float | None = None) -> list[Outcome]:
    """Run every case, stopping early once the function is a stub or loops. ``budget_s`` bounds the time of
    all the cases together (a graded cell's time limit); each case also stays within the exercise's own."""
    outcomes = []
    deadline = None if budget_s is None else time.monotonic() + budget_s
    for case in cases:
        timeout_s = exercise.timeout_s if deadline is None else min(exercise.timeout_s,
                                                                      max(deadline - time.monotonic(), 0.05))
        outcome = run_case(fn, case, exercise, timeout_s)
        outcomes.append(outcome)
        if outcome.status in ("not_implemented", "timeout"):
            break
    return outcomes


def _judge_ok(exercise: Exercise, case: Case, outcome: Outcome) -> CaseReport:
    try:
        problem = exercise.judge_outcome(case, outcome.value, outcome.observations)
    except Exception as err:  # a judge must not crash on strange output: say what came back
        problem = f"the output could not be checked ({type(err).__name__}: {err})"
    modified = outcome.observations.get("modified_inputs") if exercise.pure else None
    if modified:
        names = exercise.argument_names
        which = ", ".join(f"`{names[i]}`" if isinstance(i, int) and i < len(names) else f"`{i}`"
                          for i in modified)
        in_place = (f"changes its argument {which} in place (an in-place operation such as `x -= ...`, "
                    f"`x.exp_()` or `x[...] = ...`): the caller's tensor is modified; compute a new tensor")
        if problem is None:
            return CaseReport(case.label, False, f"the output is right, but the call changed {which}.", in_place)
        return CaseReport(case.label, False, f"{problem}\nThe call also changed {which} in place.",
                          getattr(problem, "mistake", None) or in_place)
    if problem is None:
        return CaseReport(case.label, True)
    return CaseReport(case.label, False, str(problem), getattr(problem, "mistake", None))


def verdict(exercise: Exercise, cases: list, outcomes: list[Outcome], origin: str = "") -> CheckResult:
    """Judge the outcomes of the cases (in this process, from plain data only)."""
    reports = []
    for case, outcome in zip(cases, outcomes):
        if outcome.status == "ok":
            reports.append(_judge_ok(exercise, case, outcome))
        elif outcome.status == "not_implemented":
            return CheckResult.not_implemented(exercise, origin)
        elif outcome.status == "timeout":
            reports.append(CaseReport(case.label, False, f"timed out ({outcome.message})",
                                      "an endless loop (or a very slow one): no result in time"))
        elif outcome.status == "forbidden":
            where = f" at {outcome.where}" if outcome.where else ""
            named = next(f.mistake for f in exercise.forbidden if f.name == outcome.error_type)
            reports.append(CaseReport(case.label, False, f"refused{where}: {outcome.message}", named))
        else:
            hint = exercise.explain_error(case, outcome)
            where = f" at {outcome.where}" if outcome.where else ""
            reports.append(CaseReport(case.label, False, f"raised {outcome.error_type}{where}: {outcome.message}",
                                      hint))
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
    return verdict(exercise, cases, run_cases(fn, cases, exercise))
