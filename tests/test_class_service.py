"""A class in CI, no hub (issue 23): 24 learners submit chapter 02 to `llmcourse grade serve` on 127.0.0.1 through
the real client (llmcourse.submit), around a deadline, while the service dies twice; then the instructor's
status, exports and override, and bad input through the same HTTP path.

The burst (times relative to the due instant, which classroom.toml sets ``LEAD_S`` after the course is ready):

- the service starts armed with ``LLMCOURSE_SERVICE_FAULT=after-store``; the first submission of the burst (r1)
  is stored and the service exits before replying; it is restarted at once without the switch, and the client's
  retry (same submission id) must get the receipt that was stored;
- 5 s before the deadline the 23 other learners submit within a second; 8 learners resubmit twice before it;
- once every on-time submission has its receipt, the service is restarted (SIGTERM, as ``systemctl restart``
  would) armed with ``while-grading``: it exits as it hands the backlog's first receipt to a worker, and is
  restarted at once without the switch;
- 1.5 s after the deadline 4 learners submit late (the service is down or restarting: the client retries);
  one of them has an extension in the roster, so theirs is on time.

Lateness is decided by the service's receive time: the test computes each learner's score independently, from
the stored receipts' times and scores and the rule as the issue states it, and also checks that the schedule
held (the on-time ones at least 1 s before the due instant, the late ones at least 1 s after).
"""

import csv
import hashlib
import importlib.util
import json
import math
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from course_tools import llmcourse
from hostile_submissions import TOTAL, corpus
from llmcourse import submit as client
from service_tools import (A02, FAULT_EXIT, Learner, Service, class_course, free_port, learners, learners_act_apart,
                           raw_request, set_extension, stored, wait_drained)

pytestmark = pytest.mark.xdist_group("class-service")  # one worker runs the class once
ROOT = Path(__file__).resolve().parents[1]
A03 = "03-multi-head-attention"
PENALTY, CAP = 30.0, 25.0  # one started day late costs 30 % of the points possible, capped at 25 %
LEAD_S = 22  # classroom.toml written -> due: the first start, the first death and its restart fit before the wave
GRADED_TARGET_S = 120  # the target: a 24-learner burst fully graded within 2 minutes
CANVAS_HEADER = "Student,ID,SIS User ID,SIS Login ID,Section,Exercises 02: self-attention (4242)"
EXTENDED = "l4"
OVERRIDDEN, OVERRIDE_SCORE, OVERRIDE_REASON = "s02", 12.5, "oral exam on 02 passed; the autograder's 2 replaced"

# learner -> their submissions in order: (phase, corpus notebook). Phases: "opener" (the burst's first submission,
# the one whose reply is lost), "wave" (5 s before the deadline), "second" and "third" (resubmissions before it),
# "late" (1.5 s after it).
PLAN = {
    "r1": [("opener", "wrong"), ("second", "wrong"), ("third", "correct")],
    "r2": [("wave", "correct"), ("second", "correct"), ("third", "wrong")],  # the latest on time counts, not the best
    "r3": [("wave", "another_assignment"), ("second", "wrong"), ("third", "correct")],
    "r4": [("wave", "patch_verdict"), ("second", "correct"), ("third", "patch_passed")],
    "r5": [("wave", "correct"), ("second", "edited_test_cell"), ("third", "deleted_test_cell")],
    "r6": [("wave", "wrong"), ("second", "metadata_claims_points"), ("third", "reads_hidden_checks")],
    "r7": [("wave", "showtraceback"), ("second", "input_transformer"), ("third", "correct")],
    "r8": [("wave", "correct"), ("second", "wrong"), ("third", "patch_check")],
    "l1": [("wave", "wrong"), ("late", "correct")],  # 13 less the capped 25 % beats the on-time 2
    "l2": [("wave", "correct"), ("late", "wrong")],  # the on-time 13 counts
    "l3": [("wave", "sys_exit_in_function"), ("late", "correct")],  # the on-time 11 beats 13 less 25 %
    EXTENDED: [("wave", "correct"), ("late", "wrong")],  # on time by the extension: the latest, 2, counts
    "s01": [("wave", "correct")],
    "s02": [("wave", "wrong")],
    "s03": [("wave", "endless_loop")],
    "s04": [("wave", "too_much_memory")],
    "s05": [("wave", "writes_course_and_gradebook")],
    "s06": [("wave", "network")],
    "s07": [("wave", "prints_100_mb")],
    "s08": [("wave", "os_exit_in_solution_cell")],
    "s09": [("wave", "patch_run_hidden")],
    "s10": [("wave", "another_assignment")],
    "s11": [("wave", "sys_exit_in_solution_cell")],
    "s12": [("wave", "deleted_test_cell")],
}
RECEIPTS = sum(len(steps) for steps in PLAN.values())  # 44
AT = {"wave": -5.0, "second": -3.5, "third": -2.5, "late": 1.5}  # seconds from the due instant, at the earliest


