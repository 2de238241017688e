"""``llmcourse grade status NN``: the grading service's receipts of an assignment, for the instructor."""

from collections import Counter

from grader.classroom.course import Course
from grader.classroom.settings import Settings
from grader.classroom.store import Store


def status_lines(course: Course, assignment: str) -> list[str]:
    """Counts by state and lateness, then one line per learner: their receipts, the one that counts, and why any
    failed."""
    store, settings = Store(course.root), Settings.load(course.root)
    receipts = store.receipts(assignment)
    if not receipts:
        return [f"{assignment}: no submissions received by the service yet"]
    overrides = store.overrides(assignment)
    states = Counter(r.state for r in receipts)
    late = sum(1 for r in receipts if (d := settings.deadline_for(assignment, r.learner)) and d.days_late(r.received))
    learners = store.learners(assignment)
    lines = [f"{assignment}: {len(receipts)} received from {len(learners)} learners; "
             + ", ".join(f"{states[s]} {s}" for s in ("queued", "grading", "graded", "failed", "error") if states[s])
             + f"; {late} late", ""]
    width = max(len(name) for name in learners)
    for learner in learners:
        theirs = [r for r in receipts if r.learner == learner]
        counted = store.counted(assignment, learner, settings.deadline_for(assignment, learner))
        if learner in overrides:
            what = f"override {overrides[learner]['score']:g} ({overrides[learner]['reason']})"
        elif counted:
            late_note = f", {counted.days_late} d late" if counted.days_late else ""
            what = f"{counted.score:g} from {counted.receipt}{late_note}"
        else:
            what = "no result yet"
        lines.append(f"{learner:<{width}}  {len(theirs)} receipt{'s' * (len(theirs) != 1)}, counts: {what}")
        lines += [f"{'':<{width}}    {r.id} {r.state}: {r.why}" for r in theirs if r.state in ("failed", "error")]
    return lines
