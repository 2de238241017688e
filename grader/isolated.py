"""Check the functions of a learner's notebook in a child process (``llmcourse check``).

The child (``grader.sandbox``, the same one that grades a class, without the isolation meant for
untrusted code: this is the learner's own notebook on their own machine) loads the notebook's
definitions, calls each function on the visible cases and writes plain outputs back. The verdict is
given here, in the parent, from those values only, so code in the notebook cannot change it, and a
notebook that exits, crashes or loops costs only its own exercise.
"""

import sys
from pathlib import Path

from grader.autograde import _outcomes, warm_imports
from grader.core import get_exercise, verdict
from grader.result import CheckResult
from grader.sandbox import Limits, Task, describe_end, run_child

LOAD_TIMEOUT_S = 120.0  # importing torch and the notebook's own imports


def check_notebook(notebook, names: list[str], release=None) -> list[CheckResult]:
    """Check the named exercises against the functions defined in ``notebook``, one result each. With the
    chapter's ``release`` (the instructor's notebook, trusted), what it imports is imported here first, so
    the child inherits it: `llmcourse progress` then pays for matplotlib or transformers once, not per chapter."""
    if release is not None:
        from grader.notebook import read_notebook

        warm_imports(read_notebook(release))
    notebook = Path(notebook).resolve()
    data = notebook.read_bytes()
    exercises = {name: get_exercise(name) for name in names}
    cases = {name: exercises[name].make_cases() for name in names}
    results: dict[str, CheckResult] = {}
    pending = list(names)
    mode = "fork" if sys.platform.startswith("linux") else "spawn"
    while pending:
        limits = Limits(cell_timeout_s=max(exercises[n].timeout_s * 10 for n in pending), load_timeout_s=LOAD_TIMEOUT_S,
                        memory_gb=64)
        run = run_child(data, notebook.name, [Task(n, n, cases[n]) for n in pending], limits, None, mode)
        started = None
        for event in run.events:
            name = event.get("key")
            if event["event"] == "start":
                started = name
            elif event["event"] == "missing":
                results[name] = CheckResult.error(exercises[name], event["message"], str(notebook))
            elif event["event"] == "result":
                results[name] = verdict(exercises[name], cases[name], _outcomes(event), str(notebook))
        if started is None:  # the child died before reaching any exercise
            crash = next((e["message"].strip().splitlines()[-1] for e in run.events if e["event"] == "crash"), "")
            why = f"the notebook failed while loading its definitions: {crash or describe_end(run, limits)}"
            for name in pending:
                results[name] = CheckResult.error(exercises[name], why, str(notebook))
            break
        if started not in results:  # the child stopped inside this exercise
            if run.timed_out:
                problem = "no result within the time limit: is there an endless loop?"
            else:
                problem = (f"the process ended while running `{started}` ({describe_end(run, limits)})")
            results[started] = CheckResult.error(exercises[started], problem, str(notebook))
        pending = [n for n in pending if n not in results]
    return [results[n] for n in names]