def notebooks(assignment: str):
    read = lambda *parts: nbformat.read(ROOT.joinpath(*parts), as_version=4)  # noqa: E731
    return read("exercises", assignment, f"{assignment}.ipynb"), read("solutions", assignment, f"{assignment}.ipynb")


def settings(due: datetime, extension: datetime) -> str:
    return f"""roster = "roster.csv"

[deadlines."{A02}"]
due = "{due.isoformat()}"
penalty_percent = {PENALTY:g}
cap_percent = {CAP:g}

[service]
hidden_scores = "at-once"
max_upload_mb = 1

[canvas]
roster = "roster.csv"

[canvas.assignments]
"{A02}" = {{ id = 4242, name = "Exercises 02: self-attention" }}
"""


def sleep_until(when: float) -> None:
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 0.2))


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """The class: the course, the service (restarted as it dies), the burst, the queue drained, then the
    instructor's status, exports and an override. The service keeps running for the tests."""
    tmp = tmp_path_factory.mktemp("class")
    course = class_course(tmp, list(PLAN))
    submissions = corpus(*notebooks(A02), *notebooks(A03), course_root=str(course))
    # the due instant in a time zone of its own (+05:30); the extension one day later, written in -07:00
    due = (datetime.now(timezone.utc) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
    due = due.astimezone(timezone(timedelta(hours=5, minutes=30)))
    extension = (due + timedelta(days=1)).astimezone(timezone(timedelta(hours=-7)))
    (course / "classroom.toml").write_text(settings(due, extension))
    set_extension(course, EXTENDED, extension)
    service = Service(course, free_port())
    errors: list[str] = []
    try:
        first = service.start("after-store", "first start, armed to exit after storing the burst's first submission")
        assert first.serving_s is not None, f"the service did not start: see {service.log}"
        with learners_act_apart() as heard:
            people = learners(course, list(PLAN), service.url)
            on_time = {learner: threading.Event() for learner in PLAN}
            due_ts = due.timestamp()

            def act(learner: Learner, index: int) -> None:
                try:
                    for phase, name in PLAN[learner.id]:
                        if phase == "late":
                            on_time[learner.id].set()
                        if phase in AT:
                            sleep_until(due_ts + AT[phase] + (0.04 * index if phase == "wave" else 0))
                        sent = learner.submit(submissions[name][0], f"{phase}:{name}")
                        if sent.receipt is None:
                            errors.append(f"{learner.id} {phase}:{name}: {sent.error}")
                except Exception as err:  # noqa: BLE001 (reported by the tests)
                    errors.append(f"{learner.id}: {type(err).__name__}: {err}")
                finally:
                    on_time[learner.id].set()

            threads = [threading.Thread(target=act, args=(people[learner], i), name=learner)
                       for i, learner in enumerate(PLAN)]
            for thread in threads:
                thread.start()
            for event in on_time.values():
                event.wait(timeout=due_ts + 60 - time.time())
            on_time_done = time.time()
            service.restart("while-grading", "planned restart (SIGTERM), armed to exit while grading")
            for thread in threads:
                thread.join(timeout=max(due_ts + 90 - time.time(), 1))
            burst_done = time.time()
            service.wait_stable()
            receipts = sum(1 for learner in people.values() for sent in learner.sent if sent.receipt)
            drained = wait_drained(course, receipts, timeout=max(due_ts - 5 + 240 - time.time(), 1))

            # the instructor: status, the exports, an override with its reason
            status = llmcourse(course, "status", "02").stdout
            llmcourse(course, "export", "--out", "grades.csv")
            llmcourse(course, "export", "--format", "canvas", "--out", "canvas.csv")
            llmcourse(course, "override", "02", OVERRIDDEN, f"{OVERRIDE_SCORE:g}", "--reason", OVERRIDE_REASON)
            llmcourse(course, "export", "--out", "after-override.csv")
            status_after = llmcourse(course, "status", "02").stdout
            # every learner reads their feedback (`llmcourse feedback 02`) and each of their receipts
            printed = {}
            for learner in people.values():
                with learner.acting():
                    lines = []
                    client.feedback("02", out=lines.append)
                    printed[learner.id] = lines
                for sent in learner.sent:
                    if sent.receipt:
                        learner.request("GET", f"receipts/{sent.receipt['receipt']}")
            yield {"course": course, "service": service, "learners": people, "heard": list(heard), "errors": errors,
                   "sent": [sent for learner in people.values() for sent in learner.sent],
                   "submissions": submissions, "due": due, "extension": extension, "status": status,
                   "status_after": status_after, "printed": printed, "on_time_done": on_time_done,
                   "burst_done": burst_done, "drained": drained, "first": first}
    finally:
        service.stop()


# ---------------------------------------------------------------- helpers

def sent_of(klass) -> list:
    """The burst's submissions (the refusal tests add their own to the learners)."""
    return klass["sent"]


def rows_by_id(klass) -> dict[str, dict]:
    return {row["id"]: row for row in stored(klass["course"])[1]}


def received(row: dict) -> datetime:
    return datetime.fromisoformat(row["received_at"])


def days_late(when: datetime, due: datetime) -> int:
    """The issue's rule: at the due instant on time; after it, each started 24 h is a day late."""
    late = (when - due).total_seconds()
    return 0 if late <= 0 else math.ceil(late / 86400)


def counted_by_the_rule(receipts: list[dict], due: datetime) -> tuple[str, float] | None:
    """(receipt, score) that counts, from receipts (their server time and score) as the issue states the rule: the
    best of the latest on-time submission's score and each late one's score less p % of the points possible per
    started day, at most c %, floored at 0; on a tie the on-time one; no submission, no score."""
    on_time = [r for r in receipts if days_late(received(r), due) == 0]
    best = None
    if on_time:
        latest = max(on_time, key=received)
        best = (latest["id"], latest["earned"])
    for r in sorted((r for r in receipts if days_late(received(r), due) > 0), key=received):
        deduction = min(days_late(received(r), due) * PENALTY, CAP) / 100 * TOTAL
        score = max(r["earned"] - deduction, 0.0)
        if best is None or score > best[1]:
            best = (r["id"], score)
    return best


def due_of(klass, learner: str) -> datetime:
    return klass["extension"] if learner == EXTENDED else klass["due"]


def texts(body) -> str:
    """Every string in a JSON body, and the body as JSON."""
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body)
    return json.dumps(body) + "\n" + "\n".join(found)


