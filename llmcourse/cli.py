"""The ``llmcourse`` command: ``check`` a learner's exercises, ``fetch`` the models and data, ``doctor``."""

import argparse
import re
import sys
from pathlib import Path

from llmcourse.workspace import notebook_for, outdated, releases, start, start_all


def chapters_with_exercises() -> dict[str, str]:
    """{"02": "02-self-attention", ...} for the released chapters that have checks."""
    from grader.checks import CHAPTERS

    return {chapter: path.parent.name for chapter, path in releases().items() if chapter in CHAPTERS}


def resolve_chapter(target: str) -> str:
    """``02``, ``2`` or ``02-self-attention`` -> ``02``, or an error listing the chapters."""
    match = re.fullmatch(r"(\d{1,2})(-.*)?", target)
    chapters = chapters_with_exercises()
    if not match or f"{int(match.group(1)):02d}" not in chapters:
        listing = ", ".join(f"{ch} ({name[3:]})" for ch, name in chapters.items()) or "none yet"
        raise SystemExit(f"No chapter {target!r} with exercises. Chapters with exercises: {listing}. "
                         f"You can also give a notebook path.")
    return f"{int(match.group(1)):02d}"


def resolve_target(target: str) -> tuple[Path, str]:
    """(notebook path, chapter) for a chapter (your copy in my-work/ if you made one, else the release) or a
    notebook path."""
    path = Path(target)
    if path.suffix == ".ipynb" or path.exists():
        if path.is_dir() and (path / f"{path.name}.ipynb").is_file():  # my-work/02-self-attention/: its exercises
            path = path / f"{path.name}.ipynb"
        elif path.is_dir():
            notebooks = sorted(path.glob("*.ipynb"))
            if len(notebooks) != 1:
                raise SystemExit(f"{path} holds {len(notebooks)} notebooks; name the one to check.")
            path = notebooks[0]
        match = re.match(r"(\d\d)-", path.name)
        return path, (match.group(1) if match else "")
    chapter = resolve_chapter(target)
    return notebook_for(chapter)[0], chapter


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
    yours, have_copy = notebook_for(chapter) if chapter else (None, False)
    if chapter and not Path(args.target).exists() and not have_copy:
        print(f"Checking the release {notebook} (you have no copy yet: `llmcourse start {chapter}` makes one "
              f"in my-work/) ...", flush=True)
    else:
        print(f"Checking {notebook} ...", flush=True)
    stale = outdated(chapter) if chapter and notebook == yours else None
    if stale:
        print(f"note: {stale}", flush=True)
    results = check_notebook(notebook, names, releases().get(chapter))
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


def cmd_start(args) -> int:
    if args.chapter == "all":
        for line in start_all() or ["every chapter already has its copy in my-work/"]:
            print(line)
        return 0
    _, message = start(resolve_chapter(args.chapter), fresh=args.fresh)
    print(message)
    return 0


def cmd_progress(args) -> int:
    """One table for the whole course: every exercise passed, failed (with the named mistake) or not started."""
    from grader.core import exercises_of
    from grader.isolated import check_notebook

    rows, totals, stale = [], [], []
    released = releases()
    for chapter, name in chapters_with_exercises().items():
        notebook, mine = notebook_for(chapter)
        names = [ex.name for ex in exercises_of(chapter)]
        results = check_notebook(notebook, names, released[chapter]) if mine else []
        by_name = {r.name: r for r in results}
        for exercise in exercises_of(chapter):
            result = by_name.get(exercise.name)
            if result is None or result.status == "not implemented":
                state = "not started"
            elif result.passed:
                state = "passed"
            else:
                state = f"failed: {result.headline().removeprefix('Likely mistake: ')}"
            rows.append((chapter, exercise.name, state))
        done = sum(1 for r in results if r.passed)
        points = sum(r.points[0] for r in results)
        possible = sum(ex.points for ex in exercises_of(chapter))
        totals.append((chapter, name, done, len(names), points, possible, notebook if mine else None))
        stale.append(outdated(chapter) if mine else None)
    width = max(len(r[1]) for r in rows)
    print(f"{'ch':<3} {'exercise':<{width}}  result")
    for chapter, exercise, state in rows:
        print(f"{chapter:<3} {exercise:<{width}}  {state[:100]}")
    print("\nchapter totals (visible checks):")
    for chapter, name, done, count, points, possible, notebook in totals:
        where = f"  {notebook}" if notebook else "  (no copy yet: llmcourse start " + chapter + ")"
        print(f"  {name:<28} {done}/{count} exercises, {points}/{possible} points{where}")
    for note in filter(None, stale):
        print(f"\nnote: {note}")
    return 0


