"""The grading service under a class's load: `llmcourse grade serve` (2 workers) on 127.0.0.1, learners submitting
chapter 02 through the real client (llmcourse.submit), each from a thread with their own token file.

    python benchmarks/grading_service.py [--learners 100] [--cell-timeout 10] [--seed 2]

On one course (02 released, a roster of the learners, tokens from `llmcourse grade tokens issue`), in turn:

1. the service starts: seconds to GET /health;
2. an idle queue: 5 learners, one after another, `llmcourse submit 02 --wait` (the client polls every 0.5 s):
   seconds from submit to the grade printed;
3. a 24-learner burst: 24 learners submit within 5 s; seconds from the first submission to the last result;
4. restarts: the service is killed (SIGKILL) 3 times; seconds from the kill to serving again (GET /health);
5. the class: every learner submits twice (the first within 10 s, the second 20 to 30 s later): graded
   submissions per minute, the receipt's latency (the POST, as the client sees it) and submit to feedback (from the
   client's submit to the result recorded, as the service's log stamps it: a learner polling sees it then).

Honest notebooks only (the reference answers, and the common mistakes of benchmarks/grading.py): each learner's
first submission has a mistake 40 % of the time, the second is right. Prints a table with the issue's targets.
"""

import argparse
import math
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from grading import A02, WRONG_ANSWERS, notebooks  # noqa: E402  (benchmarks/grading.py)
from hostile_submissions import filled, reference_answers  # noqa: E402
from service_tools import Service, class_course, free_port, learners, learners_act_apart  # noqa: E402

GRADED = re.compile(r"graded (r-\S+):")


def honest_notebooks() -> tuple[bytes, list[bytes]]:
    """(the reference answers, [one notebook per common mistake])."""
    release, source = notebooks(A02)
    ref = reference_answers(source)
    return filled(release, ref), [filled(release, {**ref, grade_id: code}) for grade_id, code in WRONG_ANSWERS.values()]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def graded_at(service: Service) -> dict[str, float]:
    """receipt -> when the service printed its result (its first: a receipt regraded after a crash prints again)."""
    found = {}
    for when, line in list(service.lines):
        match = GRADED.search(line)
        if match and match.group(1) not in found:
            found[match.group(1)] = when
    return found