def nothing_stored(course: Path, before) -> None:
    files, rows = stored(course)
    assert files == before[0], f"files appeared: {sorted(files - before[0])}"
    assert len(rows) == len(before[1]), "a receipt row appeared"


# ---------------------------------------------------------------- the burst

def test_the_burst_went_as_planned_around_the_deadline(klass):
    """Every submission has its 2xx receipt; each learner submitted within 5 s of the deadline; the on-time ones
    arrived at least 1 s before it and the late ones at least 1 s after it (the extension's are on time)."""
    assert not klass["errors"], "\n".join(klass["errors"])
    sent = sent_of(klass)
    assert len(sent) == RECEIPTS and all(s.receipt for s in sent)
    due = klass["due"].timestamp()
    for learner in PLAN:
        assert any(abs(s.started - due) <= 5 for s in sent if s.learner == learner), f"{learner} submitted too early"
    rows = rows_by_id(klass)
    for s in sent:
        at = received(rows[s.receipt["receipt"]]).timestamp()
        if s.label.startswith("late:"):
            assert at >= due + 1, f"{s.learner}'s late submission arrived {at - due:+.2f} s from the deadline"
            assert s.receipt["days_late"] == (0 if s.learner == EXTENDED else 1), s.receipt
        else:
            assert at <= due - 1, (f"{s.learner}'s {s.label} arrived {at - due:+.2f} s from the deadline: the "
                                   f"machine was too slow for the schedule (restarts: {klass['service'].runs})")
            assert s.receipt["days_late"] == 0
    wave = [s for s in sent if s.label.startswith("wave:")]
    assert max(s.started for s in wave) - min(s.started for s in wave) < 1.5


