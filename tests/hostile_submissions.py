"""A corpus of hostile and broken chapter-02 submissions, each a real notebook made from the release.

Chapter 02 is worth 13 points: softmax 2 + 1 (hidden), causal_mask 1 + 1, scaled_dot_product_attention
3 + 2, self_attention 2 + 1. The wrong answer used with every grader patch is a softmax normalised over
the whole tensor (a named mistake): it loses softmax, and the two attentions that call it, keeping
causal_mask's 2 points. A patch that worked would show as more than 2.
"""

import json
import re
from dataclasses import dataclass

import nbformat

TOTAL = 13.0
WRONG_SCORE = 2.0  # a softmax over the wrong axis: only causal_mask's 1 + 1 remain
LOOP_SCORE = 11.0  # causal_mask lost (1 + 1), the rest right
WRONG_SOFTMAX = "def softmax(x, dim=-1):\n    e = torch.exp(x - x.max())\n    return e / e.sum()\n"


@dataclass(frozen=True)
class Expect:
    score: float
    status: str = "graded"  # the start of the recorded status
    note: str = ""  # a phrase the recorded notes (or the status) must contain


def reference_answers(source_nb) -> dict[str, str]:
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", c.source,
                                                      flags=re.M)
            for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def filled(release_nb, answers: dict[str, str], edit=None) -> bytes:
    """The release with these answers in its solution cells, optionally edited further."""
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    if edit:
        edit(nb)
    return nbformat.writes(nb).encode()


def _prefix_softmax(code: str, body_first: str, correct: bool, ref: dict) -> dict:
    """A softmax that first runs ``body_first`` (when called, in the child), then answers right or wrong;
    ``code`` also stands at the top level of the cell (where it never runs)."""
    answer = ref["softmax"] if correct else WRONG_SOFTMAX
    indented = "\n".join("    " + line for line in body_first.strip().splitlines())
    answer = answer.replace('def softmax(x, dim=-1):\n', f"def softmax(x, dim=-1):\n{indented}\n", 1)
    return {**ref, "softmax": f"{code.strip()}\n\n{answer}" if code else answer}


def _edit_cell(grade_id, change):
    def edit(nb):
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                change(cell)
    return edit


def _delete_cell(grade_id):
    def edit(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != grade_id]
    return edit


def corpus(release_nb, source_nb, other_release_nb, other_source_nb, course_root: str) -> dict[str, tuple[bytes, Expect]]:
    """name -> (the submitted file's bytes, what grading it must record); ``course_root`` is where the
    hostile ones try to write."""
    ref = reference_answers(source_nb)
    wrong = {**ref, "softmax": WRONG_SOFTMAX}
    loop = {**ref, "causal_mask": "def causal_mask(n):\n    while True:\n        pass\n"}

    def in_causal_mask(body: str) -> dict:
        return {**ref, "causal_mask": "import os, sys, torch\n\ndef causal_mask(n):\n"
                + "\n".join("    " + line for line in body.strip().splitlines()) + "\n"}

    def softmax_first(body: str, correct: bool, top: str = "") -> bytes:
        return filled(release_nb, _prefix_softmax(top, body, correct, ref))

    patches = {
        "patch_check": "import grader\ngrader.check = lambda *a, **k: type('R', (), {'passed': True, "
                       "'assert_passed': lambda self: self})()",
        "patch_run_hidden": "import grader.hidden\ngrader.hidden.run_hidden = lambda *a, **k: None",
        "patch_verdict": "import grader.core\nfrom grader.result import CheckResult\n"
                         "grader.core.verdict = lambda ex, *a, **k: CheckResult(ex.name, '', ex.points, [], 'passed')",
        "patch_passed": "from grader.result import CheckResult\nCheckResult.passed = property(lambda self: True)",
        "showtraceback": "get_ipython().showtraceback = lambda *a, **k: None",
        "input_transformer": "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])",
    }
    found = {
        "correct": (filled(release_nb, ref), Expect(TOTAL)),
        "wrong": (filled(release_nb, wrong), Expect(WRONG_SCORE)),
        "endless_loop": (filled(release_nb, loop), Expect(LOOP_SCORE)),
        "os_exit_in_solution_cell": (filled(release_nb, {**ref, "softmax": "import os\nos._exit(0)\n\n"
                                                         + ref["softmax"]}), Expect(TOTAL)),
        "os_exit_in_function": (filled(release_nb, in_causal_mask("os._exit(0)")),
                                Expect(LOOP_SCORE, note="the process exited")),
        "sys_exit_in_solution_cell": (filled(release_nb, {**ref, "softmax": "import sys\nsys.exit()\n\n"
                                                          + ref["softmax"]}), Expect(TOTAL)),
        "sys_exit_in_function": (filled(release_nb, in_causal_mask("sys.exit(3)")), Expect(LOOP_SCORE)),
        "too_much_memory": (filled(release_nb, in_causal_mask("return torch.ones(int(6e9), dtype=torch.uint8)")),
                            Expect(LOOP_SCORE)),
        "fork_loop": (filled(release_nb, in_causal_mask("while True:\n    os.fork()")), Expect(LOOP_SCORE)),
        "edited_test_cell": (filled(release_nb, wrong, _edit_cell("check_softmax", lambda c: setattr(c, "source", "pass"))),
                             Expect(WRONG_SCORE, note="`check_softmax` was edited")),
        "deleted_test_cell": (filled(release_nb, ref, _delete_cell("check_softmax")),
                              Expect(TOTAL, note="`check_softmax` was deleted")),
        "metadata_claims_points": (filled(release_nb, wrong, _edit_cell("softmax", lambda c: c.metadata.nbgrader.update(
            grade=True, points=50))), Expect(WRONG_SCORE, note="claims 50 points")),
        "reads_hidden_checks": (softmax_first(
            f"for path in ['{course_root}/solutions/02-self-attention/hidden_checks.py',"
            f" '../../../solutions/02-self-attention/hidden_checks.py']:\n"
            f"    try:\n        print(open(path).read())\n    except OSError:\n        pass", True,
            top="print(open('../../../solutions/02-self-attention/hidden_checks.py').read())"), Expect(TOTAL)),
        "writes_course_and_gradebook": (softmax_first(
            f"for path in ['{course_root}/gradebook.db', '{course_root}/solutions/02-self-attention/hidden_checks.py',"
            f" '{course_root}/pwned.txt', '{course_root}/exercises/02-self-attention/02-self-attention.ipynb']:\n"
            f"    try:\n        open(path, 'a').write('pwned')\n    except OSError:\n        pass", True),
            Expect(TOTAL)),
        "network": (softmax_first("import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=2)\n"
                                  "except OSError:\n    pass", True), Expect(TOTAL)),
        "prints_100_mb": (softmax_first("if not globals().get('_flooded'):  # once: 100 MB per call is only slower\n"
                                        "    globals()['_flooded'] = True\n    print('x' * 100_000_000)", True),
                          Expect(TOTAL)),
        "not_json": (b'{"cells": [{"cell_type": "code", "source": "def softmax(x', Expect(0.0, "failed", "does not parse")),
        "empty_file": (b"", Expect(0.0, "failed", "empty")),
        "another_assignment": (filled(other_release_nb, reference_answers(other_source_nb)),
                               Expect(0.0, "failed", "not a notebook of this assignment")),
    }
    for name, patch in patches.items():
        found[name] = (softmax_first(patch, False, top=patch), Expect(WRONG_SCORE))
    return found
