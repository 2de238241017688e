"""Grading throughput: `llmcourse grade autograde` (1 and 2 workers) against plain `nbgrader autograde`.

    python benchmarks/grading.py [--n 100] [--cell-timeout 10] [--skip-nbgrader]

A synthetic class of chapter-02 submissions made from the release: mostly correct, some with common
mistakes, some hostile or broken (the corpus of tests/hostile_submissions.py, endless loops included).
Both graders get the same per-cell time limit. Prints submissions per minute for each run, the speed-up
over nbgrader, and whether the honest submissions got the same grades from both.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from hostile_submissions import WRONG_SOFTMAX, corpus, filled, reference_answers  # noqa: E402

A02, A03 = "02-self-attention", "03-multi-head-attention"
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
WRONG_ANSWERS = {  # honest mistakes: (grade_id, code)
    "softmax-whole-tensor": ("softmax", WRONG_SOFTMAX),
    "mask-upper": ("causal_mask", "def causal_mask(n):\n    return torch.triu(torch.ones(n, n, dtype=torch.bool))\n"),
    "no-scaling": ("scaled_dot_product_attention",
                   "def scaled_dot_product_attention(q, k, v, mask=None):\n    scores = q @ k.transpose(-2, -1)\n"
                   "    if mask is not None:\n        scores = scores.masked_fill(~mask, float('-inf'))\n"
                   "    weights = softmax(scores, dim=-1)\n    return weights @ v, weights\n"),
    "values-unprojected": ("self_attention", "def self_attention(x, w_q, w_k, w_v, mask=None):\n"
                           "    return scaled_dot_product_attention(x @ w_q, x @ w_k, x, mask)\n"),
}
HOSTILE = ["endless_loop", "os_exit_in_function", "sys_exit_in_function", "patch_verdict", "patch_passed",
           "edited_test_cell", "deleted_test_cell", "metadata_claims_points", "reads_hidden_checks", "prints_100_mb",
           "not_json", "empty_file", "another_assignment", "network", "too_much_memory"]


def notebooks(assignment):
    return (nbformat.read(ROOT / "exercises" / assignment / f"{assignment}.ipynb", 4),
            nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4))


def synthetic_class(n: int, course_root: str) -> dict[str, tuple[bytes, bool]]:
    """student -> (notebook bytes, honest?) : 15 % hostile or broken, 30 % honest mistakes, the rest correct."""
    release, source = notebooks(A02)
    ref = reference_answers(source)
    hostile = corpus(release, source, *notebooks(A03), course_root=course_root)
    students = {}
    n_hostile, n_wrong = round(0.15 * n), round(0.30 * n)
    for i in range(n_hostile):
        name = HOSTILE[i % len(HOSTILE)]
        students[f"h{i:03d}-{name.replace('_', '-')}"] = (hostile[name][0], False)
    mistakes = list(WRONG_ANSWERS.items())
    for i in range(n_wrong):
        label, (grade_id, code) = mistakes[i % len(mistakes)]
        students[f"w{i:03d}-{label}"] = (filled(release, {**ref, grade_id: code}), True)
    for i in range(n - n_hostile - n_wrong):
        students[f"c{i:03d}"] = (filled(release, ref), True)
    return students


def make_course(tmp: Path, students: dict) -> Path:
    course = tmp / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / A02, course / "solutions" / A02)
    subprocess.run([str(BIN / "nbgrader"), "generate_assignment", A02, "--force"], cwd=course, env=ENV, check=True,
                   capture_output=True)
    for student, (data, _) in students.items():
        folder = course / "submitted" / student / A02
        folder.mkdir(parents=True)
        (folder / f"{A02}.ipynb").write_bytes(data)
        subprocess.run([str(BIN / "nbgrader"), "db", "student", "add", student], cwd=course, env=ENV, check=True,
                       capture_output=True)
    return course


def run_ours(course: Path, workers: int, cell_timeout: float) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmcourse.cli", "grade", "autograde", "02", "--workers", str(workers),
                    "--cell-timeout", str(cell_timeout), "--force"], cwd=course, env=ENV, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - start
    scores = {}
    for path in course.glob(f"autograded/*/{A02}/grading.json"):
        record = json.loads(path.read_text())
        scores[record["student"]] = sum(c["earned"] for c in record["cells"].values())
    return seconds, scores


def run_nbgrader(course: Path, cell_timeout: float) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([str(BIN / "nbgrader"), "autograde", A02, f"--Execute.timeout={cell_timeout:g}", "--force"],
                   cwd=course, env=ENV, capture_output=True)  # exits non-zero when some submissions fail
    seconds = time.perf_counter() - start
    subprocess.run([str(BIN / "nbgrader"), "export", "--to", "nbgrader.csv"], cwd=course, env=ENV, check=True,
                   capture_output=True)
    with open(course / "nbgrader.csv", newline="") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    return seconds, scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--cell-timeout", type=float, default=10.0)
    parser.add_argument("--skip-nbgrader", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        tmp = Path(tmp)
        students = synthetic_class(args.n, str(tmp / "course"))
        honest = [s for s, (_, ok) in students.items() if ok]
        print(f"{len(students)} submissions of {A02}: {len(honest)} honest "
              f"({sum(s.startswith('c') for s in honest)} correct, {sum(s.startswith('w') for s in honest)} with a "
              f"mistake), {len(students) - len(honest)} hostile or broken; {args.cell_timeout:g} s per graded cell")
        course = make_course(tmp, students)
        rows = []
        for workers in (1, 2):
            seconds, scores = run_ours(course, workers, args.cell_timeout)
            rows.append((f"llmcourse grade, {workers} worker{'s' * (workers > 1)}", seconds, scores))
            print(f"  {rows[-1][0]}: {seconds:.1f} s", flush=True)
        if not args.skip_nbgrader:
            seconds, scores = run_nbgrader(course, args.cell_timeout)
            rows.append(("nbgrader autograde", seconds, scores))
            print(f"  nbgrader autograde: {seconds:.1f} s", flush=True)
    base = rows[-1][1] if not args.skip_nbgrader else None
    print(f"\n{'grader':<28} {'seconds':>8} {'submissions/min':>16} {'speed-up':>9}")
    for name, seconds, _ in rows:
        speedup = f"{base / seconds:.1f}x" if base else "-"
        print(f"{name:<28} {seconds:>8.1f} {len(students) / seconds * 60:>16.1f} {speedup:>9}")
    if base:
        ours, theirs = rows[1][2], rows[-1][2]
        differ = {s: (ours.get(s), theirs.get(s)) for s in honest if ours.get(s) != theirs.get(s)}
        print(f"\nhonest submissions with the same grade from both: {len(honest) - len(differ)} of {len(honest)}")
        for student, (mine, nb) in sorted(differ.items()):
            print(f"  {student}: llmcourse {mine}, nbgrader {nb}")
        hostile = {s: (ours.get(s), theirs.get(s)) for s in students if s not in honest}
        print("hostile or broken (llmcourse, nbgrader):",
              "; ".join(f"{s} {a:g}/{b:g}" for s, (a, b) in sorted(hostile.items()) if a is not None and b is not None))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