def test_the_service_died_twice_and_served_again_after_each_restart(klass):
    service = klass["service"]
    runs = service.runs
    assert [(r.fault, r.code) for r in runs[:4]] == [("after-store", FAULT_EXIT), (None, -15),
                                                       ("while-grading", FAULT_EXIT), (None, None)], runs
    assert runs[1].why.startswith("restart after after-store") and runs[3].why.startswith("restart after while-grading")
    assert len(runs) == 4 and runs[3].proc.poll() is None
    assert service.said("fault injection: exiting at after-store")
    assert service.said("fault injection: exiting at while-grading")
    assert service.said("interrupted gradings queued again"), "the restart did not requeue the interrupted grading"
    for died, restarted in ((runs[0], runs[1]), (runs[2], runs[3])):
        again = restarted.started + restarted.serving_s - died.ended
        print(f"{died.fault}: died, served again {again:.1f} s later ({restarted.serving_s:.1f} s from the restart "
              f"to GET /health)")
        assert again < 30, f"serving again took {again:.1f} s (target 10 s)"


def test_a_crashed_service_leaves_no_grading_worker_behind(klass):
    runs = klass["service"].runs
    assert all(not run.left_behind for run in runs[:3]), [(run.fault, run.left_behind) for run in runs]


def test_every_receipt_matches_a_stored_file_byte_for_byte(klass):
    course = klass["course"]
    rows = rows_by_id(klass)
    for s in sent_of(klass):
        receipt = s.receipt
        row = rows[receipt["receipt"]]
        path = course / "service" / row["path"]
        assert path == course / "service" / "submissions" / A02 / s.learner / f"{receipt['receipt']}.ipynb"
        assert path.read_bytes() == s.data, f"{s.learner} {s.label}: the stored file differs from the one sent"
        assert receipt["sha256"] == hashlib.sha256(s.data).hexdigest() == row["sha256"]
        assert (receipt["learner"], receipt["bytes"], receipt["received_at"]) == (s.learner, len(s.data),
                                                                                   row["received_at"])


def test_each_receipt_has_exactly_one_result_and_a_lost_reply_made_one_receipt(klass):
    course, service = klass["course"], klass["service"]
    files, rows = stored(course)
    sent = sent_of(klass)
    assert sorted(r["id"] for r in rows) == sorted(s.receipt["receipt"] for s in sent), "one row per receipt"
    assert files == {r["path"] for r in rows}, "a file without its receipt, or a receipt without its file"
    by_id = {r["id"]: r for r in rows}
    for s in sent:
        row = by_id[s.receipt["receipt"]]
        name = s.label.split(":", 1)[1]
        expect = klass["submissions"][name][1]
        assert row["state"] == ("graded" if expect.status == "graded" else "failed"), (s.learner, s.label, row)
        assert row["result"] and row["earned"] == expect.score, (s.learner, s.label, row["earned"], row["why"])
        if row["state"] == "failed":
            assert row["why"] and expect.note in row["why"], row["why"]
    # the first submission of the burst was stored by the first start, which died before replying: the client's
    # retry got that receipt from the restarted service, and no second one was made
    opener = klass["learners"]["r1"].sent[0]
    first, second = service.runs[0], service.runs[1]
    assert received(by_id[opener.receipt["receipt"]]).timestamp() < first.ended <= second.started
    assert opener.started + opener.seconds >= second.started + second.serving_s
    assert sum(1 for r in rows if r["learner"] == "r1") == 3
    # grading interrupted by the crashes was redone, and still recorded once
    assert any(r["attempts"] > 1 for r in rows), "no grading was interrupted"


