"""Hidden tests for nbgrader: cases that live only in the instructor's tree.

A source notebook's hidden test block calls ``run_hidden("softmax", softmax)``. The cases come
from ``hidden_checks.py`` beside the source notebook (``solutions/<assignment>/``), which is never
released; the verdict uses the visible exercise's judge, and the failure message names the mistake
but not the hidden inputs.
"""

import importlib.util
import os
from pathlib import Path

from grader.core import get_exercise, run_cases, verdict
from grader.result import CheckFailed, mistake_lines

HIDDEN_FILE = "hidden_checks.py"
HIDDEN_ENV = "LLMCOURSE_HIDDEN_DIR"
SOURCE_DIR = "solutions"


def find_hidden_file(cwd: Path | None = None) -> Path:
    """``hidden_checks.py`` for the assignment being graded (the folder the notebook runs in).

    Looks in ``$LLMCOURSE_HIDDEN_DIR``, then beside the notebook (an instructor running the source),
    then in ``<course root>/solutions/<assignment>/`` (autograde runs in
    ``<course root>/autograded/<student>/<assignment>/``); the course root holds nbgrader_config.py.
    """
    cwd = Path(cwd or os.getcwd()).resolve()
    candidates = []
    if os.environ.get(HIDDEN_ENV):
        candidates.append(Path(os.environ[HIDDEN_ENV]) / HIDDEN_FILE)
    candidates.append(cwd / HIDDEN_FILE)
    for root in cwd.parents:
        if (root / "nbgrader_config.py").is_file():
            candidates.append(root / SOURCE_DIR / cwd.name / HIDDEN_FILE)
            break
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"hidden tests not found (looked for {', '.join(map(str, candidates))}). Run nbgrader from the "
        f"course root, whose {SOURCE_DIR}/{cwd.name}/ holds {HIDDEN_FILE}, or set {HIDDEN_ENV}.")


def load_hidden_cases(name: str, cwd: Path | None = None) -> list:
    path = find_hidden_file(cwd)
    spec = importlib.util.spec_from_file_location(f"_hidden_checks_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if name not in module.CASES:
        raise KeyError(f"{path} has no hidden cases for {name!r}")
    return module.CASES[name]()


def run_hidden(name: str, fn) -> None:
    """Run the hidden cases of exercise ``name``; raise AssertionError (inputs not shown) on failure."""
    exercise = get_exercise(name)
    cases = load_hidden_cases(name)
    result = verdict(exercise, cases, run_cases(fn, cases, exercise))
    if result.passed:
        print(f"{name}: hidden tests passed")
        return
    raise CheckFailed(hidden_summary(result))


def hidden_summary(result) -> str:
    """What a learner may see of failed hidden cases: counts and named mistakes, never the inputs."""
    if result.status == "not implemented":
        return f"{result.name}: hidden tests not run: not implemented yet"
    lines = [f"{result.name}: failed {len(result.failures)} of {len(result.cases)} hidden test cases "
             f"(cases the visible check does not cover)."]
    return "\n".join(lines + mistake_lines(result.mistakes, len(result.cases)))
