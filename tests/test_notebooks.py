"""Every lesson and reference solution executes headless, in quick mode."""

from pathlib import Path

import pytest

from llmcourse.run_notebooks import course_notebooks, execute_notebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_executes(path):
    nb, _ = execute_notebook(path, quick=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "some cells did not run"
