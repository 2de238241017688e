"""The learner's own work folder: ``my-work/NN-topic/NN-topic.ipynb``, copied once from the release.

Course updates (``git pull``, ``make exercises``) rewrite ``exercises/``, never ``my-work/`` (git-ignored),
so a learner's answers survive them. ``llmcourse check`` and ``llmcourse progress`` read the copy. The copy
records the release it came from (``grader.versions``), so that a later release's changed exercises can be
named: ``outdated``.
"""

import json
from datetime import datetime
from pathlib import Path

from grader import versions

WORK = "my-work"


def course_root() -> Path:
    """The course folder: the nearest folder upwards from here that holds ``exercises/`` and ``solutions/``."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "exercises").is_dir() and (folder / "solutions").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent  # an editable install of the repository


def releases(root: Path | None = None) -> dict[str, Path]:
    """{"02": exercises/02-self-attention/02-self-attention.ipynb, ...} for every released chapter."""
    root = root or course_root()
    return {folder.name[:2]: folder / f"{folder.name}.ipynb"
            for folder in sorted((root / "exercises").glob("[0-9][0-9]-*")) if (folder / f"{folder.name}.ipynb").is_file()}


def work_copy(chapter: str, root: Path | None = None) -> Path:
    """Where the learner's copy of a chapter's exercises lives (it may not exist yet)."""
    release = releases(root)[chapter]
    return (root or course_root()) / WORK / release.parent.name / release.name


def start(chapter: str, fresh: bool = False, root: Path | None = None) -> tuple[Path, str]:
    """Copy the released exercises of ``chapter`` into my-work/, once; return (the copy, what happened).

    An existing copy is never overwritten; with ``fresh=True`` it is kept as a timestamped backup and a new
    copy of the release takes its place."""
    release = releases(root)[chapter]
    copy = work_copy(chapter, root)
    if copy.exists() and not fresh:
        return copy, (f"your copy already exists: {copy} (to start over from the release: "
                      f"llmcourse start {chapter} --fresh, which keeps this one as a backup)")
    copy.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if copy.exists():
        backup = copy.with_name(f"{copy.stem}.backup-{datetime.now():%Y%m%d-%H%M%S}{copy.suffix}")
        copy.rename(backup)
        note = f" (your previous copy is kept as {backup.name})"
    data = release.read_bytes()
    nb = json.loads(data)
    nb["metadata"][versions.STAMP] = versions.stamp(data, nb)
    copy.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return copy, f"copied the exercises of chapter {chapter} to {copy}{note}"


def start_all(root: Path | None = None) -> list[str]:
    """``start`` every released chapter that has no copy yet; return what was copied."""
    return [start(chapter, root=root)[1] for chapter in releases(root) if not work_copy(chapter, root).exists()]


def notebook_for(chapter: str, root: Path | None = None) -> tuple[Path, bool]:
    """The notebook ``llmcourse check`` reads: the learner's copy when it exists, else the release."""
    copy = work_copy(chapter, root)
    return (copy, True) if copy.exists() else (releases(root)[chapter], False)


def outdated(chapter: str, root: Path | None = None) -> str | None:
    """What to tell the learner when their copy of ``chapter`` came from an older release (None: it is current,
    or there is no copy or it does not parse: ``check`` says so)."""
    copy = work_copy(chapter, root)
    try:
        changes = versions.outdated(json.loads(copy.read_bytes()), json.loads(releases(root)[chapter].read_bytes()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return versions.advice(chapter, copy, changes) if changes else None