def cmd_submit(args) -> int:
    """Send your saved copy of a chapter's exercises to the grading service (and, with --wait, print the grade)."""
    from llmcourse.submit import SubmitError, feedback, submit
    from llmcourse.workspace import work_copy

    chapter = resolve_chapter(args.chapter)
    notebook = work_copy(chapter)
    try:
        if args.command == "feedback":
            feedback(notebook.parent.name)
        else:
            submit(notebook, notebook.parent.name, wait=args.wait)
    except SubmitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_lab(args) -> int:
    from llmcourse.lab import main as lab

    return lab(["--port", str(args.port)])


def cmd_fetch(args) -> int:
    from llmcourse.assets import fetch_all

    problems = fetch_all()
    for problem in problems:
        print(f"\nnot fetched: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_doctor(args) -> int:
    from llmcourse.doctor import main as doctor

    return doctor(verify=args.verify)


def cmd_grade(args) -> int:
    """The instructor's grading steps; each is idempotent and runs from the course folder."""
    from grader.classroom.course import Course, CourseError

    try:
        course = Course.find()
        if hasattr(args, "assignments"):  # release, autograde, feedback, report: one or more, or all
            assignments = course.assignments(args.assignments)
            args.several = len(assignments) > 1
        else:
            assignments = [course.assignment(args.assignment) if getattr(args, "assignment", None) else None]
        return max(GRADE_STEPS[args.step](course, assignment, args) for assignment in assignments)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _grade_release(course, assignment, args) -> int:
    path = course.release_assignment(assignment)
    print(f"released {assignment}: {path.relative_to(course.root)} (recorded in the gradebook)")
    return 0


def _grade_collect(course, assignment, args) -> int:
    report = course.collect(assignment, Path(args.path))
    print(f"collected {assignment} from {args.path}: {len(report.new)} new, {len(report.updated)} updated "
          f"(earlier versions kept in collected/), {len(report.unchanged)} unchanged")
    for line in report.notes + report.skipped:
        print(f"  note: {line}")
    return 0


def _grade_autograde(course, assignment, args) -> int:
    from grader.classroom.grading import autograde
    from grader.sandbox import Limits

    limits = Limits(memory_gb=args.memory_gb, **({"cell_timeout_s": args.cell_timeout} if args.cell_timeout else {}))
    summary = autograde(course, assignment, workers=args.workers, scheduler=args.scheduler, limits=limits,
                        isolate=not args.no_isolation, force=args.force)
    for line in summary.isolation:
        print(f"isolation: {line}")
    print(f"\n{assignment}: graded {len(summary.graded)} submissions in {summary.seconds:.1f} s, "
          f"{len(summary.skipped)} skipped (graded before and unchanged)")
    for result in sorted(summary.graded, key=lambda r: r.student):
        notes = f"  ({'; '.join(result.notes)})" if result.notes else ""
        print(f"  {result.student:<20} {result.earned:>5g}/{result.possible:<5g} {result.status}{notes}"[:220])
    return 0


def _grade_feedback(course, assignment, args) -> int:
    files = course.feedback(assignment)
    print(f"feedback for {assignment}: {len(files)} files in feedback/ (hidden tests' code and inputs are not shown)")
    return 0


def _grade_export(course, assignment, args) -> int:
    if args.format == "canvas":
        out = course.export_canvas(Path(args.out or "canvas.csv"))
        print(f"wrote {out}: Canvas's gradebook import (learners from the roster, assignments from classroom.toml)")
        return 0
    out = course.export(Path(args.out or "grades.csv"))
    print(f"wrote {out}: nbgrader's columns plus status")
    return 0


def _grade_serve(course, assignment, args) -> int:
    from grader.classroom.service import serve
    from grader.sandbox import Limits

    limits = Limits(memory_gb=args.memory_gb, **({"cell_timeout_s": args.cell_timeout} if args.cell_timeout else {}))
    return serve(course, args.host, args.port, args.cert, args.key, args.workers, limits, not args.no_isolation)


def _grade_tokens(course, assignment, args) -> int:
    from grader.classroom import tokens
    from grader.classroom.course import CourseError
    from grader.classroom.settings import Settings, SettingsError

    try:
        settings = Settings.load(course.root)
        if args.action == "revoke":
            if not args.learners:
                raise CourseError("name the learners whose tokens to revoke")
            tokens.revoke(settings, args.learners)
            print(f"revoked: {', '.join(args.learners)} (their tokens stop working at once)")
            return 0
        written = tokens.issue(settings, args.learners, Path(args.out), replace=args.action == "rotate")
    except SettingsError as err:
        raise CourseError(str(err)) from None
    for learner, path in written.items():
        print(f"{learner}: {path}")
    print(f"{len(written)} token files written to {args.out} (hand each learner theirs; the roster keeps only hashes)"
          if written else "no new tokens: every learner named has one (`rotate` replaces them)")
    return 0


def _grade_status(course, assignment, args) -> int:
    from grader.classroom.status import status_lines

    for line in status_lines(course, assignment):
        print(line)
    return 0


def _grade_regrade(course, assignment, args) -> int:
    from grader.classroom.store import Store

    n = Store(course.root).requeue(assignment, args.learners or None)
    print(f"{assignment}: {n} receipts queued again; the running service grades them (restart it first if you "
          f"changed a check's code: it imports the checks once)")
    return 0


def _grade_override(course, assignment, args) -> int:
    from grader.classroom.course import CourseError
    from grader.classroom.store import Store

    if not args.reason.strip():
        raise CourseError("an override needs its reason (--reason \"...\"): it is recorded with the score")
    Store(course.root).override(args.learner, assignment, args.score, args.reason.strip())
    print(f"{assignment}: {args.learner}'s score is {args.score:g} ({args.reason.strip()}), recorded; exports use it")
    return 0


def _grade_report(course, assignment, args) -> int:
    from grader.classroom.report import write_report

    out = Path(args.out) if args.out else None
    if out and args.several:
        out = out / assignment
    path = write_report(course, assignment, out)
    print(f"wrote {path} (and exercises.csv, mistakes.csv, totals.csv beside it)")
    return 0


GRADE_STEPS = {"release": _grade_release, "collect": _grade_collect, "autograde": _grade_autograde,
               "feedback": _grade_feedback, "export": _grade_export, "report": _grade_report,
               "serve": _grade_serve, "tokens": _grade_tokens, "status": _grade_status, "regrade": _grade_regrade,
               "override": _grade_override}


def _add_grade_parser(sub) -> None:
    grade = sub.add_parser("grade", help="grade a class (instructors): release, collect, autograde, feedback, "
                                         "export, report, or serve submissions; run from the course folder")
    steps = grade.add_subparsers(dest="step", required=True)
    several = dict(nargs="+", metavar="assignment", help="02, 2 or 02-self-attention; several, or all")
    p = steps.add_parser("release", help="nbgrader generate_assignment into exercises/, recorded in the gradebook")
    p.add_argument("assignments", **several)
    p = steps.add_parser("collect", help="copy one notebook per student from a folder or a .zip into submitted/")
    p.add_argument("assignment")
    p.add_argument("path", help="a folder or .zip: <student>.ipynb, <student>/<anything>.ipynb or "
                                "<student>_<anything>.ipynb")
    p = steps.add_parser("autograde", help="grade every collected submission (verdicts outside the students' code)")
    p.add_argument("assignments", **several)
    p.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: the cores)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler address: grade on that cluster")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds per graded cell (default 30)")
    p.add_argument("--memory-gb", type=float, default=2.0, help="memory limit of each submission's process")
    p.add_argument("--force", action="store_true", help="grade again even what is graded and unchanged")
    p.add_argument("--no-isolation", action="store_true", help="run submissions without namespaces or a "
                                                                  "separate uid (trusted code only)")
    p = steps.add_parser("feedback", help="HTML feedback per student (hidden tests never shown)")
    p.add_argument("assignments", **several)
    p = steps.add_parser("export", help="one CSV row per student and assignment, with a status column; or "
                                        "Canvas's gradebook import (--format canvas)")
    p.add_argument("--out", default=None, help="the file to write (default grades.csv, or canvas.csv)")
    p.add_argument("--format", choices=("csv", "canvas"), default="csv",
                   help="csv: nbgrader's columns plus status; canvas: Canvas's import, from classroom.toml")
    p = steps.add_parser("serve", help="the grading service: learners submit (llmcourse submit NN), get their grade "
                                       "at once; standalone or as a JupyterHub service")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (another than loopback needs --cert, --key)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--cert", default=None, help="TLS certificate (PEM)")
    p.add_argument("--key", default=None, help="TLS private key (PEM)")
    p.add_argument("--workers", type=int, default=2, help="submissions graded at once")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds per graded cell (default 30)")
    p.add_argument("--memory-gb", type=float, default=2.0, help="memory limit of each submission's process")
    p.add_argument("--no-isolation", action="store_true", help="run submissions without namespaces or a "
                                                                  "separate uid (trusted code only)")
    p = steps.add_parser("tokens", help="learners' tokens for the standalone service: issue, rotate, revoke")
    p.add_argument("action", choices=("issue", "rotate", "revoke"), help="issue: to learners without one; rotate: "
                                                                          "new ones; revoke: none")
    p.add_argument("learners", nargs="*", help="student_ids from the roster (default: every learner)")
    p.add_argument("--out", default="tokens", help="folder for the token files (default tokens/)")
    p = steps.add_parser("status", help="the service's receipts of an assignment: received, queued, graded, "
                                        "failed (why), late")
    p.add_argument("assignment")
    p = steps.add_parser("regrade", help="queue an assignment's receipts again (after a check is fixed)")
    p.add_argument("assignment")
    p.add_argument("learners", nargs="*", help="only these learners (default: everyone)")
    p = steps.add_parser("override", help="set a learner's score by hand, with the reason (recorded)")
    p.add_argument("assignment")
    p.add_argument("learner")
    p.add_argument("score", type=float)
    p.add_argument("--reason", required=True)
    p = steps.add_parser("report", help="the class report: scores per exercise, totals, common mistakes")
    p.add_argument("assignments", **several)
    p.add_argument("--out", default=None, help="folder (default reports/NN-topic/; with several assignments, "
                                                "one sub-folder each)")
    grade.set_defaults(func=cmd_grade)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="llmcourse", description="The LLM course's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="check your exercise notebook: llmcourse check 02 (or a notebook path)")
    p.add_argument("target", help="a chapter number such as 02, or the path of a notebook")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("start", help="copy a chapter's exercises and lesson into my-work/ (once): llmcourse start 02")
    p.add_argument("chapter", help="a chapter number such as 02, or all")
    p.add_argument("--fresh", action="store_true", help="start over from the release (your copies are kept as backups)")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("progress", help="your progress through the whole course, one row per exercise")
    p.set_defaults(func=cmd_progress)
    for name, text in (("submit", "send your saved copy of a chapter's exercises to the course's grading service: "
                                  "llmcourse submit 02 [--wait]"),
                       ("feedback", "your grade and feedback from the grading service: llmcourse feedback 02")):
        p = sub.add_parser(name, help=text)
        p.add_argument("chapter", help="a chapter number such as 02")
        if name == "submit":
            p.add_argument("--wait", action="store_true", help="wait for the grade and print it with the feedback")
        p.set_defaults(func=cmd_submit)
    p = sub.add_parser("lab", help="copy the exercises into my-work/ (once) and open JupyterLab")
    p.add_argument("--port", type=int, default=8888)
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("fetch", help="fetch the course's models and data into the user cache (once)")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("doctor", help="check that this machine can run the course offline")
    p.add_argument("--verify", action="store_true", help="hash every cached model and data file again (slower; "
                                                          "otherwise files are checked by size and modification time)")
    p.set_defaults(func=cmd_doctor)
    _add_grade_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
