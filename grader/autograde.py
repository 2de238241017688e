"""Grade one submitted notebook: verdicts in this (trusted) process, the learner's code in a sandboxed child.

``grade_submission(job)`` takes only plain data (the notebook's bytes, the source notebook, the text of the
hidden checks, limits) so that it can run in a local worker process or on a Dask worker. It

1. reads the notebook, saying plainly why when it cannot (empty, not JSON, another assignment's);
2. notes what was tampered with (graded cells deleted or edited, metadata claiming points): those cells
   are restored from the release, as nbgrader does, and the notes go into the result;
3. builds every case here, the hidden ones from the instructor's ``hidden_checks.py`` included, and sends
   only their inputs to the child (``grader.sandbox``), which never sees ``solutions/``;
4. judges the plain outputs with the exercises' judges, and scores each graded cell all or nothing.

The result is plain data too (``SubmissionResult.to_dict()``): the gradebook is written by one process.
"""

import hashlib
import json
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grader import values, versions
from grader.core import Outcome, exercises_of, get_exercise, verdict
from grader.hidden import hidden_summary
from grader.result import CheckResult
from grader.sandbox import Isolation, Limits, Task, describe_end, isolation_report, run_child

HIDDEN_SUFFIX = ":hidden"


@dataclass
class GradeJob:
    """Everything a worker needs to grade one submission, as plain data."""

    assignment: str  # "02-self-attention"
    student: str
    notebook_bytes: bytes
    source_notebook: str  # the instructor's source notebook (JSON text): graded cells and points
    release_notebook: str  # the released notebook (JSON text): nbgrader checksums of the locked cells
    hidden_source: str  # the text of solutions/<assignment>/hidden_checks.py
    limits: Limits = field(default_factory=Limits)
    course_root: str | None = None  # hidden and read-only in the child
    isolate: bool = True
    mode: str = "fork"


@dataclass
class CellScore:
    grade_id: str
    earned: float
    possible: float
    passed: bool
    text: str  # the report shown in this cell of the feedback
    html: str
    mistakes: dict = field(default_factory=dict)  # named mistake -> cases, as data
    reason: str = ""  # why it could not be graded normally (timed out, missing, ...)


