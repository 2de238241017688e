"""The grading service's parts, without grading (grader/classroom/service.py, store.py, tokens.py, settings.py):
who a request comes from (roster tokens, the hub's API), what is refused and that nothing is stored half, the
store's receipts and queue across a crash, what a learner may see, TLS. The whole class, graded, with crashes:
tests/test_class_service.py; on a real JupyterHub: tests/test_jupyterhub.py.
"""

import json
import os
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import course_tools
import nbformat
import pytest
from hostile_submissions import filled, reference_answers

from grader.classroom import tokens
from grader.classroom.course import Course, CourseError
from grader.classroom.service import GradingService, HubIdentity, Refused, feedback_view, make_server
from grader.classroom.settings import Settings, SettingsError
from grader.classroom.store import Store

pytestmark = pytest.mark.xdist_group("service")
A02 = "02-self-attention"
ROSTER = "student_id,Student,ID,SIS User ID,SIS Login ID,Section\nalice,Alice A,1,s1,alice,A\nbob,Bob B,2,s2,bob,A\n"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A course with 02 released (the service's tests copy it: each gets its own store and roster)."""
    course = course_tools.new_course(tmp_path_factory.mktemp("service"), [A02])
    course_tools.llmcourse(course, "release", "02")
    return course


def class_course(released: Path, tmp: Path, toml: str = "") -> Path:
    import shutil

    course = Path(shutil.copytree(released, tmp / "course"))
    (course / "roster.csv").write_text(ROSTER)
    (course / "classroom.toml").write_text('roster = "roster.csv"\n' + toml)
    return course


def notebook(course: Path, correct: bool = True) -> bytes:
    release = nbformat.read(course / "exercises" / A02 / f"{A02}.ipynb", as_version=4)
    source = nbformat.read(course / "solutions" / A02 / f"{A02}.ipynb", as_version=4)
    return filled(release, reference_answers(source) if correct else {})


@pytest.fixture
def running(released, tmp_path):
    """The service's HTTP side on a free port (no grading workers: what is tested here is refused or stored)."""
    course = class_course(released, tmp_path, "[service]\nmax_upload_mb = 0.1\ndaily_limit = 3\n")
    issued = tokens.issue(Settings.load(course), [], tmp_path / "tokens", replace=False)
    service = GradingService(Course(course))
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"course": course, "service": service, "url": f"http://127.0.0.1:{server.server_address[1]}/",
           "token": {name: path.read_text().strip() for name, path in issued.items()}}
    server.shutdown()
    server.server_close()


def call(url: str, method: str = "GET", data: bytes | None = None, token: str | None = None, **headers):
    if token:
        headers["Authorization"] = f"token {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers)) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def stored(course: Path) -> tuple[list[str], int]:
    files = sorted(str(p.relative_to(course)) for p in (course / "service" / "submissions").rglob("*") if p.is_file())
    return files, len(Store(course).receipts())


# ---------------------------------------------------------------- tokens and the roster

def test_tokens_are_shown_once_and_the_roster_keeps_only_their_hashes(released, tmp_path):
    course = class_course(released, tmp_path)
    settings = Settings.load(course)
    issued = tokens.issue(settings, [], tmp_path / "t", replace=False)
    assert set(issued) == {"alice", "bob"}
    token = issued["alice"].read_text().strip()
    assert stat.S_IMODE(issued["alice"].stat().st_mode) == 0o600
    roster = (course / "roster.csv").read_text()
    assert token not in roster and tokens.token_hash(token) in roster
    assert roster.startswith("student_id,Student,ID,SIS User ID,SIS Login ID,Section,token_sha256\n")
    assert tokens.learner_for_token(settings.roster(), token) == "alice"
    assert tokens.issue(settings, [], tmp_path / "t", replace=False) == {}  # everyone has one: nothing changes
    rotated = tokens.issue(settings, ["alice"], tmp_path / "t", replace=True)["alice"].read_text().strip()
    assert tokens.learner_for_token(settings.roster(), token) is None
    assert tokens.learner_for_token(settings.roster(), rotated) == "alice"
    tokens.revoke(settings, ["alice"])
    assert tokens.learner_for_token(settings.roster(), rotated) is None
    with pytest.raises(SettingsError, match="not in the roster .*: carol"):
        tokens.issue(settings, ["carol"], tmp_path / "t", replace=False)


