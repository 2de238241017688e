"""Every lesson and reference solution executes headless, in quick mode, with the network closed but for
loopback (tests/offline.py); no lesson hands over an exercise.

The give-away test, defined exactly so: every function a lesson defines at the top level of a code
cell (``def``, or a name bound to a ``lambda``) is run, in the lesson's own kernel after its last cell,
through the check of every exercise of the same chapter, with what the exercises forbid not enforced
(a lesson function that is a complete answer but for calling ``torch.softmax`` still gives the answer
away). None may pass.
"""

import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell
from offline import run_offline

from llmcourse import instruct
from llmcourse.device import CHECK_ENV
from llmcourse.run_notebooks import course_notebooks, execute_notebook

ROOT = Path(__file__).resolve().parent.parent
GIVEAWAY_MARK = "GIVEAWAY-PROBE "


def top_level_functions(nb) -> list[str]:
    """Names of the functions defined at the top level of the notebook's code cells."""
    names = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.append(node.name)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return list(dict.fromkeys(names))


def giveaway_probe(chapter: str, names: list[str]) -> str:
    """A cell that checks each lesson function against each exercise of ``chapter``; prints what passed."""
    return f"""
import json as _json
from grader import check as _check, exercises_of as _exercises_of
from grader.forbidden import not_enforced as _not_enforced
_passing = []
with _not_enforced():
    for _name in {names!r}:
        _fn = globals().get(_name)
        if callable(_fn):
            for _exercise in _exercises_of({chapter!r}):
                if _check(_exercise.name, _fn).passed:
                    _passing.append([_name, _exercise.name])
print({GIVEAWAY_MARK!r} + _json.dumps(_passing))
"""


def printed_after(nb, mark: str):
    """The JSON a probe cell printed after ``mark``."""
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return json.loads(printed.split(mark, 1)[1].splitlines()[0])


# lesson 11 runs DPO at the configuration whose quick-mode point benchmarks/dpo_beta_sweep.py recorded: the
# lesson's own run (its kernel's kl and change) must land on it
DPO_LESSON = "11-instruction-tuning.ipynb"
DPO_POINT_MARK = "LIVE-DPO-POINT "
DPO_POINT_PROBE = f"""
import json as _json
print({DPO_POINT_MARK!r} + _json.dumps({{"kl": float(kl),
                                         "before": {{k: float(c["before"]) for k, c in change.items()}},
                                         "after": {{k: float(c["after"]) for k, c in change.items()}}}}))
"""


def assert_the_live_dpo_point_agrees_with_the_sweep(live: dict) -> None:
    recorded = instruct.load_beta_sweep()["quick"]
    one_item = 1 / instruct.LESSON_DPO["quick"]["n_ambiguous"]
    assert live["before"] == pytest.approx(recorded["before"], abs=1e-9), "the untuned model answers otherwise"
    assert live["kl"] == pytest.approx(recorded["kl"], rel=0.05), (live["kl"], recorded["kl"])
    for name in ("stereotyped share", "disambiguated accuracy"):
        assert live["after"][name] == pytest.approx(recorded[name], abs=one_item + 1e-9), (name, live, recorded)


def is_lesson(path: Path) -> bool:
    return path.parent.name == "notebooks"


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda path: str(path.relative_to(ROOT)))
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv(CHECK_ENV, "1")  # a model called with inputs never moved to its device fails the cell
    extra = []
    dpo_lesson = is_lesson(path) and path.name == DPO_LESSON
    if is_lesson(path):
        names = top_level_functions(nbformat.read(path, as_version=4))
        extra = ([DPO_POINT_PROBE] if dpo_lesson else []) + [giveaway_probe(path.name[:2], names)]
    (tmp_path / "cells.json").write_text(json.dumps(extra))
    run = run_offline(["notebook", str(path), str(tmp_path / "executed.ipynb"), str(tmp_path / "cells.json")],
                      tmp_path / "blocked.jsonl")
    nb = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    assert not run.strays(), f"{path.name} tried to reach the network: {run.strays()}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    code_cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]  # empty: a learner's guess
    assert all(c.execution_count for c in code_cells), "some cells did not run"
    if dpo_lesson:
        assert_the_live_dpo_point_agrees_with_the_sweep(printed_after(nb, DPO_POINT_MARK))
    if is_lesson(path):
        passing = printed_after(nb, GIVEAWAY_MARK)
        assert not passing, (f"{path.name} defines functions that pass its chapter's exercise checks (lesson "
                             f"function, exercise): {passing}. Show the steps inline, compare with the library's "
                             f"own operation, or build a different variant; the general function is the "
                             f"learner's to write.")


def test_the_probe_finds_a_function_that_gives_an_exercise_away(tmp_path):
    """The probe itself: a lesson that defines a correct softmax is caught (even one calling torch.softmax)."""
    lesson = tmp_path / "notebooks" / "02-probe.ipynb"
    lesson.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        new_code_cell("import torch\nstable = lambda x, dim=-1: torch.softmax(x, dim=dim)"),
        new_code_cell("def tidy(x, dim=-1):\n    e = (x - x.amax(dim, keepdim=True)).exp()\n"
                      "    return e / e.sum(dim, keepdim=True)\n\n\ndef unrelated(n):\n    return n + 1"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lesson)
    names = top_level_functions(nb)
    assert names == ["stable", "tidy", "unrelated"]
    executed, _ = execute_notebook(lesson, quick=True, extra_cells=[new_code_cell(giveaway_probe("02", names))])
    assert printed_after(executed, GIVEAWAY_MARK) == [["stable", "softmax"], ["tidy", "softmax"]]


def test_llmcourse_has_no_function_with_an_exercise_name():
    """d2l-style sharing, but no library function has an exercise's name (COURSE.md)."""
    from grader.checks import register_all
    from grader.core import REGISTRY

    register_all()
    clashes = []
    for module in sorted((ROOT / "llmcourse").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in REGISTRY:
                clashes.append(f"{module.name}: {node.name}")
    assert not clashes


# Lesson 05's first model call before issue 22: on a GPU it fails, since `ids` stays on the CPU.
CELL_THAT_NEVER_MOVES_ITS_INPUTS = """prompt = "The capital of France is"
ids = tokenizer(prompt, return_tensors="pt").input_ids  # (1, T)
with torch.no_grad():
    logits = model(ids).logits  # (1, T, V)
"""


@pytest.mark.parametrize("move", ["", ".to(model.device)"], ids=["never-moved", "moved"])
def test_the_device_check_fails_a_cell_that_never_moves_its_inputs_to_the_model(move, tmp_path, monkeypatch):
    """On the CPU `.to(cpu)` is the very tensor, so the check mode marks what was moved (llmcourse.device)."""
    nb = nbformat.v4.new_notebook(cells=[
        new_code_cell("import torch\nfrom llmcourse.models import load_causal_lm\ntokenizer, model = load_causal_lm()"),
        new_code_cell(CELL_THAT_NEVER_MOVES_ITS_INPUTS.replace(".input_ids  #", f".input_ids{move}  #"))])
    nbformat.write(nb, tmp_path / "cells.ipynb")
    monkeypatch.setenv(CHECK_ENV, "1")
    if not move:
        with pytest.raises(Exception, match="DeviceNotFollowed.*never moved to the model's device"):
            execute_notebook(tmp_path / "cells.ipynb", quick=True)
    else:
        execute_notebook(tmp_path / "cells.ipynb", quick=True)
