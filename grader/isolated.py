"""Check the functions of a learner's notebook in a child process.

The child loads the notebook's definitions, calls each function on the cases and writes plain
outputs (JSON lines, no pickle) to a file. The verdict is given here, in the parent, from those
values only, so code in the notebook cannot change it, and a notebook that exits, crashes or
loops costs only its own exercise.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from grader import values
from grader.core import Outcome, get_exercise, run_cases, verdict
from grader.result import CheckResult

LOAD_TIMEOUT_S = 120.0  # importing torch and the notebook's own imports


def _child(notebook: str, out_path: str, names: list[str]) -> None:
    """Child process: load definitions, run each exercise's cases, report plain outputs."""
    from grader.notebook import load_definitions

    with open(out_path, "a", buffering=1) as out:
        def emit(**event):
            out.write(json.dumps(event) + "\n")
            out.flush()

        loaded = load_definitions(notebook)
        for name in names:
            emit(event="start", name=name)
            fn = loaded.function(name)
            if fn is None:
                emit(event="missing", name=name, message=loaded.missing_message(name))
                continue
            exercise = get_exercise(name)
            outcomes = run_cases(fn, exercise.make_cases(), exercise)
            emit(event="result", name=name, outcomes=[
                {"status": o.status, "value": values.dumps(o.value), "error_type": o.error_type,
                 "message": o.message, "where": o.where, "observations": values.dumps(o.observations)}
                for o in outcomes])


def _read_events(path: Path) -> list[dict]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            break  # a line cut short by a crash: the rest is lost
    return events


def _run_child(notebook: Path, names: list[str], timeout_s: float):
    """Run one child over ``names``; return (events, exit code or None on timeout)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "events.jsonl"
        out_path.touch()
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "grader.isolated", str(notebook), str(out_path), *names]
        try:
            proc = subprocess.run(cmd, cwd=notebook.parent, env=env, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, ""
        return _read_events(out_path), code, stderr


def check_notebook(notebook, names: list[str]) -> list[CheckResult]:
    """Check the named exercises against the functions defined in ``notebook``, one result each."""
    notebook = Path(notebook).resolve()
    exercises = {name: get_exercise(name) for name in names}
    results: dict[str, CheckResult] = {}
    pending = list(names)
    while pending:
        budget = LOAD_TIMEOUT_S + sum(exercises[n].timeout_s * 10 for n in pending)
        events, code, stderr = _run_child(notebook, pending, budget)
        started = None
        for event in events:
            name = event["name"]
            exercise = exercises[name]
            if event["event"] == "start":
                started = name
            elif event["event"] == "missing":
                results[name] = CheckResult.error(exercise, event["message"], str(notebook))
            elif event["event"] == "result":
                outcomes = [Outcome(o["status"], values.loads(o["value"]), o["error_type"], o["message"], o["where"],
                                    values.loads(o["observations"])) for o in event["outcomes"]]
                results[name] = verdict(exercise, exercise.make_cases(), outcomes, str(notebook))
        if started is None:  # the child died before reaching any exercise
            why = "did not finish loading" if code is None else f"failed while loading (exit code {code})"
            tail = "\n".join(stderr.strip().splitlines()[-3:])
            for name in pending:
                results[name] = CheckResult.error(exercises[name], f"the notebook {why}.\n{tail}".strip(),
                                                  str(notebook))
            break
        if started not in results:  # the child stopped inside this exercise
            if code is None:
                problem = f"no result within {budget:.0f} s: is there an endless loop?"
            else:
                problem = (f"the process ended while running `{started}` (exit code {code}): does the "
                           f"code call exit(), sys.exit() or os._exit(), or crash Python?")
            results[started] = CheckResult.error(exercises[started], problem, str(notebook))
        pending = [n for n in pending if n not in results]
    return [results[n] for n in names]


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3:])
