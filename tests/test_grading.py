"""Grading a whole class with `llmcourse grade` (grader/classroom/grading.py, grader/classroom/course.py,
grader/sandbox.py):
hostile and broken submissions earn nothing they did not earn, lose nothing they did, always leave a
recorded result with the reason, never stop the batch, never see or show the hidden tests, and leave
the course and the gradebook unchanged but for their results; re-running resumes; Dask gives the same
grades as the local pool.
"""

import csv
import hashlib
import json
import re
import zipfile
from pathlib import Path

import course_tools
import nbformat
import pytest
from course_tools import llmcourse
from hostile_submissions import TOTAL, WRONG_SCORE, corpus, filled, reference_answers

from grader.sandbox import Isolation, can_isolate, isolation_report

pytestmark = pytest.mark.xdist_group("grading")  # one worker builds the graded course once
ROOT = Path(__file__).resolve().parents[1]
A02, A03 = "02-self-attention", "03-multi-head-attention"
RESULTS = ("autograded", "feedback", "gradebook.db", "grades.csv", "reports", "submitted", "collected")
needs_isolation = pytest.mark.skipif(not can_isolate(), reason="hostile submissions are graded safely only as root on "
                                                               "Linux (namespaces, a separate uid)")


def new_course(tmp: Path, assignments=(A02,)) -> Path:
    return course_tools.new_course(tmp, assignments)


