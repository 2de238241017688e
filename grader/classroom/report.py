"""The class report of one assignment: per exercise, the mean score and the share of students at full marks;
a histogram of totals; the most common named mistakes across the class, counted from the results' named
mistakes as data (never parsed from feedback text). Written as HTML with the plots embedded, and as CSV.
"""

import base64
import html
import io
from collections import Counter
from pathlib import Path

import pandas as pd

from grader.core import exercises_of
from grader.classroom.course import Course


def class_results(course: Course, assignment: str) -> list[dict]:
    """Every graded student's record of ``assignment`` (students whose grading failed count as zero)."""
    records = []
    for student in course.submissions(assignment):
        record = course.record(student, assignment)
        if record is not None and not record["status"].startswith("error"):
            records.append(record)
    return records


def exercise_table(records: list[dict], chapter: str) -> pd.DataFrame:
    """One row per exercise: points, mean score, share at full marks (visible and hidden cells together)."""
    rows = []
    for exercise in exercises_of(chapter):
        cells = (f"check_{exercise.name}", f"hidden_{exercise.name}")
        earned = [sum(r["cells"][c]["earned"] for c in cells if c in r["cells"]) for r in records]
        possible = max((sum(r["cells"][c]["possible"] for c in cells if c in r["cells"]) for r in records), default=0)
        rows.append({"exercise": exercise.name, "points": possible,
                     "mean score": sum(earned) / len(earned) if earned else float("nan"),
                     "full marks": sum(e == possible for e in earned) / len(earned) if earned else float("nan")})
    return pd.DataFrame(rows)


def mistake_table(records: list[dict], top: int = 15) -> pd.DataFrame:
    """The named mistakes behind failed cells, with how many students made each (and in which exercise)."""
    students = Counter()
    for record in records:
        seen = set()
        for grade_id, cell in record["cells"].items():
            exercise = grade_id.split("_", 1)[1]
            for mistake in cell.get("mistakes", {}):
                seen.add((exercise, mistake))
        students.update(seen)
    rows = [{"exercise": e, "mistake": m, "students": n} for (e, m), n in students.most_common(top)]
    return pd.DataFrame(rows, columns=["exercise", "mistake", "students"])


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(course: Course, assignment: str, out: Path | None = None) -> Path:
    """Write ``report.html``, ``exercises.csv``, ``mistakes.csv`` and ``totals.csv``; return the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out or course.root / "reports" / assignment)
    out.mkdir(parents=True, exist_ok=True)
    records = class_results(course, assignment)
    exercises = exercise_table(records, assignment[:2])
    mistakes = mistake_table(records)
    totals = pd.DataFrame([{"student": r["student"], "score": sum(c["earned"] for c in r["cells"].values()),
                            "max_score": sum(c["possible"] for c in r["cells"].values()), "status": r["status"]}
                           for r in records])
    exercises.to_csv(out / "exercises.csv", index=False)
    mistakes.to_csv(out / "mistakes.csv", index=False)
    totals.to_csv(out / "totals.csv", index=False)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    if len(totals):
        left.hist(totals["score"], bins=range(0, int(totals["max_score"].max()) + 2), align="left",
                  color="tab:blue", edgecolor="white")
    left.set(title=f"Totals ({len(totals)} students)", xlabel="score", ylabel="students")
    right.barh(exercises["exercise"], exercises["full marks"] * 100, color="tab:green")
    right.set(title="Students at full marks", xlabel="% of the class", xlim=(0, 100))
    right.invert_yaxis()
    figure = _png(fig)
    plt.close(fig)

    failed = totals[totals["status"] != "graded"] if len(totals) else totals
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{assignment}: class report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} td,th{{padding:2px 8px;text-align:left}}</style>
</head><body><h1>{html.escape(assignment)}: class report</h1>
<p>{len(records)} graded submissions; mean total {totals['score'].mean() if len(totals) else float('nan'):.2f} of
{totals['max_score'].max() if len(totals) else 0:g}; {len(failed)} could not be graded (score 0).</p>
<img src="data:image/png;base64,{figure}" alt="totals and full marks">
<h2>Exercises</h2>{exercises.to_html(index=False, float_format=lambda v: f'{v:.2f}')}
<h2>Most common named mistakes</h2>
<p>Counted from the results' named mistakes (data, not text): students whose work matched each one.</p>
{mistakes.to_html(index=False)}
<h2>Submissions that could not be graded</h2>{failed.to_html(index=False) if len(failed) else '<p>none</p>'}
</body></html>"""
    (out / "report.html").write_text(page)
    return out / "report.html"
