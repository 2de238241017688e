"""A learner's and an instructor's session in a real JupyterLab (headless Chromium): run a lesson, answer
an exercise in the learner's own copy and read the checks on the page, validate with nbgrader's button,
and open the formgrader. A screenshot of each step is saved (the folder is printed in the test summary)."""

import re
import subprocess

import nbformat
import pytest
from lab_driver import Notebook

A02 = "02-self-attention"
pytestmark = pytest.mark.xdist_group("browser")  # one server and one browser for the module
RIGHT = {
    "softmax": "def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim=dim, keepdim=True))\n"
               "    return e / e.sum(dim=dim, keepdim=True)\n",
    "causal_mask": "def causal_mask(n):\n    return torch.tril(torch.ones(n, n, dtype=torch.bool))\n",
    "scaled_dot_product_attention": "def scaled_dot_product_attention(q, k, v, mask=None):\n"
                                    "    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                    "    if mask is not None:\n"
                                    "        scores = scores.masked_fill(~mask, float('-inf'))\n"
                                    "    weights = softmax(scores, dim=-1)\n    return weights @ v, weights\n",
    "self_attention": "def self_attention(x, w_q, w_k, w_v, mask=None):\n"
                      "    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, mask)\n",
}
WRONG_AXIS = ("def softmax(x, dim=-1):\n    e = torch.exp(x - x.amax(dim=0, keepdim=True))\n"
              "    return e / e.sum(dim=0, keepdim=True)\n")


def test_a_lesson_runs_in_the_browser_without_errors_and_draws_its_figures(lab, page, course, screenshot_dir):
    lesson = Notebook(page, lab, f"notebooks/{A02}.ipynb").open()
    lesson.run_all()
    images = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
    assert images.count() >= 6  # the heatmaps and head grids, rendered as images
    lesson.save()
    page.screenshot(path=str(screenshot_dir / "1-lesson-02-run-all.png"))
    executed = nbformat.read(course / "notebooks" / f"{A02}.ipynb", as_version=4)
    assert not lesson.unrun_cells(), f"cells {lesson.unrun_cells()} did not run"  # guesses' empty cells never do
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    assert sum(o.output_type == "display_data" and "image/png" in o.data
               for c in executed.cells if c.cell_type == "code" for o in c.outputs) >= 6


def test_the_learner_answers_an_exercise_and_reads_the_check_on_the_page(lab, page, course, screenshot_dir):
    work = Notebook(page, lab, f"my-work/{A02}/{A02}.ipynb").open()
    work.run(work.index_of("from grader import check"))
    answer, check = work.index_of("def softmax("), work.index_of('check("softmax", softmax)')
    work.set_source(answer, RIGHT["softmax"])
    work.run(answer)
    passed = work.run(check)
    assert re.search(r"passed all \d+ cases", passed), passed
    work.cells.nth(check).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "2-softmax-passes.png"))
    work.set_source(answer, WRONG_AXIS)
    work.run(answer)
    failed = work.run(check)
    assert "Likely mistake: ignored the `dim` argument" in failed, failed
    work.cells.nth(check).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "3-softmax-names-the-mistake.png"))
    for name, code in RIGHT.items():
        work.set_source(work.index_of(f"def {name}("), code)
    work.run_all()
    checks = [work.output(work.index_of(f'check("{name}", {name})')) for name in RIGHT]
    assert all(re.search(r"passed all \d+ cases", text) for text in checks), checks
    work.save(expect="return torch.tril(torch.ones(n, n, dtype=torch.bool))")
    page.screenshot(path=str(screenshot_dir / "4-every-visible-check-passes.png"))
    untouched = subprocess.run(["git", "status", "--porcelain", "exercises"], cwd=course, capture_output=True, text=True)
    assert untouched.stdout == ""  # the learner worked in my-work/: the release is as committed


def answer_every_exercise(path) -> None:
    """Write the right answers into the learner's copy on disk (what the test above leaves there), so that
    this test stands alone."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        name = next((n for n in RIGHT if cell.source.lstrip().startswith(f"def {n}(")), None)
        if cell.cell_type == "code" and name:
            cell.source = RIGHT[name]
    nbformat.write(nb, path)


def test_nbgrader_validate_button_reports_the_finished_notebook(lab, page, course, screenshot_dir):
    answer_every_exercise(course / "my-work" / A02 / f"{A02}.ipynb")
    Notebook(page, lab, f"my-work/{A02}/{A02}.ipynb").open()
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar").get_by_text("Validate", exact=True).click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=300_000)
    page.wait_for_function("() => !/Validating/i.test(document.querySelector('.jp-Dialog')?.innerText ?? '')",
                           timeout=300_000)
    verdict = dialog.inner_text()
    page.screenshot(path=str(screenshot_dir / "5-nbgrader-validate.png"))
    assert "Success" in verdict and "passes all the tests" in verdict, verdict


def test_the_instructor_sees_the_assignments_in_formgrader(lab, page, screenshot_dir):
    page.goto(f"{lab.url}/formgrader?token={lab.token}")
    page.get_by_text(A02).first.wait_for()
    page.screenshot(path=str(screenshot_dir / "6-formgrader-assignments.png"))
    assert A02 in page.inner_text("body")
