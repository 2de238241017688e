"""A temporary nbgrader course for the grading tests, and `llmcourse grade` run in it as an instructor would."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def llmcourse(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "llmcourse.cli", "grade", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"llmcourse grade {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def new_course(tmp: Path, assignments) -> Path:
    """A course folder holding nbgrader's config and the source of each of ``assignments``."""
    course = tmp / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for assignment in assignments:
        shutil.copytree(ROOT / "solutions" / assignment, course / "solutions" / assignment)
    return course
