"""Grades as Canvas's gradebook import reads them (``llmcourse grade export --format canvas``).

Canvas matches a column to an existing assignment only by its header ``<assignment name> (<Canvas assignment
id>)``; the learners' columns come first: ``Student,ID,SIS User ID,SIS Login ID,Section``. The course's
configuration, ``classroom.toml`` at the course's root, names the roster and each assignment's Canvas id:

    roster = "roster.csv"    # columns: student_id (the course's id), Student, ID, SIS User ID, SIS Login ID, Section
                             # (or roster = ... under [canvas])

    [canvas.assignments]
    "02-self-attention" = { id = 4242, name = "Exercises 02: self-attention" }

Scores are in points; a learner with no graded submission gets an empty cell, not 0.
"""

import csv
import io
from pathlib import Path

from grader.classroom.settings import CONFIG, Settings, SettingsError

LEARNER_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


class CanvasConfigError(ValueError):
    """classroom.toml or the roster does not say what the Canvas export needs."""


def canvas_settings(root: Path) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """(the roster's rows, {assignment: (Canvas name, Canvas id)}) from the course's ``classroom.toml``."""
    path = root / CONFIG
    if not path.is_file():
        raise CanvasConfigError(f"no {CONFIG} in {root}: the Canvas export needs the roster and each assignment's "
                                f"Canvas id there (see grader/classroom/canvas.py)")
    try:
        settings = Settings.load(root)
        roster = settings.roster()
    except SettingsError as err:
        raise CanvasConfigError(str(err)) from None
    assignments = {}
    for name, entry in settings.raw.get("canvas", {}).get("assignments", {}).items():
        entry = entry if isinstance(entry, dict) else {"id": entry}
        if not str(entry.get("id", "")).isdigit():
            raise CanvasConfigError(f"{path}: assignment {name!r} needs its Canvas id, a number (id = 4242)")
        assignments[name] = (str(entry.get("name", name)), str(entry["id"]))
    if not assignments:
        raise CanvasConfigError(f"{path}: [canvas.assignments] names no assignment with its Canvas id")
    if not settings.roster_path.is_file():
        raise CanvasConfigError(f"the roster {settings.roster_path} is missing: one row per learner, with the columns "
                                f"student_id, {', '.join(LEARNER_COLUMNS)}")
    missing = [c for c in ("student_id", *LEARNER_COLUMNS) if roster and c not in roster[0]]
    if missing:
        raise CanvasConfigError(f"the roster {settings.roster_path} lacks the columns {', '.join(missing)}")
    return roster, assignments


def canvas_csv(roster: list[dict], assignments: dict[str, tuple[str, str]], scores: dict) -> str:
    """The import file: a row per roster learner; ``scores`` maps (student_id, assignment) to points, or None."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*LEARNER_COLUMNS, *(f"{name} ({canvas_id})" for name, canvas_id in assignments.values())])
    for learner in roster:
        cells = [scores.get((learner["student_id"], assignment)) for assignment in assignments]
        writer.writerow([*(learner[c] for c in LEARNER_COLUMNS), *("" if s is None else f"{s:g}" for s in cells)])
    return out.getvalue()
