"""The gate of issue 22: no lesson and no `llmcourse/` module holds an exercise's code in a form a learner could
paste. Each exercise's reference solution (between BEGIN and END SOLUTION) is normalised statement by statement
(variable names and literals become `_`; library modules, calls and attribute names are kept; a compound
statement counts by its header) and an exercise is given away when at least half of its statements, and at least
two, reappear in a lesson or anywhere in `llmcourse/`.

The test is a floor (issue 22: the rule, read by a person, is the bar). The counts per chapter are printed
(`pytest -s`).
"""

import ast
import copy
import json
import re
from pathlib import Path

from grader.checks import CHAPTERS
from grader.core import exercises_of

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"torch", "F", "nn", "np", "math", "copy", "random", "itertools", "collections", "functools", "scipy",
           "stats", "transformers", "re", "string"}  # names kept as they are: library calls stay recognisable
# normalised statements too common to count as giving anything away, with the reason (written as `statements`
# gives them: every name but a library module's is `_`, so `_.train()` is `model.train()`)
ALLOWED = {
    "with torch.no_grad():": "the standard way to run a model without gradients",
    "_.eval()": "switching a model to evaluation mode (`model.eval()`)",
    "_.train()": "switching a model to training mode (`model.train()`)",
}


class _Placeholders(ast.NodeTransformer):
    def visit_Name(self, node):
        return node if node.id in MODULES else ast.copy_location(ast.Name("_", node.ctx), node)

    def visit_JoinedStr(self, node):  # an f-string is a literal too
        return ast.copy_location(ast.Name("_", ast.Load()), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Name("_", ast.Load()), node)

    def visit_arg(self, node):
        node.arg = "_"
        node.annotation = None
        return node


def _header(statement: ast.stmt) -> ast.AST:
    """A compound statement without its body (``for x in y:`` counts as the loop's header only)."""
    fields = {name: value for name, value in ast.iter_fields(statement)
              if name not in ("body", "orelse", "finalbody", "handlers", "decorator_list", "returns", "type_comment")}
    return type(statement)(**fields, **{name: [] for name in ("body", "orelse", "finalbody", "handlers")
                                        if name in statement._fields})


def _counted(node: ast.AST) -> bool:
    """A statement that can give code away: not a definition or an import, and an expression only when a call."""
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Call)
    return isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import,
                                                                ast.ImportFrom))


def statements(tree: ast.AST) -> list[str]:
    """Every statement of ``tree``, nested ones too, normalised; trivial ones (no call, attribute, subscript or
    operator: ``return x``, ``y = x``) and function definitions left out."""
    found = []
    for node in filter(_counted, ast.walk(tree)):
        shape = _Placeholders().visit(copy.deepcopy(_header(node) if hasattr(node, "body") else node))
        if not any(isinstance(n, (ast.Call, ast.Attribute, ast.Subscript, ast.BinOp, ast.Compare)) for n in ast.walk(shape)):
            continue
        found.append(re.sub(r"\s+", " ", ast.unparse(ast.fix_missing_locations(shape))).strip())
    return found


def _code(source: str) -> str:
    return "\n".join("" if re.match(r"\s*[%!]", line) else line for line in source.splitlines())


def notebook_statements(path: Path) -> set:
    found = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            try:
                found |= set(statements(ast.parse(_code("".join(cell["source"])))))
            except SyntaxError:
                continue
    return found


def solution(chapter: str, name: str) -> list[str]:
    """The normalised statements of the reference solution of exercise ``name``."""
    source_nb = next((ROOT / "solutions").glob(f"{chapter}-*/{chapter}-*.ipynb"))
    for cell in json.loads(source_nb.read_text())["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == name:
            code = _code("".join(cell["source"]).replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
            return list(dict.fromkeys(s for s in statements(ast.parse(code)) if s not in ALLOWED))
    raise KeyError(name)


def corpus() -> dict[str, set]:
    """Where an exercise's code must not be: every lesson, and every module of llmcourse/."""
    places = {str(p.relative_to(ROOT)): notebook_statements(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    for module in sorted((ROOT / "llmcourse").glob("*.py")):
        places[str(module.relative_to(ROOT))] = set(statements(ast.parse(module.read_text())))
    return places


def given_away() -> dict[str, dict[str, tuple]]:
    """chapter -> exercise -> (statements found, of how many, where) for the exercises given away."""
    places = corpus()
    found: dict[str, dict[str, tuple]] = {chapter: {} for chapter in CHAPTERS}
    for chapter in CHAPTERS:
        for exercise in exercises_of(chapter):
            mine = solution(chapter, exercise.name)
            for where, there in places.items():
                hits = [s for s in mine if s in there]
                if len(hits) >= 2 and 2 * len(hits) >= len(mine):
                    found[chapter][exercise.name] = (len(hits), len(mine), where)
                    break
    return found


def test_the_normalisation_keeps_library_calls_and_drops_names():
    tree = ast.parse("def f(x, w):\n    scores = x @ w.T / math.sqrt(w.shape[-1])\n    return torch.softmax(scores, dim=-1)\n")
    assert statements(tree) == ["_ = _ @ _.T / math.sqrt(_.shape[-_])", "return torch.softmax(_, dim=-_)"]


def test_the_allowed_statements_are_written_as_the_normalisation_writes_them():
    sources = ["with torch.no_grad():\n    pass\n", "model.eval()\n", "model.train()\n"]
    assert {statements(ast.parse(source))[0] for source in sources} == set(ALLOWED)


def test_the_gate_finds_a_lesson_cell_that_pastes_an_exercise(tmp_path):
    softmax = solution("02", "softmax")  # three statements
    lesson = tmp_path / "lesson.ipynb"
    code = ("shifted = scores - scores.max(dim=1, keepdim=True).values\nexps = torch.exp(shifted)\n"
            "probs = exps / exps.sum(dim=1, keepdim=True)\n")  # the same steps, other names, no function
    lesson.write_text(json.dumps({"cells": [{"cell_type": "code", "source": code}]}))
    assert sum(s in notebook_statements(lesson) for s in softmax) >= 2


def test_no_lesson_or_helper_gives_an_exercise_away(capsys):
    found = given_away()
    with capsys.disabled():
        print("\nexercises given away, per chapter: " + ", ".join(f"{ch} {len(found[ch])}" for ch in CHAPTERS))
        for chapter, exercises in found.items():
            for name, (hits, total, where) in exercises.items():
                print(f"  {chapter} {name}: {hits} of its {total} statements in {where}")
    assert not any(found.values()), {chapter: sorted(exercises) for chapter, exercises in found.items() if exercises}
