"""The ``llmcourse`` command: ``check`` a learner's exercises, ``fetch`` the models and data, ``doctor``."""

import argparse
import re
import sys
from pathlib import Path


def course_root() -> Path:
    """The course folder: the nearest folder upwards from here that holds ``exercises/``."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "exercises").is_dir() and (folder / "solutions").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent  # an editable install of the repository


def chapters_with_exercises() -> dict[str, str]:
    """{"02": "02-self-attention", ...} for the chapters whose checks are registered."""
    import grader.checks  # noqa: F401  (registers the checks)
    from grader.core import REGISTRY

    found = {}
    for folder in sorted((course_root() / "exercises").glob("[0-9][0-9]-*")):
        chapter = folder.name[:2]
        if any(ex.chapter == chapter for ex in REGISTRY.values()):
            found[chapter] = folder.name
    return found


def resolve_target(target: str) -> tuple[Path, str]:
    """(notebook path, chapter) for ``02``, ``2``, ``02-self-attention`` or a notebook path."""
    path = Path(target)
    if path.suffix == ".ipynb" or path.exists():
        if path.is_dir():
            notebooks = sorted(path.glob("*.ipynb"))
            if len(notebooks) != 1:
                raise SystemExit(f"{path} holds {len(notebooks)} notebooks; name the one to check.")
            path = notebooks[0]
        match = re.match(r"(\d\d)-", path.name)
        return path, (match.group(1) if match else "")
    match = re.fullmatch(r"(\d{1,2})(-.*)?", target)
    chapters = chapters_with_exercises()
    listing = ", ".join(f"{ch} ({name[3:]})" for ch, name in chapters.items()) or "none yet"
    if not match or f"{int(match.group(1)):02d}" not in chapters:
        raise SystemExit(f"No chapter {target!r} with exercises. Chapters with exercises: {listing}. "
                         f"You can also give a notebook path.")
    chapter = f"{int(match.group(1)):02d}"
    folder = course_root() / "exercises" / chapters[chapter]
    return folder / f"{chapters[chapter]}.ipynb", chapter


def exercise_names(notebook: Path, chapter: str) -> list[str]:
    """The chapter's exercises, or (for a notebook without a chapter prefix) those it defines."""
    from grader.core import REGISTRY, exercises_of
    from grader.notebook import read_notebook

    if chapter and exercises_of(chapter):
        return [ex.name for ex in exercises_of(chapter)]
    source = "\n".join(c.source for c in read_notebook(notebook).cells if c.cell_type == "code")
    names = [name for name in REGISTRY if re.search(rf"^def {name}\(", source, re.M)]
    if not names:
        raise SystemExit(f"{notebook} defines none of the course's exercises.")
    return names


def cmd_check(args) -> int:
    from grader.isolated import check_notebook
    from grader.notebook import NotebookError, read_notebook

    notebook, chapter = resolve_target(args.target)
    try:
        read_notebook(notebook)
    except NotebookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = exercise_names(notebook, chapter)
    print(f"Checking {notebook} ...", flush=True)
    results = check_notebook(notebook, names)
    width = max(len(n) for n in names)
    print(f"\n{'exercise':<{width}}  {'result':<22} points  first problem")
    for r in results:
        problem = r.headline() if r.status == "failed" else ""
        print(f"{r.name:<{width}}  {r.summary[:22]:<22} {r.points[0]:>2}/{r.points[1]:<3}  {problem[:70]}")
    earned = sum(r.points[0] for r in results)
    possible = sum(r.points[1] for r in results)
    n_ok = sum(r.passed for r in results)
    print(f"\n{n_ok} of {len(results)} exercises pass, {earned}/{possible} points (visible checks).")
    for r in results:
        if r.status == "failed":
            print(f"\n{r.feedback}")
    return 0 if n_ok == len(results) else 1


def cmd_fetch(args) -> int:
    from llmcourse.assets import fetch_all

    problems = fetch_all()
    for problem in problems:
        print(f"\nnot fetched: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_doctor(args) -> int:
    from llmcourse.doctor import main as doctor

    return doctor()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="llmcourse", description="The LLM course's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="check your exercise notebook: llmcourse check 02 (or a notebook path)")
    p.add_argument("target", help="a chapter number such as 02, or the path of a notebook")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("fetch", help="fetch the course's models and data into the user cache (once)")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("doctor", help="check that this machine can run the course offline")
    p.set_defaults(func=cmd_doctor)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