def wait_graded(service: Service, receipts: list[str], timeout: float) -> float:
    """Wait until every receipt has its result; returns the time the last one was printed."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        done = graded_at(service)
        if all(r in done for r in receipts):
            return max(done[r] for r in receipts)
        time.sleep(0.2)
    raise RuntimeError(f"not every receipt graded within {timeout:g} s")


def burst(people: list, schedule: list[tuple[int, float, bytes]]) -> list:
    """Each learner's submissions at their times (seconds from now), one thread per learner; returns every Sent."""
    start = time.time()
    by_learner: dict[int, list] = {}
    for who, at, data in schedule:
        by_learner.setdefault(who, []).append((at, data))

    def act(learner, steps):
        for at, data in sorted(steps, key=lambda s: s[0]):
            while (left := start + at - time.time()) > 0:
                time.sleep(min(left, 0.2))
            learner.submit(data)

    threads = [threading.Thread(target=act, args=(people[who], steps)) for who, steps in by_learner.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = [s for who in by_learner for s in people[who].sent if s.started >= start]
    failed = [s for s in sent if s.receipt is None]
    if failed:
        raise RuntimeError(f"{len(failed)} submissions refused: {failed[0].error}")
    return sent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=100)
    parser.add_argument("--cell-timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    correct, mistakes = honest_notebooks()
    ids = [f"learner{i:03d}" for i in range(args.learners)]
    rows = []  # (figure, value (a median where there are several), spread, target, met)
    with tempfile.TemporaryDirectory(prefix="grading-service-bench-") as tmp:
        course = class_course(Path(tmp), ids)
        service = Service(course, free_port(), ("--workers", "2", "--cell-timeout", f"{args.cell_timeout:g}"))
        try:
            run = service.start(why="first start")
            rows.append(("service start to GET /health", f"{run.serving_s:.1f} s", "", "", ""))
            with learners_act_apart() as heard:
                people = list(learners(course, ids, service.url).values())

                # an idle queue: `llmcourse submit 02 --wait`, one learner after another
                idle = []
                for i in range(5):
                    sent = people[i].submit(correct if i % 2 == 0 else mistakes[i % len(mistakes)], wait=True)
                    idle.append(sent.seconds)
                print(f"idle queue, submit --wait: {', '.join(f'{s:.1f}' for s in idle)} s", flush=True)
                rows.append(("feedback on an idle queue (submit --wait, 5 runs)", f"{statistics.median(idle):.1f} s",
                             f"max {max(idle):.1f} s", "< 10 s", "yes" if max(idle) < 10 else "NO"))

                # a 24-learner burst within 5 s
                schedule = [(i, rng.uniform(0, 5), correct if rng.random() < 0.6 else rng.choice(mistakes))
                            for i in range(5, 29)]
                sent = burst(people, schedule)
                last = wait_graded(service, [s.receipt["receipt"] for s in sent], timeout=600)
                seconds = last - min(s.started for s in sent)
                print(f"24-learner burst graded in {seconds:.1f} s", flush=True)
                rows.append(("24-learner burst fully graded", f"{seconds:.1f} s", "", "< 120 s",
                             "yes" if seconds < 120 else "NO"))

                # restarts: killed, restarted by the supervisor, serving again
                again = []
                for _ in range(3):
                    killed = service.kill()
                    while killed.ended is None:
                        time.sleep(0.01)
                    restarted = service.wait_stable()
                    again.append(restarted.started + restarted.serving_s - killed.ended)
                print(f"serving again after a kill: {', '.join(f'{s:.1f}' for s in again)} s", flush=True)
                rows.append(("serving again after a restart (3 kills)", f"{statistics.median(again):.1f} s",
                             f"max {max(again):.1f} s", "< 10 s", "yes" if max(again) < 10 else "NO"))

                # the class: every learner twice
                heard.clear()
                schedule = []
                for i in range(len(people)):
                    first = rng.uniform(0, 10)
                    schedule.append((i, first, correct if rng.random() < 0.6 else rng.choice(mistakes)))
                    schedule.append((i, first + rng.uniform(20, 30), correct))
                start = time.time()
                sent = burst(people, schedule)
                receipts = [s.receipt["receipt"] for s in sent]
                last = wait_graded(service, receipts, timeout=3600)
                done = graded_at(service)
                to_feedback = [done[s.receipt["receipt"]] - s.started for s in sent]
                posts = [h.seconds for h in heard if h.method == "POST" and h.status == 202]
                per_minute = len(sent) / (last - start) * 60
                print(f"{len(sent)} submissions graded in {last - start:.1f} s", flush=True)
                label = f"{len(people)} learners x 2"
                rows.append((f"{label}: graded submissions per minute", f"{per_minute:.1f}",
                             f"{len(sent)} in {last - start:.0f} s", "", ""))
                rows.append((f"{label}: receipt latency p50 / p95", f"{percentile(posts, 50):.2f} s",
                             f"p95 {percentile(posts, 95):.2f} s", "p95 < 1 s",
                             "yes" if percentile(posts, 95) < 1 else "NO"))
                rows.append((f"{label}: submit to feedback p50 / p95", f"{percentile(to_feedback, 50):.0f} s",
                             f"p95 {percentile(to_feedback, 95):.0f} s", "", ""))
        finally:
            service.stop()
    print(f"\n{'figure':<58} {'value':>8} {'spread':>16} {'target':>10} {'met':>4}")
    for figure, value, spread, target, met in rows:
        print(f"{figure:<58} {value:>8} {spread:>16} {target:>10} {met:>4}")
    return 0 if all(met != "NO" for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
