"""Shared pytest set-up: the chapter contract's ``exercise`` parameter and the ``hidden_dir`` fixture."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_generate_tests(metafunc):
    """Parametrize ``exercise`` over the EXERCISES of a ChapterContract subclass."""
    if "exercise" in metafunc.fixturenames and metafunc.cls is not None and hasattr(metafunc.cls, "EXERCISES"):
        metafunc.parametrize("exercise", metafunc.cls.EXERCISES)


@pytest.fixture
def hidden_dir(request, monkeypatch):
    """Point run_hidden at the hidden cases of the requesting module's ASSIGNMENT: ``solutions/<ASSIGNMENT>/``."""
    import grader.hidden

    assignment = getattr(request.module, "ASSIGNMENT", None)
    assert assignment, f"{request.module.__name__} uses hidden_dir but defines no ASSIGNMENT"
    folder = ROOT / "solutions" / assignment
    assert (folder / grader.hidden.HIDDEN_FILE).is_file(), f"no {grader.hidden.HIDDEN_FILE} in {folder}"
    monkeypatch.setenv(grader.hidden.HIDDEN_ENV, str(folder))
    return folder