@dataclass
class SubmissionResult:
    assignment: str
    student: str
    status: str  # "graded", or "failed: <why>" when nothing could be graded
    notes: list = field(default_factory=list)  # what was tampered with or went wrong, in words
    cells: dict = field(default_factory=dict)  # grade_id -> CellScore
    seconds: float = 0.0
    isolation: list = field(default_factory=list)
    solution_sources: dict = field(default_factory=dict)  # grade_id -> the learner's code (for the feedback)

    @property
    def earned(self) -> float:
        return sum(c.earned for c in self.cells.values())

    @property
    def possible(self) -> float:
        return sum(c.possible for c in self.cells.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SubmissionResult":
        result = cls(**{k: v for k, v in data.items() if k != "cells"})
        result.cells = {k: CellScore(**v) for k, v in data["cells"].items()}
        return result


# ---------------------------------------------------------------- the notebook

def graded_cells(source_nb) -> dict[str, float]:
    """grade_id -> points of every graded cell of the source notebook, in order."""
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"].get("points", 0))
            for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def read_submission(data: bytes) -> tuple[object | None, str | None]:
    """(notebook, None), or (None, why it cannot be read)."""
    import nbformat

    if not data.strip():
        return None, "the file is empty"
    try:
        text = data.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        return None, f"the notebook does not parse (not valid JSON: {str(err)[:120]})"
    try:
        return nbformat.reads(text, as_version=4), None
    except Exception as err:  # a JSON file that is not a notebook
        return None, f"the file is not a Jupyter notebook ({type(err).__name__}: {str(err)[:120]})"


def tampering_notes(submission, release, chapter: str) -> tuple[list[str], str | None]:
    """Notes on graded cells deleted or edited, metadata claiming points, and exercises that a notebook from an
    older release lacks or has in excess; the second item is set when the notebook is not this assignment's."""
    from nbgrader.utils import compute_checksum

    released = {c.metadata["nbgrader"]["grade_id"]: c for c in release.cells if c.metadata.get("nbgrader")}
    submitted: dict[str, object] = {}
    for cell in submission.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            submitted.setdefault(grade_id, cell)
    solutions = [ex.name for ex in exercises_of(chapter)]
    origin = versions.cells_of_origin(submission)
    changes = versions.older_release(submission, release) or versions.Changes()
    if not any(name in submitted for name in solutions) and not any(f"check_{n}" in submitted for n in solutions):
        return [], "this is not a notebook of this assignment (none of its exercise cells are in it)"
    notes = []
    stamped = versions.STAMP in submission.get("metadata", {})
    if changes:
        notes.append(f"this notebook comes from an older release of the assignment ({changes.describe()}): "
                     f"`llmcourse start {chapter} --fresh` gives the learner the current one")
    for grade_id, cell in released.items():
        meta = cell.metadata["nbgrader"]
        if not meta.get("grade"):
            continue
        exercise = grade_id.removeprefix("check_").removeprefix("hidden_")
        if grade_id not in submitted and exercise in changes.new:
            notes.append(f"graded cell `{grade_id}`: `{exercise}` is new in this release and has no cell in the "
                         f"notebook: graded on what the notebook defines")
        elif grade_id not in submitted:
            notes.append(f"graded cell `{grade_id}` was deleted: restored from the release and graded")
        elif meta.get("checksum") and compute_checksum(submitted[grade_id]) != meta["checksum"]:
            from_older = stamped and origin.get(grade_id) == versions.cell_hash(submitted[grade_id])
            notes.append(f"graded cell `{grade_id}` is the older release's: this release's version was graded"
                         if from_older else
                         f"graded cell `{grade_id}` was edited: the release's version was restored and graded")
    for grade_id, cell in submitted.items():
        meta = cell.metadata["nbgrader"]
        if meta.get("grade") and (grade_id not in released or not released[grade_id].metadata["nbgrader"].get("grade")):
            exercise = grade_id.removeprefix("check_").removeprefix("hidden_")
            notes.append(f"graded cell `{grade_id}` belongs to `{exercise}`, which this release does not have: "
                         f"not graded" if exercise in changes.removed else
                         f"cell `{grade_id}`'s metadata claims {meta.get('points', 0)} points: ignored")
    return notes, None


def solution_sources(submission, release) -> dict[str, str]:
    """grade_id -> source of the learner's solution cells (for the autograded notebook)."""
    wanted = {c.metadata["nbgrader"]["grade_id"] for c in release.cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    found = {}
    for cell in submission.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in wanted and grade_id not in found:
            found[grade_id] = cell.source
    return found


# ---------------------------------------------------------------- cases

def load_hidden_cases(hidden_source: str) -> dict:
    """The ``CASES`` of a hidden_checks.py, executed from its text in this (trusted) process."""
    module = types.ModuleType("_hidden_checks")
    exec(compile(hidden_source, "hidden_checks.py", "exec"), module.__dict__)
    return module.CASES


def build_tasks(chapter: str, hidden: dict) -> tuple[list[Task], dict]:
    """One task per graded cell: each exercise's visible cases, then its hidden cases."""
    tasks, cases = [], {}
    for exercise in exercises_of(chapter):
        visible = exercise.make_cases()
        tasks.append(Task(exercise.name, exercise.name, visible))
        cases[exercise.name] = visible
        if exercise.name in hidden:
            secret = hidden[exercise.name]()
            tasks.append(Task(exercise.name + HIDDEN_SUFFIX, exercise.name, secret))
            cases[exercise.name + HIDDEN_SUFFIX] = secret
    return tasks, cases


_WARMED: set = set()


def warm_imports(release) -> None:
    """Import, in this worker, what the release notebook imports (trusted: the instructor's), once per
    notebook, so that every forked child inherits it instead of importing it again (matplotlib alone costs
    a second or more per submission)."""
    import ast
    import os

    from grader.notebook import definition_cells

    key = hashlib.sha256(json.dumps(release, sort_keys=True).encode()).hexdigest()
    if key in _WARMED:
        return
    os.environ.setdefault("MPLBACKEND", "Agg")
    for _, _, kept in definition_cells(release):
        for node in kept if isinstance(kept, list) else []:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                try:
                    exec(compile(ast.Module(body=[node], type_ignores=[]), "<release imports>", "exec"), {})
                except Exception:  # an import that fails here fails in the child too, with its own message
                    pass
    _WARMED.add(key)


def _outcomes(event: dict) -> list[Outcome]:
    return [Outcome(o["status"], values.loads(o["value"]), o["error_type"], o["message"], o["where"],
                    values.loads(o["observations"])) for o in event["outcomes"]]


def run_tasks(job: GradeJob, tasks: list[Task], slot: int) -> tuple[dict, dict]:
    """Run the tasks in children (a new child after one dies), returning (events by key, reasons by key)."""
    isolation = Isolation(job.course_root, slot, job.isolate)
    results, reasons = {}, {}
    pending = list(tasks)
    while pending:
        run = run_child(job.notebook_bytes, f"{job.assignment}.ipynb", pending, job.limits, isolation, job.mode)
        started = None
        for event in run.events:
            key = event.get("key")
            if event["event"] == "start":
                started = key
            elif event["event"] in ("result", "missing", "too_large") and key in {t.key for t in pending}:
                results[key] = event
            elif event["event"] == "crash":  # the grading machinery failed in the child: its last line says why
                last = (event.get("message", "").strip().splitlines() or ["?"])[-1]
                reasons["*"] = f"the grader could not run this notebook ({last[:200]})"
        if started is None:  # died while loading the definitions: every remaining cell fails with the reason
            why = reasons.get("*") or ("loading the notebook's definitions " + describe_end(run, job.limits))
            for task in pending:
                reasons[task.key] = why
            break
        if started not in results:  # died inside this task: it fails, the others get a new child
            reasons[started] = describe_end(run, job.limits)
        pending = [t for t in pending if t.key not in results and t.key not in reasons]
    return results, reasons


# ---------------------------------------------------------------- verdicts and scores

def _verdict_for(key: str, exercise, cases: list, event: dict | None, reason: str | None) -> CheckResult:
    if event is None:
        return CheckResult.error(exercise, reason or "not run")
    if event["event"] == "missing":
        return CheckResult.error(exercise, event["message"])
    if event["event"] == "too_large":
        return CheckResult.error(exercise, f"the function's outputs are too large to check ({event['size']:,} bytes)")
    return verdict(exercise, cases, _outcomes(event))


def cell_score(grade_id: str, possible: float, result: CheckResult, hidden: bool, reason: str = "") -> CellScore:
    """All or nothing, like nbgrader's test cells; the hidden cells' report shows counts and mistakes only."""
    passed = result.passed
    if hidden:
        text = f"{result.name}: hidden tests passed" if passed else hidden_summary(result)
        html = f"<pre>{text}</pre>"
    else:
        text, html = result.feedback, result._repr_html_()
    return CellScore(grade_id, possible if passed else 0.0, possible, passed, text, html, result.mistakes, reason)


def grade_submission(job: GradeJob, slot: int = 0) -> dict:
    """Grade one submission (see the module docstring); returns ``SubmissionResult.to_dict()``."""
    import nbformat

    start = time.perf_counter()
    chapter = job.assignment[:2]
    source = nbformat.reads(job.source_notebook, as_version=4)
    points = graded_cells(source)
    result = SubmissionResult(job.assignment, job.student, "graded",
                              isolation=isolation_report(Isolation(job.course_root, slot, job.isolate)))

    def fail_all(why: str) -> dict:
        result.status = f"failed: {why}"
        for grade_id, possible in points.items():
            result.cells[grade_id] = CellScore(grade_id, 0.0, possible, False, f"not graded: {why}",
                                               f"<p>not graded: {why}</p>", {}, why)
        result.seconds = time.perf_counter() - start
        return result.to_dict()

    submission, unreadable = read_submission(job.notebook_bytes)
    if submission is None:
        return fail_all(unreadable)
    release = nbformat.reads(job.release_notebook, as_version=4)
    result.notes, foreign = tampering_notes(submission, release, chapter)
    if foreign:
        return fail_all(foreign)
    result.solution_sources = solution_sources(submission, release)
    warm_imports(release)
    tasks, cases = build_tasks(chapter, load_hidden_cases(job.hidden_source))
    events, reasons = run_tasks(job, tasks, slot)
    for task in tasks:
        hidden = task.key.endswith(HIDDEN_SUFFIX)
        grade_id = f"{'hidden' if hidden else 'check'}_{task.name}"
        if grade_id not in points:
            continue
        exercise = get_exercise(task.name)
        reason = reasons.get(task.key, "")
        check = _verdict_for(task.key, exercise, cases[task.key], events.get(task.key), reason)
        result.cells[grade_id] = cell_score(grade_id, points[grade_id], check, hidden, reason)
        if reason:
            result.notes.append(f"{task.name}{' (hidden tests)' if hidden else ''}: {reason}")
    for grade_id, possible in points.items():  # graded cells without an exercise (none in this course today)
        result.cells.setdefault(grade_id, CellScore(grade_id, 0.0, possible, False, "no check for this cell",
                                                    "<p>no check for this cell</p>", {}, "no check"))
    result.seconds = time.perf_counter() - start
    return result.to_dict()


def fingerprint(chapter: str, *texts: str) -> str:
    """A hash of what a grade depends on besides the submission: the texts given (source notebook, release,
    hidden cases), the grader's core and the modules holding this chapter's checks."""
    import sys

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
    modules = {Path(sys.modules[ex.judge.__module__].__file__) for ex in exercises_of(chapter)}
    for path in sorted(Path(__file__).parent.glob("*.py")) + sorted(modules):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]
