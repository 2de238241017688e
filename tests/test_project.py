"""The repository's own rules: one dependency list, clean notebooks, a wheel that carries its data (exercises/ in
sync with solutions/ is checked by the grading round trip, tests/test_nbgrader.py)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib

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


def test_the_wheel_carries_the_shipped_data_with_licence_and_notice(tmp_path):
    """An editable install reads llmcourse/course_data from the clone and would hide missing package data:
    build the wheel itself and find every shipped file in it, byte for byte."""
    import hashlib
    import importlib.util
    import zipfile

    from llmcourse import data

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for package in ("llmcourse", "grader"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", *isolation,
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("llmcourse-*.whl")
    prefix = f"llmcourse/{data.SHIPPED_DATA}/"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {name.removeprefix(prefix): zf.read(name) for name in zf.namelist() if name.startswith(prefix)}
    sums = data.shipped_sums()
    assert {"bigbench/LICENSE", "bigbench/NOTICE", "chinchilla/CITATION", data.SUMS_FILE} <= set(shipped)
    assert {f"bigbench/{t}/task.json" for t in data.COURSE_BIGBENCH_TASKS} | {data.CHINCHILLA_FILE} <= set(sums)
    missing = sorted(set(sums) - set(shipped))
    assert not missing, f"the wheel lacks {missing}: see [tool.setuptools.package-data] in pyproject.toml"
    changed = [name for name, digest in sums.items() if hashlib.sha256(shipped[name]).hexdigest() != digest]
    assert not changed


def test_checking_a_chapter_imports_that_chapters_checks_only():
    """`llmcourse check 02` pays for chapter 02's checks (and torch), not for every chapter's nor nbformat's
    schema validator; every exercise belongs to the module grader.checks.CHAPTERS names for its chapter."""
    probe = ("import sys\nfrom grader.core import exercises_of, get_exercise\nfrom grader.notebook import read_notebook\n"
             "read_notebook('exercises/02-self-attention/02-self-attention.ipynb')\n"
             "names = [ex.name for ex in exercises_of('02')]\nassert [get_exercise(n).name for n in names] == names\n"
             "print(sorted(m for m in sys.modules if m.startswith('grader.checks.')), 'nbformat' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['grader.checks.self_attention']", "False"], out
    from grader.checks import CHAPTERS, register_all
    from grader.core import REGISTRY

    register_all()
    assert {ex.chapter for ex in REGISTRY.values()} == set(CHAPTERS)
    for exercise in REGISTRY.values():
        assert exercise.judge.__module__ == f"grader.checks.{CHAPTERS[exercise.chapter]}", exercise.name


def test_the_readme_states_every_exercises_signature_and_points():
    """The README's contract table lists every registered exercise, in order, with its signature and its points
    (the visible check cell's plus the hidden tests' in the source notebook)."""
    from grader.checks import CHAPTERS

    rows = re.findall(r"^\| (\d\d) \| `(\w+)(\(.*?\))(?: -> [^`]+)?` \| .* \| (\d+)\+(\d+) \|$",
                      (ROOT / "README.md").read_text(), re.M)
    assert [(ch, name, sig) for ch, name, sig, *_ in rows] == [(ex.chapter, ex.name, ex.signature)
                                                              for ch in CHAPTERS for ex in exercises_of(ch)]
    for chapter, name, _, visible, hidden in rows:
        source = next((ROOT / "solutions").glob(f"{chapter}-*/{chapter}-*.ipynb"))
        points = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"].get("points")
                  for c in json.loads(source.read_text())["cells"] if c["metadata"].get("nbgrader")}
        assert (points[f"check_{name}"], points[f"hidden_{name}"]) == (int(visible), int(hidden)), name