@pytest.mark.parametrize("toml, message", [
    ('[deadlines."02-self-attention"]\ndue = "2026-12-18T23:59:00"\n', "with its time zone"),
    ('[deadlines."02-self-attention"]\npenalty_percent = 10\n', "needs due ="),
    ('[deadlines."02-self-attention"]\ndue = "2026-12-18T23:59:00Z"\ncap_percent = 150\n', "from 0 to 100"),
    ('[service]\nhidden_scores = "never"\n', "write one of at-once, after-deadline"),
    ("[service\n", "does not parse"),
])
def test_classroom_settings_that_cannot_be_used_say_what_to_write(released, tmp_path, toml, message):
    course = class_course(released, tmp_path, toml)
    with pytest.raises(SettingsError, match=message):
        Settings.load(course)


def test_an_extension_is_the_learners_own_due_instant(released, tmp_path):
    course = class_course(released, tmp_path, '[deadlines."02-self-attention"]\ndue = "2026-12-18T23:59:00+01:00"\n'
                                              'penalty_percent = 10\ncap_percent = 30\n')
    rows = Settings.load(course).roster()
    rows[1]["extension 02-self-attention"] = "2026-12-21T12:00:00-05:00"
    Settings.load(course).write_roster(rows)
    settings = Settings.load(course)
    assert settings.deadline_for(A02, "alice").due == datetime(2026, 12, 18, 22, 59, tzinfo=timezone.utc)
    assert settings.deadline_for(A02, "bob").due == datetime(2026, 12, 21, 17, 0, tzinfo=timezone.utc)
    assert settings.deadline_for(A02, "bob").cap_percent == 30


# ---------------------------------------------------------------- the store

def test_a_receipt_is_its_file_and_its_row_and_a_retry_gets_the_same_receipt(released, tmp_path):
    store = Store(class_course(released, tmp_path))
    data = b'{"cells": []}'
    receipt, new = store.receive("alice", A02, data, "sha", "client-1")
    assert new and store.data(receipt) == data and receipt.state == "queued"
    again, new = store.receive("alice", A02, b"other", "sha2", "client-1")
    assert not new and again.id == receipt.id and len(store.receipts()) == 1


def test_a_crash_while_grading_is_redone_and_each_receipt_keeps_one_result(released, tmp_path):
    course = class_course(released, tmp_path)
    store = Store(course)
    first, _ = store.receive("alice", A02, b"1", "a", None)
    second, _ = store.receive("bob", A02, b"2", "b", None)
    assert [r.id for r in store.claim(5)] == [first.id, second.id]
    orphan = store.root / "submissions" / A02 / "bob" / "r-never-acknowledged.ipynb"
    orphan.write_bytes(b"3")  # the service died between the file and its row
    assert store.recover() == (2, 1) and not orphan.exists()  # as after a restart
    assert {r.state for r in store.receipts()} == {"queued"}
    claimed = store.claim(1)[0]
    result = {"status": "graded", "notes": [], "cells": {"check_softmax": {"earned": 2.0, "possible": 2.0}}}
    assert store.finish(claimed.id, result, "fp") is True
    assert store.finish(claimed.id, result, "fp") is False  # a second result for it is refused
    assert store.receipt(claimed.id).state == "graded" and store.receipt(claimed.id).attempts == 2
    assert store.requeue(A02) == 1 and store.receipt(claimed.id).state == "queued"


def test_a_grader_failure_is_tried_again_then_left_for_the_instructor(released, tmp_path):
    store = Store(class_course(released, tmp_path))
    receipt, _ = store.receive("alice", A02, b"1", "a", None)
    for attempt in range(1, 4):
        assert store.claim(1)[0].attempts == attempt
        store.finish(receipt.id, None, "", "the grader failed (BrokenProcessPool)")
    assert store.receipt(receipt.id).state == "error" and store.claim(1) == []
    assert "BrokenProcessPool" in store.receipt(receipt.id).why and store.requeue(A02) == 1


# ---------------------------------------------------------------- requests refused, nothing stored