def test_the_exported_scores_follow_the_deadline_rule(klass):
    course = klass["course"]
    rows = stored(course)[1]
    with open(course / "grades.csv", newline="") as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 24 and {row["student_id"] for row in exported} == set(PLAN)
    expected = {}
    for learner in PLAN:
        theirs = [r for r in rows if r["learner"] == learner]
        expected[learner] = counted_by_the_rule(theirs, due_of(klass, learner))
    by_id = {r["id"]: r for r in rows}
    for row in exported:
        learner = row["student_id"]
        receipt, score = expected[learner]
        assert float(row["score"]) == pytest.approx(score), (learner, row["score"], score, row["status"])
        assert row["status"].startswith(f"graded: receipt {receipt}"), (learner, row["status"], receipt)
        # nbgrader's gradebook holds the submission that counts (its file in submitted/, its result recorded)
        record = json.loads((course / "autograded" / learner / A02 / "grading.json").read_text())
        assert record["submission_sha256"] == by_id[receipt]["sha256"], f"{learner}: the gradebook has another one"
        assert (course / "submitted" / learner / A02 / f"{A02}.ipynb").read_bytes() == \
            (course / "service" / by_id[receipt]["path"]).read_bytes()
    # what the plan says the rule gives, spelled out
    assert {learner: expected[learner][1] for learner in ("r1", "r2", "l1", "l2", "l3", EXTENDED)} == {
        "r1": 13, "r2": 2, "l1": 13 * (1 - CAP / 100), "l2": 13, "l3": 11, EXTENDED: 2}
    assert "1 day late" in next(r for r in exported if r["student_id"] == "l1")["status"]
    lines = (course / "canvas.csv").read_text().splitlines()
    assert lines[0] == CANVAS_HEADER and len(lines) == 25
    canvas = {row["SIS Login ID"].split("@")[0]: row for row in csv.DictReader(lines)}
    assert set(canvas) == set(PLAN)
    for learner, (_, score) in expected.items():
        assert float(canvas[learner]["Exercises 02: self-attention (4242)"]) == pytest.approx(score), learner


def test_status_shows_the_counts(klass):
    rows = stored(klass["course"])[1]
    graded = sum(r["state"] == "graded" for r in rows)
    failed = sum(r["state"] == "failed" for r in rows)
    late = sum(days_late(received(r), due_of(klass, r["learner"])) > 0 for r in rows)
    failing = sum(name == "another_assignment" for steps in PLAN.values() for _, name in steps)
    assert (graded, failed, late) == (RECEIPTS - failing, failing, 3)
    head = klass["status"].splitlines()[0]
    assert head == f"{A02}: {RECEIPTS} received from 24 learners; {graded} graded, {failed} failed; {late} late", head
    assert re.search(r"^l1 +2 receipts, counts: 9\.75 from r-\S+, 1 d late$", klass["status"], re.M)
    assert re.search(r"^ +r-\S+ failed: this is not a notebook of this assignment", klass["status"], re.M)


def test_an_override_with_its_reason_changes_the_export_and_shows(klass):
    course = klass["course"]

    def scores(name):
        with open(course / name, newline="") as f:
            return {row["student_id"]: row for row in csv.DictReader(f)}

    before, after = scores("grades.csv"), scores("after-override.csv")
    assert float(before[OVERRIDDEN]["score"]) == 2 and float(after[OVERRIDDEN]["score"]) == OVERRIDE_SCORE
    assert after[OVERRIDDEN]["status"].startswith(f"overridden: {OVERRIDE_REASON}")
    assert {k: v["score"] for k, v in before.items() if k != OVERRIDDEN} == \
        {k: v["score"] for k, v in after.items() if k != OVERRIDDEN}
    assert f"counts: override {OVERRIDE_SCORE:g} ({OVERRIDE_REASON})" in klass["status_after"]


