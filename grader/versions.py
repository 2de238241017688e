"""Which release a learner's copy (or a submitted notebook) comes from, and which exercises changed since.

``llmcourse start`` stamps the copy's notebook metadata with its release: a hash of every locked cell (the
exercise texts and hints, the check cells) by ``grade_id``. A later release is compared with that stamp, or,
for a copy made before stamps existed, with the copy's own locked cells; the differences are named by
exercise: new, removed, or text or checks changed.
"""

import hashlib
from dataclasses import dataclass, field

STAMP = "llmcourse_release"  # the notebook-level metadata key of the stamp


def cell_hash(cell) -> str:
    source = cell["source"]
    return hashlib.sha256((source if isinstance(source, str) else "".join(source)).encode()).hexdigest()[:16]


def locked_cells(nb) -> dict[str, str]:
    """grade_id -> hash of the source of every cell the learner does not write (locked or graded)."""
    hashes = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if "grade_id" in meta and not meta.get("solution") and (meta.get("locked") or meta.get("grade")):
            hashes.setdefault(meta["grade_id"], cell_hash(cell))
    return hashes


def stamp(release_bytes: bytes, release_nb) -> dict:
    """What ``llmcourse start`` writes into the copy's metadata: the release file's hash and its locked cells."""
    return {"release": hashlib.sha256(release_bytes).hexdigest()[:16], "cells": locked_cells(release_nb)}


def lesson_content(nb) -> str:
    """A hash of a lesson's cells (their kinds and sources; outputs and metadata aside)."""
    digest = hashlib.sha256()
    for cell in nb["cells"]:
        digest.update(cell["cell_type"].encode() + b"\0" + "".join(cell["source"]).encode() + b"\0")
    return digest.hexdigest()[:16]


def lesson_stamp(lesson_bytes: bytes, lesson_nb) -> dict:
    """What ``llmcourse start`` writes into the lesson copy's metadata: the lesson file's hash and its content's."""
    return {"release": hashlib.sha256(lesson_bytes).hexdigest()[:16], "content": lesson_content(lesson_nb)}


def lesson_changed(copy_nb, lesson_nb) -> bool:
    """Has the lesson changed since ``copy_nb`` was copied from it (by the copy's stamp)?"""
    recorded = copy_nb.get("metadata", {}).get(STAMP, {}).get("content")
    return recorded is not None and recorded != lesson_content(lesson_nb)


def cells_of_origin(nb) -> dict[str, str]:
    """The locked cells of the release ``nb`` was copied from: its stamp, or else its own locked cells."""
    recorded = nb.get("metadata", {}).get(STAMP, {})
    return dict(recorded["cells"]) if isinstance(recorded.get("cells"), dict) else locked_cells(nb)


def _exercise_cells(name: str) -> tuple:
    return f"{name}_intro", f"{name}_hints", f"check_{name}", f"hidden_{name}"


@dataclass
class Changes:
    """How a release differs from the one a notebook came from, by exercise."""

    new: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    changed: list = field(default_factory=list)  # text, hints or checks

    def __bool__(self) -> bool:
        return bool(self.new or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("new", self.new), ("removed", self.removed), ("text or checks changed", self.changed)) if names]
        return "; ".join(parts)


def exercise_changes(origin: dict[str, str], release: dict[str, str]) -> Changes:
    """The exercises (named by their check and hidden-test cells) that ``release``'s locked cells add, remove
    or change with respect to ``origin``'s."""
    def exercises(cells):  # by their graded cells: a deleted check cell alone does not make an exercise new
        names = [grade_id.split("_", 1)[1] for grade_id in cells if grade_id.startswith(("check_", "hidden_"))]
        return list(dict.fromkeys(names))

    before, after = exercises(origin), exercises(release)
    changed = [name for name in after if name in before
               and any(origin.get(cell) != release.get(cell) for cell in _exercise_cells(name))]
    return Changes(new=[n for n in after if n not in before], removed=[n for n in before if n not in after],
                   changed=changed)


def outdated(nb, release_nb) -> Changes:
    """How the release ``release_nb`` differs from the one ``nb`` (a learner's copy, a submission) came from."""
    return exercise_changes(cells_of_origin(nb), locked_cells(release_nb))


def older_release(nb, release_nb) -> Changes | None:
    """The changes when ``nb`` (a submission) shows that it came from an older release: it lacks or has extra
    exercises, or its stamp differs. An unstamped notebook whose locked cells merely differ may have been
    edited, not copied from an older release: None (the grader notes edited cells on its own)."""
    changes = outdated(nb, release_nb)
    stamped = STAMP in nb.get("metadata", {})
    return changes if changes.new or changes.removed or (stamped and changes) else None


def advice(chapter: str, copy, changes: Changes) -> str:
    """The learner-facing sentence for an outdated copy."""
    return (f"{copy} was copied from an older release of chapter {chapter} ({changes.describe()}). "
            f"`llmcourse start {chapter} --fresh` copies the current release and keeps yours as a backup; "
            f"then copy your answers across.")
