"""Checking a learner's notebook in a child process, and the `llmcourse check` command."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader.isolated import check_notebook
from grader.notebook import NotebookError, load_definitions

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = ROOT / "exercises" / "02-self-attention" / "02-self-attention.ipynb"
SOLUTION = ROOT / "solutions" / "02-self-attention" / "02-self-attention.ipynb"
GOOD_SOFTMAX = """
import torch
def softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)
"""


def write_notebook(path: Path, *sources: str) -> Path:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


def llmcourse(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "llmcourse.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_only_definitions_run(tmp_path):
    marker = tmp_path / "ran.txt"
    nb = write_notebook(tmp_path / "nb.ipynb", GOOD_SOFTMAX,
                        f"open({str(marker)!r}, 'w').write('x')\nD_MODEL = 64\nX = list(range(3))",
                        "%matplotlib inline\n!pip install nothing\ndef helper():\n    return D_MODEL")
    loaded = load_definitions(nb)
    assert not marker.exists(), "a statement that is not a definition ran"
    assert loaded.function("softmax") is not None
    assert loaded.namespace["D_MODEL"] == 64 and "X" not in loaded.namespace
    assert loaded.function("helper")() == 64


def test_exit_in_a_learner_cell_is_a_failure_not_a_pass(tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", GOOD_SOFTMAX,
                        "import os\ndef causal_mask(n):\n    os._exit(0)")
    softmax, causal = check_notebook(nb, ["softmax", "causal_mask"])
    assert softmax.passed
    assert not causal.passed and "process ended while running `causal_mask`" in causal.feedback


def test_exit_while_loading_fails_every_exercise(tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", "import sys\n@sys.exit\ndef softmax(x, dim=-1):\n    pass")
    (result,) = check_notebook(nb, ["softmax"])
    assert not result.passed and "loading" in result.feedback


def test_endless_loop_times_out_and_the_rest_is_still_checked(tmp_path, monkeypatch):
    from grader.core import get_exercise

    monkeypatch.setattr(get_exercise("causal_mask"), "timeout_s", 2.0)
    nb = write_notebook(tmp_path / "nb.ipynb", GOOD_SOFTMAX, "def causal_mask(n):\n    while True:\n        pass")
    causal, softmax = check_notebook(nb, ["causal_mask", "softmax"])
    assert not causal.passed and "timed out" in causal.feedback
    assert softmax.passed


def test_missing_function_and_syntax_error_are_named(tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", GOOD_SOFTMAX, "def causal_mask(n)\n    return None")
    softmax, causal = check_notebook(nb, ["softmax", "causal_mask"])
    assert softmax.passed
    assert "`causal_mask` is not defined" in causal.feedback
    assert "cell 2 does not parse" in causal.feedback


def test_patching_the_grader_in_the_notebook_cannot_change_the_verdict(tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", """
import grader.core, grader.result
grader.core.verdict = lambda *a, **k: None
grader.result.CheckResult.passed = property(lambda self: True)
def softmax(x, dim=-1):
    return x
""")
    (result,) = check_notebook(nb, ["softmax"])
    assert not result.passed


def test_not_a_notebook_is_a_clear_error(tmp_path):
    bad = tmp_path / "02-broken.ipynb"
    bad.write_text("{ this is not json")
    with pytest.raises(NotebookError, match="not a readable notebook"):
        load_definitions(bad)
    proc = llmcourse("check", str(bad))
    assert proc.returncode == 2 and "not a readable notebook" in proc.stderr


def test_cli_on_the_released_stub_reports_not_implemented():
    proc = llmcourse("check", "02")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("not implemented yet") == 4


def test_cli_on_the_reference_passes(tmp_path):
    proc = llmcourse("check", str(SOLUTION))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 of 4 exercises pass" in proc.stdout


def test_cli_unknown_chapter_lists_the_chapters():
    proc = llmcourse("check", "42")
    assert proc.returncode != 0 and "No chapter '42'" in proc.stderr and "02 (self-attention)" in proc.stderr


def test_two_children_never_share_a_uid_even_from_two_graders():
    """Each child leases its uid machine-wide: a second grader (another process) with the same slot gets
    another uid, so cleaning up after one child cannot kill the other's."""
    from grader.sandbox import DEFAULT_UIDS, _uid_lease

    with _uid_lease(3) as first:
        other = subprocess.run([sys.executable, "-c", "from grader.sandbox import _uid_lease\n"
                                "with _uid_lease(3) as uid: print(uid)"],
                               capture_output=True, text=True, check=True, cwd=ROOT)
        assert first == DEFAULT_UIDS[3] and int(other.stdout) != first
    with _uid_lease(3) as again:
        assert again == first  # released when the child is done


def test_the_sandbox_uids_are_configurable_and_never_an_accounts(monkeypatch):
    """Grading kills every process of the uid it leased: a range holding a real account (a learner's, on a hub)
    is refused with the account named, before anything runs."""
    from grader import sandbox

    monkeypatch.delenv(sandbox.UIDS_ENV, raising=False)
    assert sandbox.sandbox_uids() == range(61000, 63000)
    monkeypatch.setenv(sandbox.UIDS_ENV, "70000-70009")
    assert sandbox.sandbox_uids() == range(70000, 70010)
    monkeypatch.setattr(sandbox, "system_account_uids", lambda: {0: "root", 1000: "ada", 70004: "grace"})
    with pytest.raises(sandbox.SandboxUidsTaken, match=r"grace \(70004\).*LLMCOURSE_SANDBOX_UIDS"):
        with sandbox._uid_lease(0):
            pass
    monkeypatch.setenv(sandbox.UIDS_ENV, "70010-70019")
    with sandbox._uid_lease(2) as uid:
        assert uid == 70012
    for bad in ("61000", "70019-70010", "10-20", "a-b"):
        monkeypatch.setenv(sandbox.UIDS_ENV, bad)
        with pytest.raises(ValueError, match="FIRST-LAST"):
            sandbox.sandbox_uids()


def test_the_machines_accounts_are_read_from_getent():
    from grader.sandbox import system_account_uids

    accounts = system_account_uids()
    assert accounts.get(0) == "root"


def test_run_folders_of_dead_grading_processes_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    import tempfile

    from grader.sandbox import RUN_FOLDER, sweep_run_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{RUN_FOLDER}999999999-abc"  # beyond pid_max: no such process
    live = tmp_path / f"{RUN_FOLDER}{os.getpid()}-def"
    other = tmp_path / "llmcourse-grading-notapid"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "events.jsonl").write_text("{}")
    assert sweep_run_folders() == 1
    assert not dead.exists() and live.exists() and other.exists()
