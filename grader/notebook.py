"""Load the definitions of a notebook (imports, functions, classes, constants), running nothing else.

This is for trusted notebooks (the reference solutions, in tests). A learner's notebook is loaded
the same way, but in a child process: see ``grader.isolated``.
"""

import ast
import json
import linecache
import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.values import AttrDict

_MAGIC = re.compile(r"^\s*[%!]|^\s*\w[\w.]*\?\??\s*$")
_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class NotebookError(ValueError):
    """The file is missing or is not a readable notebook."""


@dataclass
class LoadedNotebook:
    path: Path
    namespace: dict
    problems: list = field(default_factory=list)  # sentences about cells that could not be used

    def function(self, name: str):
        """The function ``name`` defined in the notebook, or None."""
        fn = self.namespace.get(name)
        return fn if callable(fn) else None

    def missing_message(self, name: str) -> str:
        notes = "".join(f"\n  note: {p}" for p in self.problems)
        return (f"`{name}` is not defined in {self.path.name}: keep its `def {name}(...)` at the top level "
                f"of a code cell, and run nothing else in that cell that could fail.{notes}")


class NotebookNode(AttrDict):
    """A notebook's JSON with attribute access (``nb.cells``, ``cell.source``), as nbformat's own."""


def _node(value):
    if isinstance(value, dict):
        return NotebookNode((k, _node(v)) for k, v in value.items())
    return [_node(v) for v in value] if isinstance(value, list) else value


def _v4_notebook(raw) -> NotebookNode:
    """A format-4 notebook's JSON as nodes, each cell's source joined into one string; an error if the cells
    are not what format 4 says."""
    nb = _node(raw)
    for cell in nb.cells:
        if not isinstance(cell.cell_type, str):
            raise ValueError(f"a cell's cell_type is {cell.cell_type!r}")
        cell["source"] = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        cell.setdefault("metadata", NotebookNode())
    return nb


def read_notebook(path):
    """Read a notebook (cells, cell_type, source, metadata, with attribute access), or raise NotebookError saying
    what to do. Format-4 notebooks are read as JSON: importing nbformat takes a second (its schema validator),
    which ``llmcourse check`` should not pay; older formats go through nbformat's converter."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"no notebook at {path}")
    try:
        raw = json.loads(path.read_bytes())
        if isinstance(raw, dict) and raw.get("nbformat") == 4 and isinstance(raw.get("cells"), list):
            return _v4_notebook(raw)
        import nbformat

        return nbformat.read(path, as_version=4)
    except Exception as err:
        raise NotebookError(
            f"{path} is not a readable notebook ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            f"If it was edited outside Jupyter, restore it (for example with `git checkout {path}`) "
            f"or open it in JupyterLab and save it again.") from None


def _is_constant(node) -> bool:
    """``NAME = <literal>`` with an upper-case name: a hyper-parameter, safe to evaluate."""
    if not isinstance(node, ast.Assign):
        return False
    names = [t.id for t in node.targets if isinstance(t, ast.Name)]
    if len(names) != len(node.targets) or not all(n.isupper() for n in names):
        return False
    try:
        ast.literal_eval(node.value)
    except (ValueError, SyntaxError, TypeError):
        return False
    return True


def definition_cells(nb) -> list[tuple[int, str, list]]:
    """(cell number, source, kept top-level statements) for each code cell; problems as strings."""
    cells = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if _MAGIC.match(line) else line for line in cell.source.splitlines())
        try:
            tree = ast.parse(source)
        except SyntaxError as err:
            cells.append((number, source, SyntaxError(f"cell {number} does not parse: {err.msg} (line {err.lineno})")))
            continue
        cells.append((number, source, [n for n in tree.body if isinstance(n, _KEEP) or _is_constant(n)]))
    return cells


def load_definitions(path) -> LoadedNotebook:
    """Execute only the imports, definitions and constants of every code cell, in one namespace."""
    path = Path(path)
    nb = read_notebook(path)
    loaded = LoadedNotebook(path, {"__name__": "__notebook__"})
    for number, source, kept in definition_cells(nb):
        if isinstance(kept, SyntaxError):
            loaded.problems.append(str(kept))
            continue
        filename = f"<{path.name} cell {number}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        for node in kept:
            code = compile(ast.Module(body=[node], type_ignores=[]), filename, "exec")
            try:
                exec(code, loaded.namespace)
            except Exception as err:  # e.g. an import that fails: report it, keep the rest
                loaded.problems.append(f"cell {number}, line {node.lineno}: {type(err).__name__}: {err}")
    return loaded