def snapshot(course: Path) -> dict[str, str]:
    """Every file of the course but the results, with its hash."""
    return {str(p.relative_to(course)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(course.rglob("*"))
            if p.is_file() and p.relative_to(course).parts[0] not in RESULTS and "__pycache__" not in p.parts}


def student_id(name: str) -> str:
    return name.replace("_", "-")


def notebooks(assignment: str):
    read = lambda *parts: nbformat.read(ROOT.joinpath(*parts), as_version=4)  # noqa: E731
    return (read("exercises", assignment, f"{assignment}.ipynb"), read("solutions", assignment, f"{assignment}.ipynb"))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A course with every submission of the corpus collected, autograded (2 workers), fed back and exported."""
    tmp = tmp_path_factory.mktemp("grading")
    course = new_course(tmp)
    llmcourse(course, "release", "02")
    release, source = notebooks(A02)
    submissions = corpus(release, source, *notebooks(A03), course_root=str(course))
    inbox = tmp / "inbox"
    for name, (data, _) in submissions.items():
        (inbox / student_id(name)).mkdir(parents=True)
        (inbox / student_id(name) / "my-work.ipynb").write_bytes(data)
    before = snapshot(course)
    llmcourse(course, "collect", "02", str(inbox))
    run = llmcourse(course, "autograde", "02", "--workers", "2", "--cell-timeout", "3")
    llmcourse(course, "feedback", "02")
    llmcourse(course, "export", "--out", "grades.csv")
    llmcourse(course, "report", "02")
    return {"course": course, "submissions": submissions, "before": before, "output": run.stdout, "inbox": inbox}


def record(course: Path, student: str) -> dict:
    return json.loads((course / "autograded" / student / A02 / "grading.json").read_text())


def exported(course: Path) -> dict[str, dict]:
    with open(course / "grades.csv", newline="") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


CORPUS_NAMES = list(corpus(*notebooks(A02), *notebooks(A03), course_root="/nowhere"))


@needs_isolation
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_each_submission_gets_exactly_what_it_earned_with_the_reason(graded, name):
    _, expect = graded["submissions"][name]
    result = record(graded["course"], student_id(name))
    earned = sum(c["earned"] for c in result["cells"].values())
    assert earned == expect.score, f"{name}: {earned} points, expected {expect.score}:\n{json.dumps(result, indent=1)[:3000]}"
    assert result["status"].startswith(expect.status), result["status"]
    told = " ".join([result["status"], *result["notes"], *(c["text"] for c in result["cells"].values())])
    assert expect.note in told, f"{name}: the reason {expect.note!r} is not recorded: {told[:1500]}"
    row = exported(graded["course"])[student_id(name)]
    assert float(row["score"]) == expect.score and row["status"].startswith(expect.status)


@needs_isolation
def test_a_grader_patch_earns_nothing_beyond_the_same_wrong_answers(graded):
    wrong = sum(c["earned"] for c in record(graded["course"], "wrong")["cells"].values())
    assert wrong == WRONG_SCORE
    for name in ("patch_check", "patch_run_hidden", "patch_verdict", "patch_passed", "showtraceback",
                 "input_transformer", "edited_test_cell", "metadata_claims_points"):
        assert sum(c["earned"] for c in record(graded["course"], student_id(name))["cells"].values()) == wrong, name


@needs_isolation
def test_the_whole_batch_is_graded_and_recorded_once(graded):
    from nbgrader.api import Gradebook

    course = graded["course"]
    students = {student_id(n) for n in graded["submissions"]}
    assert {p.parent.parent.name for p in course.glob(f"autograded/*/{A02}/grading.json")} == students
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert {s.id for s in gb.students} == students
        assert len(gb.find_assignment(A02).submissions) == len(students)  # one per student, none twice
    assert f"graded {len(students)} submissions" in graded["output"]


@needs_isolation
def test_the_course_is_unchanged_but_for_the_results(graded):
    course = graded["course"]
    assert snapshot(course) == graded["before"]
    assert not (course / "pwned.txt").exists()


@needs_isolation
def test_feedback_never_shows_a_hidden_case_and_stays_small(graded):
    course = graded["course"]
    hidden_source = (course / "solutions" / A02 / "hidden_checks.py").read_text()
    labels = [label for label in re.findall(r'Case\(\s*f?"([^"{]+)"', hidden_source) if len(label) >= 8]
    assert labels
    pages = sorted(course.glob(f"feedback/*/{A02}/*.html"))
    assert len(pages) == len(graded["submissions"])
    for page in pages:
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text
        assert "CASES = {" not in text and "_gen(1002)" not in text  # the file's own code
        for label in labels:
            assert label not in text, f"hidden case {label!r} shows in {page}"
        assert page.stat().st_size < 400_000, f"{page} is {page.stat().st_size:,} bytes"
    wrong = (course / "feedback" / "wrong" / A02 / f"{A02}.html").read_text()
    assert "Likely mistake" in wrong  # the named mistake reaches the student


@needs_isolation
def test_isolation_is_reported_and_what_is_not_isolated_is_said_plainly(graded):
    assert "isolation: each submission runs in a child" in graded["output"]
    assert "NOT ISOLATED" in isolation_report(Isolation(enabled=False))[0]


@needs_isolation
def test_report_counts_named_mistakes_as_data(graded):
    course = graded["course"]
    with open(course / "reports" / A02 / "mistakes.csv", newline="") as f:
        mistakes = list(csv.DictReader(f))
    softmax = max((r for r in mistakes if r["exercise"] == "softmax"), key=lambda r: int(r["students"]))
    # the wrong softmax, with a patch of check, run_hidden, verdict or CheckResult.passed, or a tampered cell
    # (the showtraceback and input-transformer ones fail differently: get_ipython is not defined in the child)
    assert int(softmax["students"]) >= 7
    assert softmax["mistake"] == "normalised over the whole tensor instead of along `dim`"
    with open(course / "reports" / A02 / "exercises.csv", newline="") as f:
        rows = {r["exercise"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"softmax", "causal_mask", "scaled_dot_product_attention", "self_attention"}
    assert "<img src=\"data:image/png;base64," in (course / "reports" / A02 / "report.html").read_text()


@needs_isolation
def test_rerunning_skips_what_is_graded_and_regrades_a_resubmission(graded):
    course, inbox = graded["course"], graded["inbox"]
    again = llmcourse(course, "autograde", "02")
    assert "graded 0 submissions" in again.stdout and f"{len(graded['submissions'])} skipped" in again.stdout
    release, source = notebooks(A02)
    (inbox / "wrong" / "my-work.ipynb").write_bytes(filled(release, reference_answers(source)))  # fixed it
    collected = llmcourse(course, "collect", "02", str(inbox))
    assert "1 updated" in collected.stdout
    assert len(list((course / "collected" / A02 / "wrong").glob("*.ipynb"))) == 1  # the first version is kept
    again = llmcourse(course, "autograde", "02")
    assert "graded 1 submissions" in again.stdout
    assert sum(c["earned"] for c in record(course, "wrong")["cells"].values()) == TOTAL


def test_collect_reads_the_usual_lms_layouts_from_a_zip(tmp_path):
    course = new_course(tmp_path)
    llmcourse(course, "release", "02")
    release, source = notebooks(A02)
    good = filled(release, reference_answers(source))
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        zf.writestr("alice.ipynb", good)
        zf.writestr("bob/submission (1).ipynb", good)
        zf.writestr("carol_02-self-attention_late.ipynb", good)
        zf.writestr("__MACOSX/._alice.ipynb", b"junk")
        zf.writestr("dave/.ipynb_checkpoints/x-checkpoint.ipynb", good)
    out = llmcourse(course, "collect", "02", str(tmp_path / "export.zip")).stdout
    assert "3 new" in out
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice", "bob", "carol"]
    assert "3 unchanged" in llmcourse(course, "collect", "02", str(tmp_path / "export.zip")).stdout


def test_a_notebook_from_an_older_release_is_graded_with_what_it_lacks_and_has_in_excess_named(tmp_path):
    """The release was updated after the learner copied it: `causal_mask` was called `make_mask`."""
    course = new_course(tmp_path)
    llmcourse(course, "release", "02")
    release, source = notebooks(A02)
    answers = reference_answers(source)

    def older(nb):
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if "causal_mask" in meta.get("grade_id", ""):
                meta["grade_id"] = meta["grade_id"].replace("causal_mask", "make_mask")

    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "erin.ipynb").write_bytes(filled(release, answers, older))
    collected = llmcourse(course, "collect", "02", str(tmp_path / "inbox")).stdout
    assert "erin: the notebook comes from an older release (new: causal_mask; removed: make_mask)" in collected
    llmcourse(course, "autograde", "02", "--workers", "1")
    notes = "\n".join(record(course, "erin")["notes"])
    assert "graded cell `check_causal_mask`: `causal_mask` is new in this release and has no cell in the notebook: " \
           "graded on what the notebook defines" in notes
    assert "graded cell `check_make_mask` belongs to `make_mask`, which this release does not have" in notes
    # nothing is lost: the learner's causal_mask, under its old cell, earns its points
    cells = record(course, "erin")["cells"]
    assert all(cells[cell]["earned"] == cells[cell]["possible"] for cell in ("check_causal_mask", "hidden_causal_mask"))


def test_clear_errors_for_an_unknown_assignment_and_outside_a_course(tmp_path):
    course = new_course(tmp_path)
    proc = llmcourse(course, "release", "07", check=False)
    assert proc.returncode == 2 and "no assignment '07'" in proc.stderr and A02 in proc.stderr
    proc = llmcourse(tmp_path, "autograde", "02", check=False)
    assert proc.returncode == 2 and "nbgrader_config.py" in proc.stderr
    proc = llmcourse(course, "autograde", "02", check=False)
    assert proc.returncode == 2 and "llmcourse grade release 02" in proc.stderr


@needs_isolation
def test_a_dask_cluster_gives_the_same_grades_as_the_local_pool(tmp_path):
    from distributed import LocalCluster

    from grader.classroom.course import Course
    from grader.classroom.grading import autograde
    from grader.sandbox import Limits

    course_dir = new_course(tmp_path)
    llmcourse(course_dir, "release", "02")
    release, source = notebooks(A02)
    picked = {name: data for name, (data, _) in corpus(release, source, *notebooks(A03), str(course_dir)).items()
              if name in ("correct", "wrong", "endless_loop", "patch_verdict", "not_json")}
    inbox = tmp_path / "inbox"
    for name, data in picked.items():
        (inbox / student_id(name)).mkdir(parents=True)
        (inbox / student_id(name) / "work.ipynb").write_bytes(data)
    course = Course(course_dir)
    course.collect(A02, inbox)
    limits = Limits(cell_timeout_s=8)  # at 3 s, a cell of a right answer timed out under load once (CI, 2 workers)
    local = autograde(course, A02, workers=2, limits=limits, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = autograde(course, A02, scheduler=cluster.scheduler_address, limits=limits, force=True, progress=False)
    scores = lambda summary: {r.student: (r.earned, r.status) for r in summary.graded}  # noqa: E731
    assert scores(local) == scores(remote)
    assert scores(local)["correct"][0] == TOTAL and scores(local)["wrong"][0] == WRONG_SCORE


@needs_isolation
def test_grading_refuses_a_sandbox_uid_range_that_holds_an_account(graded, monkeypatch):
    """Grading kills every process of the uids it leases: a range holding an account (here `nobody`, 65534) is
    refused before anything runs, naming the account and the setting that moves the range."""
    monkeypatch.setenv("LLMCOURSE_SANDBOX_UIDS", "65000-65534")
    run = llmcourse(graded["course"], "autograde", "02", check=False)
    assert run.returncode != 0 and "nobody (65534)" in run.stderr + run.stdout, run.stderr
    assert "LLMCOURSE_SANDBOX_UIDS" in run.stderr + run.stdout


def test_the_canvas_export_gives_each_roster_learner_their_points_and_an_empty_cell_without_a_submission(graded):
    course = graded["course"]
    learners = [student_id("correct"), student_id("wrong"), "never-submitted"]
    roster = "student_id,Student,ID,SIS User ID,SIS Login ID,Section\n" + "".join(
        f"{sid},Learner {i},{100 + i},S{i},{sid}@uni,A\n" for i, sid in enumerate(learners))
    added = {course / "classroom.toml": f'[canvas]\nroster = "roster.csv"\n\n[canvas.assignments]\n"{A02}" = '
                                        '{ id = 4242, name = "Exercises 02" }\n',
             course / "roster.csv": roster}
    try:
        for path, text in added.items():
            path.write_text(text)
        llmcourse(course, "export", "--format", "canvas", "--out", "canvas.csv")
        llmcourse(course, "export", "--out", "now.csv")  # the gradebook now (another test regrades a resubmission)
        lines = (course / "canvas.csv").read_text().splitlines()
        with open(course / "now.csv", newline="") as f:
            now = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f) if row["assignment"] == A02}
    finally:
        for path in [*added, course / "canvas.csv", course / "now.csv"]:
            path.unlink(missing_ok=True)
    assert lines[0] == "Student,ID,SIS User ID,SIS Login ID,Section,Exercises 02 (4242)"
    points = {row.split(",")[2]: row.split(",")[-1] for row in lines[1:]}  # by SIS User ID
    assert float(points["S0"]) == now[learners[0]] and float(points["S1"]) == now[learners[1]]
    assert points["S2"] == ""  # no submission: an empty cell, not 0