def test_bad_requests_get_a_clear_error_and_store_nothing(running):
    url, token, course = running["url"], running["token"], running["course"]
    good = notebook(course)
    refusals = [
        (call(url + "submissions/02", "POST", good), 401, "no token"),
        (call(url + "submissions/02", "POST", good, token="llmc_wrong"), 401, "not valid"),
        (call(url + "submissions/99", "POST", good, token=token["alice"]), 404, "open: 02-self-attention"),
        (call(url + "submissions/02", "POST", b"{not json", token=token["alice"]), 400, "does not parse"),
        (call(url + "submissions/02", "POST", b"", token=token["alice"]), 400, "the file is empty"),
        (call(url + "submissions/02", "POST", good + b" " * 120_000, token=token["alice"]), 413,
         "over the limit of 0.1 MB"),
        (call(url + "submissions/02?student=bob", "POST", good, token=token["alice"]), 403, "you are alice"),
        (call(url + "submissions/02", "POST", good, token=token["alice"], **{"X-Student": "bob"}), 403,
         "cannot name another learner"),
    ]
    for (status, body), expected, phrase in refusals:
        assert status == expected and phrase in body["error"], (status, body)
    assert stored(course) == ([], 0)
    status, receipt = call(url + "submissions/02", "POST", good, token=token["bob"])
    assert status == 202 and receipt["learner"] == "bob" and receipt["bytes"] == len(good)
    files, rows = stored(course)
    assert rows == 1 and (course / files[0]).read_bytes() == good
    assert call(url + f"receipts/{receipt['receipt']}", token=token["alice"])[0] == 403
    assert call(url + f"receipts/{receipt['receipt']}", token=token["bob"])[1]["state"] == "queued"
    tokens.revoke(Settings.load(course), ["bob"])  # the service reads the roster again: at once
    assert call(url + "submissions/02", "POST", good, token=token["bob"])[0] == 401
    assert stored(course)[1] == 1


def test_the_daily_limit_refuses_more_and_a_retry_is_not_counted_twice(running):
    url, token, course = running["url"], running["token"], running["course"]
    good = notebook(course)
    sent = [call(url + "submissions/02", "POST", good, token=token["alice"], **{"X-Submission-Id": f"id-{i % 3}"})
            for i in range(4)]  # the 4th is a retry of the 1st: the same receipt
    assert [s for s, _ in sent] == [202] * 4 and sent[3][1]["receipt"] == sent[0][1]["receipt"]
    status, body = call(url + "submissions/02", "POST", good, token=token["alice"])
    assert status == 429 and "3 submissions allowed per day" in body["error"]
    assert stored(course)[1] == 3


# ---------------------------------------------------------------- what a learner sees

def test_hidden_results_wait_for_the_deadline_when_the_course_says_so(released, tmp_path):
    due = datetime.now(timezone.utc) + timedelta(days=1)
    course = class_course(released, tmp_path, f'[deadlines."02-self-attention"]\ndue = "{due.isoformat()}"\n'
                                              f'[service]\nhidden_scores = "after-deadline"\n')
    store, settings = Store(course), Settings.load(course)
    receipt, _ = store.receive("alice", A02, b"{}", "sha", None)
    store.claim(1)
    cells = {"check_softmax": {"earned": 2.0, "possible": 2.0, "text": "softmax: passed"},
             "hidden_softmax": {"earned": 0.0, "possible": 1.0, "text": "softmax: failed 1 of 4 hidden test cases"}}
    store.finish(receipt.id, {"status": "graded", "notes": [], "cells": cells}, "fp")
    receipt = store.receipt(receipt.id)
    before = feedback_view(receipt, settings, datetime.now(timezone.utc))
    assert before["earned"] == 2 and before["possible"] == 2 and not before["hidden_shown"]
    assert "failed 1 of 4" not in json.dumps(before) and "after the deadline" in before["cells"][1]["text"]
    after = feedback_view(receipt, settings, due + timedelta(seconds=1))
    assert after["earned"] == 2 and after["possible"] == 3 and "failed 1 of 4" in after["cells"][1]["text"]


# ---------------------------------------------------------------- the hub and TLS

