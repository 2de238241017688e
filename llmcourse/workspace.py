"""The learner's own work folder: ``my-work/NN-topic/NN-topic.ipynb``, copied once from the release.

Course updates (``git pull``, ``make exercises``) rewrite ``exercises/``, never ``my-work/`` (git-ignored),
so a learner's answers survive them. ``llmcourse check`` and ``llmcourse progress`` read the copy. The copy
records the release it came from (``grader.versions``), so that a later release's changed exercises can be
named: ``outdated``.

On a shared machine (a JupyterHub, ``deploy/jupyterhub/``) the course is one read-only release tree for every
learner (``exercises/`` and ``notebooks/``, no ``solutions/``) and each learner's copies live in their own
home: ``LLMCOURSE_COURSE_DIR`` names the tree and ``LLMCOURSE_WORK_DIR`` the learner's ``my-work/`` folder.
"""

import json
import os
from datetime import datetime
from pathlib import Path

from grader import versions

WORK = "my-work"
COURSE_ENV = "LLMCOURSE_COURSE_DIR"  # the course (or its release-only tree); default: found upwards from here
WORK_ENV = "LLMCOURSE_WORK_DIR"  # the learner's my-work/ folder; default: my-work/ in the course folder


def is_course(folder: Path) -> bool:
    """True when ``folder`` holds released exercises: ``exercises/NN-topic/NN-topic.ipynb`` (an instructor's
    course also has ``solutions/``, a learner's release-only tree does not)."""
    return bool(releases(folder))


def course_root() -> Path:
    """The course folder: ``LLMCOURSE_COURSE_DIR`` when set, else the nearest folder upwards from here that
    holds released exercises, else the repository this package was installed from (editable)."""
    if os.environ.get(COURSE_ENV):
        return Path(os.environ[COURSE_ENV]).expanduser()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if is_course(folder):
            return folder
    return Path(__file__).resolve().parent.parent  # an editable install of the repository


def work_dir(root: Path | None = None) -> Path:
    """The learner's ``my-work/``: ``LLMCOURSE_WORK_DIR`` when set (on a hub: in the learner's home), else
    ``my-work/`` in the course folder."""
    if os.environ.get(WORK_ENV):
        return Path(os.environ[WORK_ENV]).expanduser()
    return (root or course_root()) / WORK


def releases(root: Path | None = None) -> dict[str, Path]:
    """{"02": exercises/02-self-attention/02-self-attention.ipynb, ...} for every released chapter."""
    root = root or course_root()
    return {folder.name[:2]: folder / f"{folder.name}.ipynb"
            for folder in sorted((root / "exercises").glob("[0-9][0-9]-*")) if (folder / f"{folder.name}.ipynb").is_file()}


def work_copy(chapter: str, root: Path | None = None) -> Path:
    """Where the learner's copy of a chapter's exercises lives (it may not exist yet)."""
    release = releases(root)[chapter]
    return work_dir(root) / release.parent.name / release.name


def lesson(chapter: str, root: Path | None = None) -> Path | None:
    """The chapter's lesson, ``notebooks/NN-topic.ipynb`` (None when it has none)."""
    found = sorted(((root or course_root()) / "notebooks").glob(f"{chapter}-*.ipynb"))
    return found[0] if found else None


def lesson_copy(chapter: str, root: Path | None = None) -> Path:
    """Where the learner's copy of the lesson lives: beside the exercises, ``my-work/NN-topic/NN-topic-lesson.ipynb``
    (the lesson asks for predictions, and the learner's guesses go into this copy)."""
    copy = work_copy(chapter, root)
    return copy.with_name(f"{copy.stem}-lesson{copy.suffix}")


def _copies(chapter: str, root: Path | None) -> list[tuple[str, Path, Path, object]]:
    """(what, source, copy, stamp function) for the chapter's exercises and, when it has one, its lesson."""
    copies = [("exercises", releases(root)[chapter], work_copy(chapter, root), versions.stamp)]
    found = lesson(chapter, root)
    if found:
        copies.append(("lesson", found, lesson_copy(chapter, root), versions.lesson_stamp))
    return copies


def start(chapter: str, fresh: bool = False, root: Path | None = None) -> tuple[Path, str]:
    """Copy the released exercises and the lesson of ``chapter`` into my-work/, each once; return (the exercises'
    copy, what happened, a line per copy).

    An existing copy is never overwritten; with ``fresh=True`` it is kept as a timestamped backup and a new
    copy of the release takes its place. Each copy records the release it came from (``grader.versions``)."""
    lines = []
    for what, source, copy, stamp in _copies(chapter, root):
        if copy.exists() and not fresh:
            lines.append(f"your copy of the {what} already exists: {copy} (to start over from the release: "
                         f"llmcourse start {chapter} --fresh, which keeps this one as a backup)")
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        note = ""
        if copy.exists():
            backup = copy.with_name(f"{copy.stem}.backup-{datetime.now():%Y%m%d-%H%M%S}{copy.suffix}")
            copy.rename(backup)
            note = f" (your previous copy is kept as {backup.name})"
        data = source.read_bytes()
        nb = json.loads(data)
        nb["metadata"][versions.STAMP] = stamp(data, nb)
        copy.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        lines.append(f"copied the {what} of chapter {chapter} to {copy}{note}")
    return work_copy(chapter, root), "\n".join(lines)


def start_all(root: Path | None = None) -> list[str]:
    """``start`` every released chapter whose exercises or lesson have no copy yet; return what was copied."""
    return [line for chapter in releases(root) for line in start(chapter, root=root)[1].splitlines()
            if line.startswith("copied")]


def notebook_for(chapter: str, root: Path | None = None) -> tuple[Path, bool]:
    """The notebook ``llmcourse check`` reads: the learner's copy when it exists, else the release."""
    copy = work_copy(chapter, root)
    return (copy, True) if copy.exists() else (releases(root)[chapter], False)


def outdated(chapter: str, root: Path | None = None) -> str | None:
    """What to tell the learner when their copy of ``chapter``'s exercises or lesson came from an older release
    (None: both are current, or missing, or do not parse: ``check`` says so)."""
    notes = []
    for what, source, copy, _ in _copies(chapter, root):
        try:
            mine, current = json.loads(copy.read_bytes()), json.loads(source.read_bytes())
        except (OSError, ValueError):
            continue
        if what == "exercises":
            changes = versions.outdated(mine, current)
            if changes:
                notes.append(versions.advice(chapter, copy, changes))
        elif versions.lesson_changed(mine, current):
            notes.append(f"{copy} was copied from an older version of lesson {chapter}: `llmcourse start {chapter} "
                         f"--fresh` copies the current one and keeps yours, with your predictions, as a backup.")
    return " ".join(notes) or None
