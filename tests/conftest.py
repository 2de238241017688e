"""Shared pytest set-up: threads per xdist worker; the chapter contract (tests/chapter_contract.py): its
parameters, and the ``reference`` and ``hidden_dir`` fixtures keyed on the requesting module's ASSIGNMENT."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs two xdist workers on a 2-core machine: each worker, and every kernel and command it starts,
# gets its share of the cores. Two processes that each spin up OpenMP threads for every core slow each other
# down several-fold (lesson 05 took 229 s instead of 57 s beside one busy core).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "contract_parametrize(argnames, attribute): parametrize a ChapterContract test over the "
                   "pytest.param rows of the subclass's attribute (a list, or a classmethod returning one)")


def pytest_generate_tests(metafunc):
    """Parametrize the tests of a ChapterContract subclass: ``exercise`` over its EXERCISES, and a test marked
    ``contract_parametrize(argnames, attribute)`` over the rows of that attribute of the subclass."""
    cls = metafunc.cls
    if cls is None or not hasattr(cls, "EXERCISES"):
        return
    if "exercise" in metafunc.fixturenames:
        metafunc.parametrize("exercise", cls.EXERCISES)
    for mark in metafunc.definition.iter_markers("contract_parametrize"):
        argnames, attribute = mark.args
        rows = getattr(cls, attribute)
        metafunc.parametrize(argnames, rows() if callable(rows) else rows)


@pytest.fixture(scope="module")
def reference(request):
    """The reference solution notebook of the requesting module's ASSIGNMENT, loaded once per module."""
    from chapter_contract import load_reference

    assignment = getattr(request.module, "ASSIGNMENT", None)
    assert assignment, f"{request.module.__name__} uses reference but defines no ASSIGNMENT"
    return load_reference(assignment)


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