def hidden_case_traces(course: Path) -> tuple[list[str], list[re.Pattern]]:
    """What would give a hidden case away: its description, the repr of each of its inputs, the first two
    numbers of each float input as torch prints them, and the hidden checks' own code."""
    import torch

    spec = importlib.util.spec_from_file_location("_hidden_02", course / "solutions" / A02 / "hidden_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    needles, patterns = ["CASES = {", "_gen(", "softmax_cases"], []
    for make in module.CASES.values():
        for case in make():
            if len(case.label) >= 8:  # "n = 2" would match unrelated text
                needles.append(case.label)
            for value in [*case.args, *case.kwargs.values()]:
                if isinstance(value, torch.Tensor):
                    needles.append(repr(value))
                    flat = value.flatten().tolist()
                    if value.is_floating_point() and len(flat) > 1:
                        patterns.append(re.compile(rf"{re.escape(f'{flat[0]:.4f}')},\s*{re.escape(f'{flat[1]:.4f}')}"))
    return needles, patterns


def test_no_response_a_learner_received_holds_a_hidden_case(klass):
    needles, patterns = hidden_case_traces(klass["course"])
    assert len(needles) > 20 and len(patterns) > 10
    heard = [h for h in klass["heard"] if h.body is not None]
    assert len(heard) >= RECEIPTS * 2 + 24, len(heard)
    for h in heard:
        text = texts(h.body)
        for needle in needles:
            assert needle not in text, f"{h.learner} {h.method} {h.path}: a hidden case shows: {needle[:80]!r}"
        for pattern in patterns:
            assert not pattern.search(text), f"{h.learner} {h.method} {h.path}: hidden inputs show ({pattern.pattern})"
    # the hidden cells' results did reach the learners, as counts and named mistakes
    wrong = "\n".join(klass["printed"]["s02"])
    assert "hidden test cases" in wrong and "Likely mistake" in wrong, wrong


# ---------------------------------------------------------------- refusals, through the running service

def test_a_learner_cannot_submit_as_another_nor_read_anothers_receipt(klass):
    course, people = klass["course"], klass["learners"]
    me, other = people["r2"], people["s01"]
    theirs = other.sent[0].receipt["receipt"]
    data = klass["submissions"]["correct"][0]
    before = stored(course)
    for method, path, headers in (("POST", "submissions/02?student=s01", None),
                                  ("POST", "submissions/02", {"X-Student": "s01"}),
                                  ("GET", "feedback/02?learner=s01", None)):
        status, body = me.request(method, path, data if method == "POST" else None, headers)
        assert status == 403 and "you are r2: a request cannot name another learner" in body["error"], body
    status, body = me.request("GET", f"receipts/{theirs}")
    assert status == 403 and f"receipt {theirs} is not yours" in body["error"]
    assert "earned" not in body and "cells" not in body
    nothing_stored(course, before)


@pytest.mark.parametrize("case", ["unknown assignment", "does not parse", "empty file", "over the size limit"])
def test_bad_input_is_refused_with_a_clear_error_and_nothing_is_stored(klass, case):
    course, learner = klass["course"], klass["learners"]["s01"]
    correct = klass["submissions"]["correct"][0]
    if case == "over the size limit":  # a notebook with 8 MB of output: the limit is 1 MB (classroom.toml)
        notebook = json.loads(correct)
        cell = next(c for c in notebook["cells"] if c["cell_type"] == "code")
        cell["outputs"].append({"output_type": "stream", "name": "stdout", "text": "x" * (8 * 2**20)})
        correct = json.dumps(notebook).encode()
    data, assignment, status, message = {
        "unknown assignment": (correct, "07", 404, f"no assignment '07' is open for submissions; open: {A02}"),
        "does not parse": (klass["submissions"]["not_json"][0], "02", 400,
                           "nothing was stored: the notebook does not parse (not valid JSON"),
        "empty file": (klass["submissions"]["empty_file"][0], "02", 400, "nothing was stored: the file is empty"),
        "over the size limit": (correct, "02", 413, "nothing was stored: the notebook is 8.0 MB, over the limit of 1 MB"),
    }[case]
    before = stored(course)
    sent = learner.submit(data, case, assignment)
    assert sent.receipt is None and message in sent.error, sent.error
    assert sent.seconds < 10, f"the learner waited {sent.seconds:.1f} s for the refusal"
    got, body = learner.request("POST", f"submissions/{assignment}", data)
    assert got == status and message in body["error"], (got, body)
    nothing_stored(course, before)


def test_a_missing_wrong_or_revoked_token_is_refused_and_nothing_is_stored(klass):
    course, service = klass["course"], klass["service"]
    data = klass["submissions"]["correct"][0]
    before = stored(course)
    status, body = raw_request(service.url, "POST", "submissions/02", data)  # no Authorization header at all
    assert status == 401 and body["error"].startswith("no token"), body
    home = course.parent / "learners" / "nobody"
    nobody = Learner("nobody", home, service.url, home / "missing-token")
    sent = nobody.submit(data, "no token file")
    assert sent.receipt is None and "no token file at" in sent.error, sent.error
    nobody.token_file.parent.mkdir(parents=True, exist_ok=True)
    nobody.token_file.write_text("llmc_" + "x" * 43 + "\n")
    sent = nobody.submit(data, "wrong token")
    assert sent.receipt is None and "this token is not valid" in sent.error, sent.error
    revoked = klass["learners"]["s12"]
    assert revoked.request("GET", "feedback/02")[0] == 200
    llmcourse(course, "tokens", "revoke", "s12")
    sent = revoked.submit(data, "revoked token")
    assert sent.receipt is None and "this token is not valid (wrong, revoked or expired)" in sent.error, sent.error
    assert revoked.request("GET", "feedback/02")[0] == 401
    nothing_stored(course, before)


# ---------------------------------------------------------------- time

def test_the_burst_is_fully_graded_within_two_minutes(klass):
    """The 24 learners' burst (from the wave 5 s before the deadline: the first death and its restart come
    before it) graded to its last receipt, the restart while grading and the late ones included."""
    service = klass["service"]
    wave = klass["due"].timestamp() - 5
    seconds = klass["drained"] - wave
    wave = sorted(s.seconds for s in sent_of(klass) if s.label.startswith("wave:"))
    latencies = sorted(h.seconds for h in klass["heard"] if h.method == "POST" and h.status == 202)
    restarts = [run.serving_s for run in service.runs[1:] if run.serving_s is not None]
    print(f"\nburst graded {seconds:.1f} s after the wave ({klass['drained'] - klass['first'].started:.1f} s after "
          f"the first start); the wave's 23 receipts (sent within 1 s): p50 {wave[len(wave) // 2]:.2f} s, max "
          f"{wave[-1]:.2f} s; all {len(latencies)} receipts: p50 {latencies[len(latencies) // 2]:.2f} s, max "
          f"{latencies[-1]:.2f} s (retries through restarts included); restarts to GET /health: "
          f"{', '.join(f'{s:.1f} s' for s in restarts)}")
    assert seconds <= GRADED_TARGET_S * 1.25, f"the burst took {seconds:.0f} s to grade (target 2 minutes)"


# ---------------------------------------------------------------- last: it crashes the service once more

def test_a_crash_between_a_result_and_its_gradebook_copy_is_caught_up_at_the_restart(klass):
    """The service records a result in its store, prints it, then copies the submission that counts into nbgrader's
    gradebook, which the exports list: killed in between, the learner's copy must be made at the next start."""
    course, service, learner = klass["course"], klass["service"], klass["learners"][EXTENDED]
    record = course / "autograded" / EXTENDED / A02 / "grading.json"

    def gradebook_sha():
        return json.loads(record.read_text())["submission_sha256"]

    interrupted = None
    for attempt in range(3):  # the copy takes about 0.1 s: the kill lands in it nearly always
        service.wait_stable()
        runs = len(service.runs)
        data = klass["submissions"]["correct"][0] + b"\n" * (attempt + 1)  # on time (extension): it will count
        sha = hashlib.sha256(data).hexdigest()
        service.kill_when(f": {EXTENDED} {A02}, ")  # "graded r-...: l4 02-self-attention, 13 points, graded"
        sent = learner.submit(data, f"crash:{attempt}")
        assert sent.receipt, sent.error
        give_up = time.monotonic() + 60
        while service.runs[runs - 1].ended is None and time.monotonic() < give_up:
            time.sleep(0.005)
        assert service.runs[runs - 1].ended, "the service did not grade the submission"
        if gradebook_sha() != sha:
            interrupted = sent.receipt["receipt"]
            break
    assert interrupted, "three kills all came after the gradebook's copy"
    service.wait_stable()
    caught_up = f"gradebook: {EXTENDED}'s counted {A02} ({interrupted}) copied in"
    give_up = time.monotonic() + 30  # the record is written just before the line is printed: wait for both
    while not (gradebook_sha() == sha and service.said(caught_up)) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert gradebook_sha() == sha, "the restarted service did not copy the counted submission into the gradebook"
    assert service.said(caught_up)
    llmcourse(course, "export", "--out", "after-crash.csv")
    with open(course / "after-crash.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["student_id"] == EXTENDED)
    assert row["status"].startswith(f"graded: receipt {interrupted}") and float(row["score"]) == TOTAL, row