class FakeHub(BaseHTTPRequestHandler):
    """JupyterHub's ``GET /hub/api/user``: the user behind a token."""

    users = {"alice-server-token": "alice"}
    calls = 0

    def do_GET(self):
        FakeHub.calls += 1
        name = self.users.get(self.headers.get("Authorization", "").removeprefix("token "))
        body = json.dumps({"kind": "user", "name": name}).encode() if name else b'{"status": 403}'
        self.send_response(200 if name else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_inside_a_hub_the_learner_is_the_hub_user_behind_the_token():
    hub = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        identity = HubIdentity(f"http://127.0.0.1:{hub.server_address[1]}/hub/api/")
        assert identity.learner("alice-server-token") == "alice"
        assert identity.learner("alice-server-token") == "alice" and FakeHub.calls == 1  # cached
        assert identity.learner("forged") is None
    finally:
        hub.shutdown()
        hub.server_close()
    with pytest.raises(Refused, match="the hub could not be reached"):
        HubIdentity(f"http://127.0.0.1:{hub.server_address[1]}/hub/api").learner("another-token")


def test_an_address_other_machines_reach_needs_tls(running, tmp_path):
    with pytest.raises(CourseError, match="serve it with TLS"):
        make_server(running["service"], "0.0.0.0", 0)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = make_server(running["service"], "127.0.0.1", 0, str(cert), str(key))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = dict(os.environ, LLMCOURSE_SUBMIT_URL=f"https://127.0.0.1:{server.server_address[1]}/",
                   LLMCOURSE_SUBMIT_CA=str(cert), JUPYTERHUB_API_TOKEN=running["token"]["alice"])
        code = ("from llmcourse.submit import request; import sys; "
                "status, body = request('GET', 'feedback/02'); print(status, body['learner'], len(body['receipts']))")
        out = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["200", "alice", "0"], out.stderr
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- the commands, as people type them

def test_the_learners_commands_say_what_to_set_when_nothing_is_configured(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCOURSE_SUBMIT", "JUPYTERHUB_"))}
    run = lambda *args, **extra: subprocess.run(  # noqa: E731
        [os.sys.executable, "-m", "llmcourse.cli", *args], env={**env, **extra}, capture_output=True, text=True,
        timeout=120, cwd=course_tools.ROOT)
    no_url = run("submit", "02")
    assert no_url.returncode == 2 and "set LLMCOURSE_SUBMIT_URL" in no_url.stderr
    no_token = run("feedback", "02", LLMCOURSE_SUBMIT_URL="http://127.0.0.1:9/",
                   LLMCOURSE_SUBMIT_TOKEN_FILE=str(tmp_path / "missing"))
    assert no_token.returncode == 2 and f"no token file at {tmp_path / 'missing'}" in no_token.stderr
    down = run("feedback", "02", LLMCOURSE_SUBMIT_URL="http://127.0.0.1:9/", JUPYTERHUB_API_TOKEN="t")
    assert down.returncode == 2 and "cannot be reached" in down.stderr


def test_the_instructors_commands_on_the_services_store(released, tmp_path):
    course = class_course(released, tmp_path)
    issued = course_tools.llmcourse(course, "tokens", "issue")
    assert "2 token files written to tokens" in issued.stdout and (course / "tokens" / "bob.token").is_file()
    assert "no submissions received by the service yet" in course_tools.llmcourse(course, "status", "02").stdout
    store = Store(course)
    receipt, _ = store.receive("bob", A02, b"{}", "sha", None)
    store.claim(1)
    store.finish(receipt.id, {"status": "failed: the notebook does not parse", "notes": [],
                              "cells": {"check_softmax": {"earned": 0.0, "possible": 2.0}}}, "fp")
    status = course_tools.llmcourse(course, "status", "02").stdout
    assert "1 received from 1 learners; 1 failed; 0 late" in status and "failed: the notebook does not parse" in status
    refused = course_tools.llmcourse(course, "override", "02", "bob", "9", "--reason", " ", check=False)
    assert refused.returncode == 2 and "needs its reason" in refused.stderr
    course_tools.llmcourse(course, "override", "02", "bob", "9", "--reason", "graded by hand")
    assert "counts: override 9 (graded by hand)" in course_tools.llmcourse(course, "status", "02").stdout
    assert "1 receipts queued again" in course_tools.llmcourse(course, "regrade", "02").stdout
    revoke = course_tools.llmcourse(course, "tokens", "revoke", check=False)
    assert revoke.returncode == 2 and "name the learners" in revoke.stderr
