"""The learner's own work folder (llmcourse/workspace.py, `llmcourse start | check | progress`): a copy made
once, never overwritten, untouched by `git pull` and `make exercises`; `check` and `progress` read it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
A02 = "02-self-attention"


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def llmcourse(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "llmcourse.cli", *args, check=check)


@pytest.fixture
def clone(tmp_path):
    """A learner's clone of a course repository (``origin`` holds the committed course)."""
    origin = tmp_path / "origin"
    run(tmp_path, "git", "clone", "--quiet", str(ROOT), str(origin))
    learner = tmp_path / "learner"
    run(tmp_path, "git", "clone", "--quiet", str(origin), str(learner))
    return origin, learner


def answer_softmax(path: Path, code: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "softmax":
            cell.source = code
    nbformat.write(nb, path)


def softmax_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax")


MY_SOFTMAX = ("def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
              "    return e / e.sum(dim=dim, keepdim=True)\n")


def test_start_copies_once_and_never_overwrites(clone):
    _, learner = clone
    first = llmcourse(learner, "start", "02").stdout
    copy = learner / "my-work" / A02 / f"{A02}.ipynb"
    assert str(copy) in first and copy.is_file()
    lesson = copy.with_name(f"{A02}-lesson.ipynb")  # the lesson too, for the learner's predictions
    assert f"copied the lesson of chapter 02 to {lesson}" in first and lesson.is_file()
    answer_softmax(copy, MY_SOFTMAX)
    again = llmcourse(learner, "start", "2").stdout
    assert "already exists" in again and "--fresh" in again
    assert softmax_source(copy) == MY_SOFTMAX
    fresh = llmcourse(learner, "start", "02", "--fresh").stdout
    backups = list(copy.parent.glob(f"{A02}.backup-*.ipynb"))
    assert len(backups) == 1 and backups[0].name in fresh
    assert softmax_source(backups[0]) == MY_SOFTMAX
    release = nbformat.read(learner / "exercises" / A02 / f"{A02}.ipynb", as_version=4)
    assert nbformat.read(copy, as_version=4).cells == release.cells  # the release's, stamped with its origin


def test_the_copy_survives_git_pull_and_make_exercises(clone):
    origin, learner = clone
    llmcourse(learner, "start", "02")
    copy = learner / "my-work" / A02 / f"{A02}.ipynb"
    answer_softmax(copy, MY_SOFTMAX)
    mine = copy.read_bytes()
    assert run(learner, "git", "status", "--porcelain").stdout == ""  # my-work/ is git-ignored
    # the course is updated upstream: the release changes
    release = origin / "exercises" / A02 / f"{A02}.ipynb"
    nb = nbformat.read(release, as_version=4)
    nb.cells[0].source += "\n\n(Updated upstream.)"
    nbformat.write(nb, release)
    run(origin, "git", "commit", "--quiet", "-am", "update the release")
    run(learner, "git", "pull", "--quiet")
    assert "(Updated upstream.)" in (learner / "exercises" / A02 / f"{A02}.ipynb").read_text()
    assert copy.read_bytes() == mine
    run(learner, str(Path(sys.executable).parent / "nbgrader"), "generate_assignment", A02, "--force")  # make exercises
    assert copy.read_bytes() == mine


def test_check_reads_the_copy_and_says_which_file(clone):
    _, learner = clone
    before = llmcourse(learner, "check", "02", check=False)
    assert f"Checking the release {learner / 'exercises' / A02 / (A02 + '.ipynb')}" in before.stdout
    assert "llmcourse start 02" in before.stdout
    llmcourse(learner, "start", "02")
    copy = learner / "my-work" / A02 / f"{A02}.ipynb"
    answer_softmax(copy, MY_SOFTMAX)
    after = llmcourse(learner, "check", "02", check=False)
    assert f"Checking {copy}" in after.stdout
    assert re.search(r"^softmax\s+passed all", after.stdout, re.M)
    by_folder = llmcourse(learner, "check", f"my-work/{A02}", check=False)  # the folder holds the lesson too
    assert f"Checking my-work/{A02}/{A02}.ipynb" in by_folder.stdout


def test_progress_lists_every_exercise_with_its_state(clone):
    _, learner = clone
    llmcourse(learner, "start", "02")
    answer_softmax(learner / "my-work" / A02 / f"{A02}.ipynb",
                   "def softmax(x, dim=-1):\n    e = torch.exp(x - x.max())\n    return e / e.sum()\n")
    out = llmcourse(learner, "progress").stdout
    assert re.search(r"^02\s+softmax\s+failed: normalised over the whole tensor", out, re.M)
    assert re.search(r"^02\s+causal_mask\s+not started", out, re.M)
    assert re.search(r"^01\s+plan_training\s+not started", out, re.M)
    assert re.search(r"02-self-attention\s+0/4 exercises, 0/8 points", out)
    assert "(no copy yet: llmcourse start 01)" in out


def test_a_copy_from_an_older_release_is_flagged_until_started_fresh(clone):
    _, learner = clone
    llmcourse(learner, "start", "02")
    copy = learner / "my-work" / A02 / f"{A02}.ipynb"
    answer_softmax(copy, MY_SOFTMAX)
    release = learner / "exercises" / A02 / f"{A02}.ipynb"  # a course update rewrites an exercise's text
    nb = nbformat.read(release, as_version=4)
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "causal_mask_intro").source += "\nMore."
    nbformat.write(nb, release)
    flagged = "was copied from an older release of chapter 02 (text or checks changed: causal_mask)"
    assert flagged in llmcourse(learner, "check", "02", check=False).stdout
    assert flagged in llmcourse(learner, "progress").stdout
    assert "your previous copy is kept as" in llmcourse(learner, "start", "02", "--fresh").stdout
    assert flagged not in llmcourse(learner, "check", "02", check=False).stdout
    backups = list(copy.parent.glob(f"{A02}.backup-*.ipynb"))
    assert len(backups) == 1 and MY_SOFTMAX in softmax_source(backups[0])


