"""Which release a copy or a submission comes from (grader/versions.py): `llmcourse start` stamps the copy,
and a later release's new, removed and changed exercises are named, for a stamped copy and for a copy made
before stamps existed; a notebook whose locked cells were merely edited is not taken for an older release."""

import copy
import json
from pathlib import Path

from grader import versions
from grader.autograde import tampering_notes
from grader.notebook import read_notebook
from llmcourse import workspace

ROOT = Path(__file__).resolve().parents[1]
A02 = "02-self-attention"
RELEASE = ROOT / "exercises" / A02 / f"{A02}.ipynb"


def older_release(release: dict) -> dict:
    """``release`` as an earlier version of it would look: `causal_mask` was called `make_mask`, and softmax's
    text said something else."""
    old = copy.deepcopy(release)
    for cell in old["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if "causal_mask" in meta.get("grade_id", ""):
            meta["grade_id"] = meta["grade_id"].replace("causal_mask", "make_mask")
        if meta.get("grade_id") in ("softmax_intro", "payoff_minilm_intro"):  # a payoff is not an exercise
            cell["source"] = "An older text."
    return old


def test_the_same_release_has_no_changes():
    release = json.loads(RELEASE.read_bytes())
    assert not versions.outdated(release, release)
    assert versions.older_release(release, release) is None


def test_an_unstamped_copy_of_an_older_release_names_new_removed_and_changed_exercises():
    release = json.loads(RELEASE.read_bytes())
    changes = versions.outdated(older_release(release), release)
    assert changes.new == ["causal_mask"] and changes.removed == ["make_mask"] and changes.changed == ["softmax"]
    assert changes.describe() == "new: causal_mask; removed: make_mask; text or checks changed: softmax"
    assert versions.older_release(older_release(release), release) == changes


def test_a_stamp_records_the_release_and_survives_a_release_update():
    old = older_release(json.loads(RELEASE.read_bytes()))
    mine = copy.deepcopy(old)
    mine["metadata"][versions.STAMP] = versions.stamp(json.dumps(old).encode(), old)
    for cell in mine["cells"]:  # the learner's answers and even an edited locked cell do not hide the origin
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "check_softmax":
            cell["source"] = "pass"
    release = json.loads(RELEASE.read_bytes())
    assert versions.outdated(mine, release).changed == ["softmax"]
    assert versions.older_release(mine, release).new == ["causal_mask"]


def test_an_edited_locked_cell_alone_is_not_an_older_release():
    release = json.loads(RELEASE.read_bytes())
    edited = copy.deepcopy(release)
    next(c for c in edited["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "check_softmax")[
        "source"] = "pass"
    assert versions.outdated(edited, release).changed == ["softmax"]  # the learner's own copy: flagged
    assert versions.older_release(edited, release) is None  # a submission: tampering, noted as an edit


def test_start_stamps_the_copy_and_outdated_names_the_changes(tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "exercises" / A02).mkdir(parents=True)
    release = json.loads(RELEASE.read_bytes())
    (course / "exercises" / A02 / RELEASE.name).write_text(json.dumps(older_release(release)))
    copy_path, _ = workspace.start("02", root=course)
    assert json.loads(copy_path.read_text())["metadata"][versions.STAMP]["cells"]["check_make_mask"]
    assert workspace.outdated("02", root=course) is None
    (course / "exercises" / A02 / RELEASE.name).write_bytes(RELEASE.read_bytes())  # the course is updated
    note = workspace.outdated("02", root=course)
    assert "older release of chapter 02 (new: causal_mask; removed: make_mask; text or checks changed: softmax)" \
        in note
    assert "llmcourse start 02 --fresh" in note


def test_autograde_names_the_cells_an_older_release_has_and_lacks(tmp_path):
    release = read_notebook(RELEASE)
    (tmp_path / "old.ipynb").write_text(json.dumps(older_release(json.loads(RELEASE.read_bytes()))))
    submission = read_notebook(tmp_path / "old.ipynb")
    notes, foreign = tampering_notes(submission, release, "02")
    assert foreign is None
    text = "\n".join(notes)
    assert "comes from an older release of the assignment (new: causal_mask; removed: make_mask" in text
    assert "graded cell `check_causal_mask`: `causal_mask` is new in this release and has no cell in the notebook" \
        in text
    assert "graded cell `check_make_mask` belongs to `make_mask`, which this release does not have: not graded" in text
    assert "claims" not in text


def test_a_deleted_check_cell_is_not_a_new_exercise():
    release = json.loads(RELEASE.read_bytes())
    tampered = copy.deepcopy(release)
    tampered["cells"] = [c for c in tampered["cells"]
                         if c["metadata"].get("nbgrader", {}).get("grade_id") != "check_softmax"]
    assert versions.outdated(tampered, release).new == []
    assert versions.older_release(tampered, release) is None


def test_start_copies_the_lesson_beside_the_exercises_and_flags_a_changed_lesson(tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "exercises" / A02).mkdir(parents=True)
    (course / "notebooks").mkdir()
    (course / "exercises" / A02 / RELEASE.name).write_bytes(RELEASE.read_bytes())
    lesson = course / "notebooks" / f"{A02}.ipynb"
    lesson.write_bytes((ROOT / "notebooks" / f"{A02}.ipynb").read_bytes())
    _, said = workspace.start("02", root=course)
    copy = workspace.lesson_copy("02", root=course)
    assert copy == course / "my-work" / A02 / f"{A02}-lesson.ipynb"
    assert f"copied the lesson of chapter 02 to {copy}" in said
    mine = json.loads(copy.read_text())
    mine["cells"][3]["source"] = "my prediction: 0.5"  # the learner's guesses do not make the copy outdated
    copy.write_text(json.dumps(mine))
    assert workspace.outdated("02", root=course) is None
    nb = json.loads(lesson.read_text())
    nb["cells"][0]["source"] = ["# Self-attention, revised\n"]
    lesson.write_text(json.dumps(nb))  # the course is updated
    assert "was copied from an older version of lesson 02" in workspace.outdated("02", root=course)
    assert workspace.start_all(root=course) == []  # both copies exist: nothing is copied again
    _, said = workspace.start("02", fresh=True, root=course)
    assert "your previous copy is kept as" in said.splitlines()[-1]
    backup = next(copy.parent.glob(f"{A02}-lesson.backup-*.ipynb"))
    assert json.loads(backup.read_text())["cells"][3]["source"] == "my prediction: 0.5"
    assert workspace.outdated("02", root=course) is None
