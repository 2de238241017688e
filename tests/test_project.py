"""The repository's own rules: one dependency list, clean notebooks, exercises in sync with solutions."""

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from grader.core import exercises_of

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("[0-9][0-9]-*"))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_names_the_same_dependencies():
    text = (ROOT / "environment.yml").read_text()
    pip_section = re.findall(r'^\s+- "([^"]+)"\s*$', text, flags=re.M)
    project_deps = pyproject()["project"]["dependencies"]
    assert [d for d in pip_section if not d.startswith("-e")] == project_deps
    assert "-e .[test]" in pip_section, "environment.yml's pip section must install the project"


def test_constraints_pin_the_cpu_torch_inside_the_projects_range():
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, flags=re.M)
    assert any(d.startswith("torch>=") for d in pyproject()["project"]["dependencies"])


def test_readme_opens_with_the_two_command_quick_start():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[: readme.index("\n## ", readme.index("## Quick start") + 1)]
    assert "make lab" in quick_start and "make test" in quick_start
    assert readme.index("## Quick start") < 400


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_test_cell_points_match_the_registry(assignment):
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    points = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"].get("points")
              for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    for exercise in exercises_of(assignment[:2]):
        assert points.get(f"check_{exercise.name}") == exercise.points, exercise.name
        assert points.get(f"hidden_{exercise.name}"), f"{exercise.name} has no hidden test cell"


def test_exercises_are_generated_from_solutions(tmp_path):
    """Regenerate the release with nbgrader and compare it with the committed exercises/."""
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for assignment in ASSIGNMENTS:
        subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "generate_assignment", assignment, "--force"],
                       cwd=course, env=env, check=True, capture_output=True)
    compare = filecmp.dircmp(ROOT / "exercises", course / "exercises", ignore=[".ipynb_checkpoints"])
    stale = []

    def walk(cmp):
        stale.extend(cmp.left_only + cmp.right_only + cmp.diff_files)
        for sub in cmp.subdirs.values():
            walk(sub)

    walk(compare)
    assert not stale, f"exercises/ is out of date ({stale}): run `make exercises` and commit the result"


def test_kernelspec_of_every_notebook_is_python3():
    for path in NOTEBOOKS:
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "python3", path


@pytest.mark.xdist_group("grouping-check")
def test_xdist_keeps_a_group_on_one_worker(request):
    """`make test` runs `-n 2 --dist loadgroup`: the browser tests and the shared grading fixtures rely on
    their xdist_group staying on one worker. pytest 9.2 with pytest-xdist 3.8 drops the groups silently
    (constraints.txt pins pytest below it); this fails if that happens again."""
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        pytest.skip("not run with -n N --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping-check"), request.node.nodeid
