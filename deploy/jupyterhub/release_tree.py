"""Build the learners' release-only tree from the instructor's course folder.

    python deploy/jupyterhub/release_tree.py INSTRUCTOR_COURSE DEST     # e.g. /srv/llmcourse/instructor
                                                                        #      /srv/llmcourse/course

DEST gets the released exercises (``exercises/NN-topic/NN-topic.ipynb``, what ``llmcourse grade release``
wrote) and the lessons (``notebooks/``), nothing else: never ``solutions/`` (the source notebooks and the
hidden checks), the gradebook, submissions, feedback or reports. Folders are made 0755 and files 0644 (every
learner reads the one tree; nobody but its owner writes it). The new tree is built beside DEST and renamed into
place, so a learner never sees a half-copied tree; run it again after each ``llmcourse grade release``.
It says so when a learner could not reach DEST (a folder above it that others cannot enter, like /root).
"""

import argparse
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

NEVER = {"solutions", "gradebook.db", "submitted", "autograded", "feedback", "collected", "reports",
         "hidden_checks.py", "nbgrader_config.py", ".ipynb_checkpoints", "__pycache__"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if name in NEVER or name.endswith((".db", ".pyc"))}


def unreachable_by_others(path: Path) -> Path | None:
    """The first folder from / down to ``path`` that a user who is neither its owner nor in its group cannot
    enter (None: others can reach ``path``)."""
    path = path.resolve()
    for folder in (*reversed(path.parents), path):
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def build(course: Path, dest: Path) -> list[str]:
    """Copy ``course``'s exercises/ and notebooks/ to ``dest`` (replacing it); return the chapters released."""
    course, dest = course.resolve(), dest.resolve()
    released = sorted(p.name for p in (course / "exercises").glob("[0-9][0-9]-*") if (p / f"{p.name}.ipynb").is_file())
    if not released:
        raise SystemExit(f"{course} has no released exercises (exercises/NN-topic/NN-topic.ipynb): run "
                         f"`llmcourse grade release NN` there first")
    if dest == course or course in dest.parents:
        raise SystemExit(f"{dest} is inside the instructor's course {course}: learners must not need to enter it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for part in ("exercises", "notebooks"):
            if (course / part).is_dir():
                shutil.copytree(course / part, tmp / part, ignore=_ignore)
        for folder, dirs, files in os.walk(tmp):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return released


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("course", type=Path, help="the instructor's course folder (solutions/, exercises/, ...)")
    parser.add_argument("dest", type=Path, help="the learners' tree to (re)build, e.g. /srv/llmcourse/course")
    args = parser.parse_args(argv)
    released = build(args.course, args.dest)
    print(f"{args.dest}: exercises of {', '.join(released)} and the lessons (no solutions, no gradebook)")
    blocked = unreachable_by_others(args.dest)
    if blocked:
        print(f"warning: learners cannot enter {blocked} (chmod o+x it, or build the tree elsewhere)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
