"""The nbgrader round trip in a temporary course: release, submit, autograde, feedback, export."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "02-self-attention"
BIN = Path(sys.executable).parent


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def solution_code(source_nb) -> dict[str, str]:
    """grade_id -> the reference code of each solution cell (markers removed)."""
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", c.source, flags=re.M)
            for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def submit(course: Path, student: str, release_nb, answers: dict[str, str]) -> None:
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))  # a deep copy
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{ASSIGNMENT}.ipynb")


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    release = nbformat.read(course / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    reference = solution_code(nbformat.read(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4))
    unscaled = reference["scaled_dot_product_attention"].replace(" / math.sqrt(d_k)", "")
    assert unscaled != reference["scaled_dot_product_attention"]
    submit(course, "ref", release, reference)
    submit(course, "stub", release, {})
    submit(course, "unscaled", release, {**reference, "scaled_dot_product_attention": unscaled})
    for student in ("ref", "stub", "unscaled"):
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "autograde", ASSIGNMENT)
    nbgrader(course, "generate_feedback", ASSIGNMENT)
    nbgrader(course, "export")
    return course


def scores(course: Path) -> dict[str, tuple[float, float]]:
    with open(course / "grades.csv") as f:
        return {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}


def test_release_has_no_solutions_or_hidden_tests(graded_course):
    release_dir = graded_course / "exercises" / ASSIGNMENT
    text = (release_dir / f"{ASSIGNMENT}.ipynb").read_text()
    assert "raise NotImplementedError()" in text
    assert "BEGIN SOLUTION" not in text and "run_hidden" not in text
    assert not (release_dir / "hidden_checks.py").exists()


def test_scores_full_zero_and_exact_partial(graded_course):
    got = scores(graded_course)
    # softmax 2+1, causal_mask 1+1, scaled_dot_product_attention 3+2, self_attention 2+1
    assert got["ref"] == (13.0, 13.0)
    assert got["stub"] == (0.0, 13.0)
    # unscaled attention loses its own 5 points and self_attention's 3 (it calls the attention)
    assert got["unscaled"] == (5.0, 13.0)


def test_feedback_hides_the_hidden_tests(graded_course):
    hidden_source = (ROOT / "solutions" / ASSIGNMENT / "hidden_checks.py").read_text()
    hidden_labels = re.findall(r'Case\("([^"]+)"', hidden_source)
    assert hidden_labels
    for student in ("ref", "stub", "unscaled"):
        html = (graded_course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
        assert "run_hidden" not in html and "BEGIN HIDDEN TESTS" not in html
        for label in hidden_labels:
            assert label not in html, f"hidden case {label!r} shows in {student}'s feedback"
    unscaled = (graded_course / "feedback" / "unscaled" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "no 1/sqrt(d_k) scaling" in unscaled  # the feedback still names the mistake


def test_sqlalchemy_is_pinned_below_2_1():
    """SQLAlchemy 2.1 breaks nbgrader's gradebook sessions (every command warns 'not in session')."""
    import sqlalchemy

    assert tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) < (2, 1)


def test_autograde_kernel_is_the_project_environment():
    """nbgrader runs the kernel named python3: it must be this environment's, which has grader."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([str(BIN / "jupyter"), "kernelspec", "list", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    spec = json.loads(out)["kernelspecs"]["python3"]["spec"]
    kernel_python = spec["argv"][0]
    probe = subprocess.run([kernel_python, "-c", "import grader, llmcourse; print(grader.__file__)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"the python3 kernel ({kernel_python}) cannot import grader: {probe.stderr}"
