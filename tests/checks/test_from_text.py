"""Exercises implemented from their text alone (tests/checks/from_text/): each passes the visible and the hidden
checks, so the text states every rule the checks test; and the brief is the exercise's current text."""

import importlib.util

import pytest
from checks.from_text import HERE, ROOT, brief, exercise_cells

import grader.hidden
from grader import check

IMPLEMENTED = sorted(path.stem for path in HERE.glob("*.py") if not path.stem.startswith("__"))


def implementation(name: str):
    spec = importlib.util.spec_from_file_location(f"from_text_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_the_brief_is_the_exercises_current_text(name):
    assert (HERE / f"{name}.md").read_text() == brief(name), (
        f"the text of {name} changed since its brief was given: write the new brief (cd tests && python -m "
        f"checks.from_text {name}) and have it implemented again from the text alone")


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_an_implementation_from_the_text_passes_the_visible_and_hidden_checks(name, monkeypatch, capsys):
    fn = implementation(name)
    result = check(name, fn)
    assert result.passed, result.feedback
    assignment, _ = exercise_cells(name)
    monkeypatch.setenv(grader.hidden.HIDDEN_ENV, str(ROOT / "solutions" / assignment))
    grader.hidden.run_hidden(name, fn)
    assert "hidden tests passed" in capsys.readouterr().out
