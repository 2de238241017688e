"""Exercises implemented by someone who saw only the exercise's text (issue 21, item 4): for each, the brief they
were given (``<exercise>.md``, made by ``brief``) and what they wrote (``<exercise>.py``).
``tests/checks/test_from_text.py`` runs the visible and hidden checks on them, and fails when an exercise's text
has changed since its brief was given: then give the new brief again."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent
TASK = """# Implement one exercise from its text alone

You are a learner in a course on transformers. Below is one exercise of a Jupyter notebook, exactly as the
learner sees it: what the notebook imports, the exercise's text, its hints, and the function's stub. Write the
function in `{out}` (a Python module: the imports it needs, then the function). You may run the exercise's
visible check, as the learner does in the notebook (`from grader import check; print(check("{name}", fn))`), but
read nothing else of the course: not its solutions, checks, tests or lessons.
"""


def exercise_cells(name: str) -> tuple[str, list]:
    """(assignment, [imports cell, text, hints, stub]) of exercise ``name`` in its release notebook."""
    for notebook in sorted((ROOT / "exercises").glob("[0-9][0-9]-*/*.ipynb")):
        cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): c for c in json.loads(notebook.read_text())["cells"]}
        if name in cells:
            parts = [cells.get("imports"), cells.get(f"{name}_intro"), cells.get(f"{name}_hints"), cells[name]]
            return notebook.parent.name, [c for c in parts if c is not None]
    raise KeyError(f"no exercise {name!r} in exercises/")


def brief(name: str) -> str:
    """The brief for ``name``: the task, then the notebook's cells for that exercise as the learner sees them."""
    _, cells = exercise_cells(name)
    body = []
    for cell in cells:
        source = "".join(cell["source"])
        body.append(f"```python\n{source}\n```" if cell["cell_type"] == "code" else source)
    return TASK.format(out=f"{name}.py", name=name) + "\n---\n\n" + "\n\n".join(body) + "\n"