def test_a_shared_release_only_tree_with_my_work_in_the_learners_home(tmp_path):
    """On a hub (deploy/jupyterhub/): the course is one release-only tree (no solutions/), found by its
    exercises alone or named by LLMCOURSE_COURSE_DIR, and every copy goes to LLMCOURSE_WORK_DIR; the tree is
    never written."""
    tree, home = tmp_path / "shared" / "course", tmp_path / "home"
    home.mkdir()
    run(ROOT, sys.executable, str(ROOT / "deploy" / "jupyterhub" / "release_tree.py"), str(ROOT), str(tree))
    assert sorted(p.name for p in tree.iterdir()) == ["exercises", "notebooks"]
    assert not list(tree.rglob("hidden_checks.py")) and (tree / "exercises" / A02 / f"{A02}.ipynb").is_file()
    before = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               LLMCOURSE_COURSE_DIR=str(tree), LLMCOURSE_WORK_DIR=str(home / "my-work"))

    def learner(*args, cwd=home, env=env, check=True):
        proc = subprocess.run([sys.executable, "-m", "llmcourse.cli", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)
        assert not check or proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    copy = home / "my-work" / A02 / f"{A02}.ipynb"
    assert f"copied the exercises of chapter 02 to {copy}" in learner("start", "02")
    assert copy.with_name(f"{A02}-lesson.ipynb").is_file()
    answer_softmax(copy, MY_SOFTMAX)
    checked = learner("check", "02", check=False)
    assert f"Checking {copy}" in checked and re.search(r"^softmax\s+passed all", checked, re.M)
    assert re.search(rf"{A02}\s+1/4 exercises, 2/8 points\s+{re.escape(str(copy))}", learner("progress"))
    # without LLMCOURSE_COURSE_DIR, from inside the tree: found by its exercises/ (it has no solutions/)
    found = {k: v for k, v in env.items() if k != "LLMCOURSE_COURSE_DIR"}
    assert f"to {home / 'my-work' / '03-multi-head-attention'}" in learner("start", "03", cwd=tree / "notebooks",
                                                                             env=found)
    assert {p: p.stat().st_mtime_ns for p in tree.rglob("*")} == before
    assert not (tree / "my-work").exists()


def test_lab_serves_the_folder_that_holds_my_work(tmp_path, monkeypatch):
    """`llmcourse lab` with LLMCOURSE_WORK_DIR: JupyterLab opens on the folder holding my-work/ (the learner's
    home), not on the shared tree."""
    import llmcourse.lab as lab

    tree, home = tmp_path / "course", tmp_path / "home"
    (tree / "exercises" / A02).mkdir(parents=True)
    (tree / "exercises" / A02 / f"{A02}.ipynb").write_bytes((ROOT / "exercises" / A02 / f"{A02}.ipynb").read_bytes())
    monkeypatch.setenv("LLMCOURSE_COURSE_DIR", str(tree))
    monkeypatch.setenv("LLMCOURSE_WORK_DIR", str(home / "my-work"))
    started = {}
    monkeypatch.setattr(lab.os, "chdir", lambda path: started.setdefault("cwd", Path(path)))
    monkeypatch.setattr(lab.os, "execve", lambda exe, argv, env: started.setdefault("argv", argv))
    lab.main(["--port", "8999"])
    assert f"--ServerApp.root_dir={home}" in started["argv"] and started["cwd"] == home
    assert (home / "my-work" / A02 / f"{A02}.ipynb").is_file()
