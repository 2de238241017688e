"""The instructor's course folder, as nbgrader lays it out, and everything written into it.

``solutions/NN-topic/`` (source notebooks and hidden checks), ``exercises/NN-topic/`` (the release),
``submitted/<student>/NN-topic/`` (collected work), ``autograded/<student>/NN-topic/`` (the graded copy
and ``grading.json``, our record of the result), ``feedback/``, ``gradebook.db``. Only the grading
process writes here: results from workers arrive as plain data and are written one at a time.
"""

import copy
import csv
import functools
import io
import json
import os
import re
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbformat.v4 import new_output

from grader import versions
from grader.autograde import SubmissionResult

RECORD = "grading.json"
COLLECTED = "collected"  # earlier versions of a resubmitted notebook, never overwritten
TIMESTAMP = "timestamp.txt"
STUDENT_ID = re.compile(r"[^A-Za-z0-9._@+-]+")


class CourseError(RuntimeError):
    """Something about the course folder that the instructor must fix; the message says how."""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


@dataclass
class Course:
    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> "Course":
        """The course folder: the nearest folder upwards that holds nbgrader_config.py."""
        here = Path(start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / "nbgrader_config.py").is_file():
                return cls(folder)
        raise CourseError(f"no nbgrader_config.py in {here} or above: run `llmcourse grade` from the course folder")

    # ------------------------------------------------------------ paths

    def assignments(self, targets: list[str]) -> list[str]:
        """Each target as ``assignment()`` names it; ``all`` is every assignment in solutions/, in order."""
        names = []
        for target in targets:
            found = self._assignment_names() if target == "all" else [self.assignment(target)]
            names += [name for name in found if name not in names]
        return names

    def _assignment_names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "solutions").glob("[0-9][0-9]-*") if p.is_dir())

    def assignment(self, target: str) -> str:
        """``02``, ``2`` or ``02-self-attention`` -> ``02-self-attention`` (from solutions/)."""
        names = self._assignment_names()
        match = re.fullmatch(r"(\d{1,2})(-.*)?", target)
        for name in names:
            if target == name or (match and name[:2] == f"{int(match.group(1)):02d}"):
                return name
        raise CourseError(f"no assignment {target!r} in {self.root / 'solutions'}; the assignments are: "
                          f"{', '.join(names) or 'none'}")

    def released_assignments(self) -> list[str]:
        """The assignments whose release is in exercises/, in order."""
        return [name for name in self._assignment_names() if self.release(name).is_file()]

    def source(self, assignment: str) -> Path:
        return self.root / "solutions" / assignment / f"{assignment}.ipynb"

    def release(self, assignment: str) -> Path:
        return self.root / "exercises" / assignment / f"{assignment}.ipynb"

    def hidden_checks(self, assignment: str) -> Path:
        return self.root / "solutions" / assignment / "hidden_checks.py"

    def grading_texts(self, assignment: str) -> tuple[str, str, str]:
        """(the source notebook, the release, the hidden checks) as text: what grading an assignment reads."""
        hidden = self.hidden_checks(assignment)
        return (self.source(assignment).read_text(), self.release(assignment).read_text(),
                hidden.read_text() if hidden.is_file() else "CASES = {}\n")

    def submitted(self, student: str, assignment: str) -> Path:
        return self.root / "submitted" / student / assignment / f"{assignment}.ipynb"

    def autograded(self, student: str, assignment: str) -> Path:
        return self.root / "autograded" / student / assignment / f"{assignment}.ipynb"

    def record_path(self, student: str, assignment: str) -> Path:
        return self.root / "autograded" / student / assignment / RECORD

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / 'gradebook.db'}"

    def nbgrader(self, *args: str) -> subprocess.CompletedProcess:
        """Run an nbgrader command in the course folder (its ``python3`` kernel is this environment's)."""
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=self.root, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise CourseError(f"nbgrader {' '.join(args)} failed:\n{tail}")
        return proc

    @functools.cached_property
    def nbgrader_api(self):
        """nbgrader's own API (what formgrader calls) on this course and its nbgrader_config.py, in this process:
        several assignments released or fed back pay for importing nbgrader once, not once per command."""
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        from traitlets.config.loader import PyFileConfigLoader

        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):  # nbgrader runs alembic by name
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        config = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        return NbGraderAPI(CourseDirectory(config=config, root=str(self.root)), config=config)

    def _api(self, step: str, assignment: str) -> None:
        """One nbgrader API step (``generate_assignment``, ``generate_feedback``) on ``assignment``, forced."""
        outcome = getattr(self.nbgrader_api, step)(assignment, force=True)
        if not outcome["success"]:
            tail = "\n".join((outcome.get("error") or outcome.get("log") or "").strip().splitlines()[-8:])
            raise CourseError(f"nbgrader {step} {assignment} failed:\n{tail}")

    # ------------------------------------------------------------ release

    def release_assignment(self, assignment: str) -> Path:
        """nbgrader generate_assignment into exercises/, recorded in the gradebook (idempotent)."""
        self._api("generate_assignment", assignment)
        return self.release(assignment)

    def is_released(self, assignment: str) -> bool:
        from nbgrader.api import Gradebook, MissingEntry

        if not self.release(assignment).is_file():
            return False
        with Gradebook(self.db_url) as gb:
            try:
                gb.find_assignment(assignment)
                return True
            except MissingEntry:
                return False

    # ------------------------------------------------------------ collect

    def submissions(self, assignment: str) -> dict[str, Path]:
        """student -> submitted notebook, for every collected submission of ``assignment``."""
        found = {}
        for path in sorted((self.root / "submitted").glob(f"*/{assignment}/{assignment}.ipynb")):
            found[path.parent.parent.name] = path
        return found

    def collect(self, assignment: str, source: Path) -> "CollectReport":
        """Copy one notebook per student from a folder or a .zip (``<student>.ipynb``,
        ``<student>/<anything>.ipynb`` or ``<student>_<anything>.ipynb``) into submitted/ (idempotent; a
        changed resubmission keeps the earlier version under collected/)."""
        from nbgrader.api import Gradebook

        source = Path(source)
        if not source.exists():
            raise CourseError(f"{source} does not exist: give a folder or a .zip of the students' notebooks")
        report = CollectReport()
        candidates: dict[str, list[tuple[str, bytes]]] = {}
        for name, data in _notebook_files(source):
            student = _student_of(name)
            if not student:
                report.skipped.append(f"{name}: no student id in the file name")
                continue
            candidates.setdefault(student, []).append((name, data))
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
        with Gradebook(self.db_url) as gb:
            for student, files in sorted(candidates.items()):
                name, data = _pick(files, assignment)
                if len(files) > 1:
                    report.notes.append(f"{student}: {len(files)} notebooks ({', '.join(n for n, _ in files)}); "
                                        f"collected {name}")
                changes = self._older_release(assignment, data)
                if changes:
                    report.notes.append(f"{student}: the notebook comes from an older release ({changes.describe()}); "
                                        f"autograde names what it cannot grade")
                target = self.submitted(student, assignment)
                if target.is_file() and target.read_bytes() == data:
                    report.unchanged.append(student)
                    continue
                if target.is_file():  # a resubmission: keep the earlier one
                    old_time = (target.parent / TIMESTAMP).read_text().strip().replace(" ", "_").replace(":", "-")
                    _atomic_write(self.root / COLLECTED / assignment / student / f"{old_time}.ipynb",
                                  target.read_bytes())
                    report.updated.append(student)
                else:
                    report.new.append(student)
                _atomic_write(target, data)
                (target.parent / TIMESTAMP).write_text(now)
                gb.update_or_create_student(student)
        return report

    def _older_release(self, assignment: str, data: bytes) -> "versions.Changes | None":
        """How the release differs from the one a submitted notebook came from (None: it does not parse, or
        the assignment is not released)."""
        try:
            return versions.older_release(json.loads(data), json.loads(self.release(assignment).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    # ------------------------------------------------------------ results

    def record(self, student: str, assignment: str) -> dict | None:
        path = self.record_path(student, assignment)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def save_result(self, result: SubmissionResult, submission_sha: str, fingerprint: str) -> None:
        """Write one result: the autograded notebook, the gradebook's scores, then our record (last, so that
        an interrupted run grades this submission again and never records it twice)."""
        from nbgrader.api import Gradebook

        assignment, student = result.assignment, result.student
        record = {"submission_sha256": submission_sha, "fingerprint": fingerprint,
                  "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **result.to_dict()}
        if result.status.startswith("error"):  # the grader failed, not the submission: nothing to record but that
            _atomic_write(self.record_path(student, assignment), json.dumps(record, indent=1).encode())
            return
        release = nbformat.read(self.release(assignment), as_version=4)
        submitted = self.submitted(student, assignment)
        notebook = autograded_notebook(release, result)
        target = self.autograded(student, assignment)
        _atomic_write(target, nbformat.writes(notebook).encode())
        stamp = submitted.parent / TIMESTAMP
        timestamp = stamp.read_text().strip() if stamp.is_file() else None
        if timestamp:
            (target.parent / TIMESTAMP).write_text(timestamp)
        with Gradebook(self.db_url) as gb, warnings.catch_warnings():
            # nbgrader's own add_submission trips SQLAlchemy's autoflush warning; the rows are written all the same
            warnings.filterwarnings("ignore", message=".*not in session.*")
            gb.update_or_create_student(student)
            kwargs = {"timestamp": timestamp} if timestamp else {}
            gb.update_or_create_submission(assignment, student, **kwargs)
            for grade_id, score in result.cells.items():
                grade = gb.find_grade(grade_id, assignment, assignment, student)
                grade.auto_score = score.earned
                grade.needs_manual_grade = False
            gb.db.commit()
        _atomic_write(self.record_path(student, assignment), json.dumps(record, indent=1).encode())

    def record_counted(self, receipt, data: bytes, fingerprint: str) -> None:
        """The grading service's submission that counts for a learner becomes their submission in the gradebook
        (nbgrader keeps one per learner and assignment): its file in submitted/, its result recorded."""
        target = self.submitted(receipt.learner, receipt.assignment)
        _atomic_write(target, data)
        received = datetime.fromisoformat(receipt.received_at)
        (target.parent / TIMESTAMP).write_text(received.strftime("%Y-%m-%d %H:%M:%S.%f %Z"))
        self.save_result(SubmissionResult.from_dict(json.loads(receipt.result)), receipt.sha256, fingerprint)

    def is_graded(self, student: str, assignment: str, submission_sha: str, fingerprint: str) -> bool:
        record = self.record(student, assignment)
        return bool(record and record.get("submission_sha256") == submission_sha
                    and record.get("fingerprint") == fingerprint and not record.get("status", "").startswith("error"))

    # ------------------------------------------------------------ feedback and export

    def feedback(self, assignment: str) -> list[Path]:
        """nbgrader generate_feedback: one HTML per graded student (hidden tests' code stripped)."""
        self._api("generate_feedback", assignment)
        return sorted((self.root / "feedback").glob(f"*/{assignment}/*.html"))

    def export(self, out: Path) -> Path:
        """nbgrader's CSV (one row per student and assignment) plus ``status``: graded, or failed: why."""
        fields, rows = self._export_rows(Path(out))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*fields, "status"])
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(Path(out), buffer.getvalue().encode())
        return Path(out)

    def export_canvas(self, out: Path) -> Path:
        """Canvas's gradebook import (grader/classroom/canvas.py): the roster's learners, a column per assignment
        of ``classroom.toml``, scores in points, empty where nothing was graded."""
        from grader.classroom.canvas import CanvasConfigError, canvas_csv, canvas_settings

        try:
            roster, assignments = canvas_settings(self.root)
        except CanvasConfigError as err:
            raise CourseError(str(err)) from None
        _, rows = self._export_rows(Path(out))
        scores = {(row["student_id"], row["assignment"]): float(row["score"]) for row in rows
                  if row["status"] not in ("no submission", "not graded yet") and row.get("score") not in ("", None)}
        _atomic_write(Path(out), canvas_csv(roster, assignments, scores).encode())
        return Path(out)

    def _export_rows(self, out: Path) -> tuple[list, list[dict]]:
        """nbgrader's export rows, each with its ``status``, and nbgrader's column names."""
        raw = out.with_name(out.name + ".nbgrader.csv")
        self.nbgrader("export", "--to", str(raw.resolve()))
        with open(raw, newline="") as f:
            rows = list(csv.DictReader(f))
        raw.unlink()
        fields = list(rows[0].keys()) if rows else ["assignment", "student_id", "score", "max_score"]
        for row in rows:
            record = self.record(row["student_id"], row["assignment"])
            if record is None:
                row["status"] = "no submission" if not self.submitted(row["student_id"], row["assignment"]).is_file() \
                    else "not graded yet"
            else:
                notes = "; ".join(record.get("notes", []))
                row["status"] = record["status"] + (f" ({notes})" if notes and record["status"] == "graded" else "")
        self._service_scores(rows)
        return fields, rows

    def _service_scores(self, rows: list[dict]) -> None:
        """Where learners submitted to the grading service, its store decides the score: the receipt that counts
        under the deadline (its late penalty applied), or the instructor's override; which one is recorded."""
        from grader.classroom.settings import Settings
        from grader.classroom.store import FOLDER, Store

        if not (self.root / FOLDER / "service.db").is_file():
            return
        store, settings = Store(self.root), Settings.load(self.root)
        overrides: dict[str, dict] = {}
        for row in rows:
            assignment, learner = row["assignment"], row["student_id"]
            receipts = store.receipts(assignment, learner)
            if not receipts:
                continue
            if assignment not in overrides:
                overrides[assignment] = store.overrides(assignment)
            counted = store.counted(assignment, learner, settings.deadline_for(assignment, learner), record=True)
            override = overrides[assignment].get(learner)
            if override:
                row["score"] = f"{override['score']:g}"
                row["status"] = f"overridden: {override['reason']} ({override['at']})"
            elif counted:
                late = f", {counted.days_late} day{'s' * (counted.days_late != 1)} late" if counted.days_late else ""
                row["score"] = f"{counted.score:g}"
                row["status"] = f"graded: receipt {counted.receipt}{late}"
            else:
                waiting = [r for r in receipts if r.state in ("queued", "grading")]
                row["score"] = ""
                row["status"] = "not graded yet" if waiting else f"error: {receipts[-1].why}"


@dataclass
class CollectReport:
    new: list = field(default_factory=list)
    updated: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _notebook_files(source: Path):
    """(relative name, bytes) of every .ipynb in a folder or a zip (checkpoints and macOS metadata skipped)."""
    def wanted(name: str) -> bool:
        parts = Path(name).parts
        return name.endswith(".ipynb") and not any(p.startswith((".", "__MACOSX")) for p in parts)

    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir() and wanted(info.filename):
                    yield info.filename, zf.read(info)
    elif source.is_dir():
        for path in sorted(source.rglob("*.ipynb")):
            name = str(path.relative_to(source))
            if wanted(name):
                yield name, path.read_bytes()
    else:
        raise CourseError(f"{source} is neither a folder nor a .zip file")


def _student_of(name: str) -> str:
    """The student id of ``<student>.ipynb``, ``<student>/<anything>.ipynb`` or ``<student>_<anything>.ipynb``."""
    parts = Path(name).parts
    raw = parts[-2] if len(parts) > 1 else Path(parts[-1]).stem.split("_", 1)[0]
    return STUDENT_ID.sub("-", raw).strip("-.")


def _pick(files: list, assignment: str) -> tuple[str, bytes]:
    """One notebook per student: the one named after the assignment if there is one, else the last by name."""
    named = [f for f in files if assignment in f[0] or assignment[:2] in Path(f[0]).name]
    return sorted(named or files)[-1]


def autograded_notebook(release, result: SubmissionResult):
    """The release, with the learner's solution code, and each graded cell's output replaced by its report
    (an error output when it failed, so that nbgrader's feedback shows it as failed)."""
    notebook = copy.deepcopy(release)
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if meta.get("solution") and grade_id in result.solution_sources:
            cell.source = result.solution_sources[grade_id]
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        score = result.cells.get(grade_id) if meta.get("grade") else None
        if score is None:
            continue
        cell.outputs.append(new_output("display_data", data={"text/plain": score.text, "text/html": score.html}))
        if not score.passed:
            lines = score.text.splitlines() or ["failed"]
            cell.outputs.append(new_output("error", ename="CheckFailed", evalue=lines[0], traceback=lines))
    if result.status != "graded":
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"**This submission could not be graded:** "
                                                                f"{result.status[len('failed: '):]}"))
    return notebook
