"""A class for the grading service, run as an instructor and learners would run it, for tests/test_class_service.py
and benchmarks/grading_service.py.

- ``class_course``: a course folder (tests/course_tools.py), chapter 02 released, a roster with Canvas's learner
  columns and extensions, ``classroom.toml``, and a token file per learner from ``llmcourse grade tokens issue``.
- ``Service``: ``llmcourse grade serve`` as a subprocess of the course folder; when it dies (the fault-injection
  switch ``LLMCOURSE_SERVICE_FAULT``) it is restarted at once without the switch, as a supervisor would, and each
  start's time to serve again (``GET /health``) is kept.
- ``Learner``: a learner's copy of the notebook and token file; ``submit`` goes through the real client
  (``llmcourse.submit.submit``: the same retries with one submission id), from as many threads as there are
  learners. The client reads ``LLMCOURSE_SUBMIT_URL`` and ``LLMCOURSE_SUBMIT_TOKEN_FILE`` from the process's
  environment, which threads share: ``learners_act_apart`` makes each request read the environment of the thread's
  learner (set, read by the client's own ``connection()``, put back, under a lock), and keeps every response
  body a learner was given.
"""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import llmcourse.submit as client
from course_tools import llmcourse, new_course

A02 = "02-self-attention"
FAULT_ENV = "LLMCOURSE_SERVICE_FAULT"
FAULT_EXIT = 70  # grader/classroom/service.py
LEARNER_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
EXTENSION = f"extension {A02}"


# ---------------------------------------------------------------- the course

def class_course(tmp: Path, learners: list[str], settings: str | None = None,
                 extensions: dict[str, str] | None = None) -> Path:
    """A course with 02 released, a roster of ``learners`` (Canvas's columns, ``extension 02-self-attention``),
    ``tokens/<learner>.token`` issued by ``llmcourse grade tokens``, and ``classroom.toml`` = ``settings`` when
    given (else write it before the service starts: it is read at each start)."""
    course = new_course(tmp, [A02])
    llmcourse(course, "release", "02")
    rows = ["student_id," + ",".join(LEARNER_COLUMNS) + f",{EXTENSION}"]
    for i, learner in enumerate(learners):
        rows.append(f"{learner},Learner {learner.title()},{1000 + i},SIS{i:04d},{learner}@example.edu,"
                    f"Section {'AB'[i % 2]},{(extensions or {}).get(learner, '')}")
    (course / "roster.csv").write_text("\n".join(rows) + "\n")
    if settings is not None:
        (course / "classroom.toml").write_text(settings)
    llmcourse(course, "tokens", "issue", "--out", "tokens")
    return course


def set_extension(course: Path, learner: str, due: datetime) -> None:
    """Write a learner's extension (their own due instant) into the roster, as the instructor would."""
    with open(course / "roster.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0])
    for row in rows:
        if row["student_id"] == learner:
            row[EXTENSION] = due.isoformat()
    with open(course / "roster.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- the service

@dataclass
class Run:
    """One start of the service."""
    fault: str | None
    why: str
    started: float  # time.time()
    proc: subprocess.Popen = field(repr=False)
    serving_s: float | None = None  # from the start to the first 200 from /health
    ended: float | None = None
    code: int | None = None
    left_behind: list = field(default_factory=list)  # its processes still alive 3 s after it died
    planned: bool = False  # stopped on purpose (a restart), not a crash


class Service:
    """``llmcourse grade serve`` in the course folder; restarted without the fault switch whenever it dies."""

    def __init__(self, course: Path, port: int, args: tuple = ("--workers", "2", "--cell-timeout", "3")):
        self.course, self.port, self.args = course, port, args
        self.url = f"http://127.0.0.1:{port}/"
        self.runs: list[Run] = []
        self.lines: list[tuple[float, str]] = []  # (time.time(), line) of everything the service printed
        self.log = course.parent / "service.log"
        self._lock = threading.RLock()
        self._closing = False
        self._kill_on: str | None = None

    # ------------------------------------------------------------ starting and stopping

    def start(self, fault: str | None = None, why: str = "start", wait: bool = True) -> Run:
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if fault:
            env[FAULT_ENV] = fault
        with self._lock:
            proc = subprocess.Popen([sys.executable, "-m", "llmcourse.cli", "grade", "serve", "--port", str(self.port),
                                     *self.args], cwd=self.course, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            run = Run(fault, why, time.time(), proc)
            self.runs.append(run)
        self._note(f"--- {why}: pid {proc.pid}{f', {FAULT_ENV}={fault}' if fault else ''}")
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        threading.Thread(target=self._watch, args=(run,), daemon=True).start()
        if wait:
            self.wait_serving(run)
        return run

    def wait_serving(self, run: Run, timeout: float = 90) -> float | None:
        """Poll /health until this start serves (its time is kept), or it ended, or ``timeout``."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up and run.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "health", timeout=2) as reply:
                    if reply.status == 200:
                        run.serving_s = time.time() - run.started
                        return run.serving_s
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def restart(self, fault: str | None = None, why: str = "restart") -> Run:
        """Stop the running service with SIGTERM (as ``systemctl restart`` would) and start it again, with
        ``fault`` armed; returns the new start without waiting for it to serve."""
        with self._lock:
            old = self.runs[-1]
            old.planned = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(old.proc.pid, signal.SIGTERM)
        old.proc.wait(timeout=30)
        self._bury(old)
        return self.start(fault, why, wait=False)

    def kill(self) -> Run:
        """SIGKILL the running service now (a crash); it is restarted as after any crash. Returns the killed run."""
        with self._lock:
            run = self.runs[-1]
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.proc.pid, signal.SIGKILL)
        return run

    def kill_when(self, text: str) -> None:
        """SIGKILL the service the moment it prints a line holding ``text`` (a crash at that point); it is then
        restarted as after any crash."""
        with self._lock:
            self._kill_on = text

    def wait_stable(self, timeout: float = 90) -> Run:
        """Wait until the latest start runs without a fault and serves."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            run = self.runs[-1]
            if run.fault is None and run.serving_s is not None and run.proc.poll() is None:
                return run
            time.sleep(0.1)
        raise AssertionError(f"the service does not serve again within {timeout:g} s: {self.runs}")

    def stop(self) -> None:
        self._closing = True
        for run in self.runs:
            if run.proc.poll() is None:
                run.planned = True
                run.proc.terminate()
                try:
                    run.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
            self._bury(run, wait_s=0)

    # ------------------------------------------------------------ what happens to each start

    def _read(self, proc: subprocess.Popen) -> None:
        with open(self.log, "a") as log:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                now = time.time()
                with self._lock:
                    self.lines.append((now, line))
                    kill = self._kill_on is not None and self._kill_on in line
                    if kill:
                        self._kill_on = None
                if kill:  # at once, from this thread: the next thing the service does is not done
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                log.write(f"{now:.3f} [{proc.pid}] {line}\n")
                log.flush()

    def _note(self, text: str) -> None:
        with self._lock, open(self.log, "a") as log:
            self.lines.append((time.time(), text))
            log.write(f"{time.time():.3f} {text}\n")

    def _watch(self, run: Run) -> None:
        run.code = run.proc.wait()
        run.ended = time.time()
        if self._closing or run.planned:
            return
        self._note(f"--- pid {run.proc.pid} died (exit {run.code}): restarting without {FAULT_ENV}")
        self._bury(run)
        self.start(None, f"restart after {run.fault or 'a crash'}", wait=True)

    def _bury(self, run: Run, wait_s: float = 3.0) -> None:
        """Note which of a dead start's processes (its grading workers) outlive it, then kill them."""
        if run.ended is None:
            run.ended = time.time()
        give_up = time.monotonic() + wait_s
        while group_members(run.proc.pid) and time.monotonic() < give_up:
            time.sleep(0.05)
        run.left_behind = group_members(run.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)

    def said(self, text: str) -> list[str]:
        with self._lock:
            return [line for _, line in self.lines if text in line]


# ---------------------------------------------------------------- learners

_acting = threading.local()
_env_lock = threading.Lock()
_ENV_KEYS = (client.URL_ENV, client.TOKEN_FILE_ENV, "JUPYTERHUB_API_TOKEN")


@dataclass
class Heard:
    """One request a learner's client made and what came back."""
    learner: str
    method: str
    path: str
    status: int | None
    body: dict | None
    started: float
    seconds: float
    error: str | None = None


@dataclass
class Sent:
    """One submission: what was sent, when, and the receipt (None: the client raised ``error``)."""
    learner: str
    label: str
    data: bytes
    started: float
    seconds: float
    receipt: dict | None
    error: str | None = None


@dataclass
class Learner:
    id: str
    home: Path
    url: str
    token_file: Path
    sent: list = field(default_factory=list)

    @property
    def notebook(self) -> Path:
        return self.home / "my-work" / A02 / f"{A02}.ipynb"

    @contextlib.contextmanager
    def acting(self):
        before = getattr(_acting, "learner", None)
        _acting.learner = self
        try:
            yield self
        finally:
            _acting.learner = before

    def submit(self, data: bytes, label: str = "", assignment: str = "02", wait: bool = False) -> Sent:
        """Save the notebook in the learner's copy and send it with ``llmcourse.submit.submit`` (``wait``: as
        ``llmcourse submit --wait``, until the grade is there)."""
        self.notebook.parent.mkdir(parents=True, exist_ok=True)
        self.notebook.write_bytes(data)
        start = time.time()
        with self.acting():
            try:
                receipt, error = client.submit(self.notebook, assignment, wait=wait, out=lambda *_: None), None
            except client.SubmitError as err:
                receipt, error = None, str(err)
        sent = Sent(self.id, label, data, start, time.time() - start, receipt, error)
        self.sent.append(sent)
        return sent

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        """(status, body) of one request through the client's own ``request``."""
        with self.acting():
            return client.request(method, path, data, headers)


def learners(course: Path, ids: list[str], url: str) -> dict[str, Learner]:
    """Each learner's home (``tmp/learners/<id>``) with the token file the instructor handed out."""
    found = {}
    for learner in ids:
        home = course.parent / "learners" / learner
        token = home / ".llmcourse" / "submit-token"
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_bytes((course / "tokens" / f"{learner}.token").read_bytes())
        found[learner] = Learner(learner, home, url, token)
    return found


@contextlib.contextmanager
def learners_act_apart():
    """Within: the client reads the acting learner's URL and token file, and every request is kept in the list
    this yields (a thread acting for no learner uses the process's environment as it is)."""
    heard: list[Heard] = []
    real_connection, real_request = client.connection, client.request

    def connection():
        learner = getattr(_acting, "learner", None)
        if learner is None:
            return real_connection()
        wanted = {client.URL_ENV: learner.url, client.TOKEN_FILE_ENV: str(learner.token_file)}
        with _env_lock:
            saved = {k: os.environ.get(k) for k in _ENV_KEYS}
            try:
                for key in _ENV_KEYS:
                    os.environ.pop(key, None)
                os.environ.update(wanted)
                return real_connection()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def request(method, path, data=None, headers=None, retry_s=0.0):
        learner = getattr(_acting, "learner", None)
        start = time.time()
        try:
            status, body = real_request(method, path, data, headers, retry_s)
        except Exception as err:
            heard.append(Heard(learner and learner.id, method, path, None, None, start, time.time() - start,
                               f"{type(err).__name__}: {err}"))
            raise
        heard.append(Heard(learner and learner.id, method, path, status, body, start, time.time() - start))
        return status, body

    client.connection, client.request = connection, request
    try:
        yield heard
    finally:
        client.connection, client.request = real_connection, real_request


def raw_request(url: str, method: str, path: str, data: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
    """A request without the client (to send what the client never sends, e.g. no token at all)."""
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


# ---------------------------------------------------------------- the store, read as the instructor's tools do

def stored(course: Path) -> tuple[set[str], list[dict]]:
    """(every file under service/submissions, relative to service/; every receipt row)."""
    import sqlite3

    root = course / "service"
    files = {str(p.relative_to(root)) for p in (root / "submissions").rglob("*") if p.is_file()}
    db = sqlite3.connect(root / "service.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in db.execute("SELECT * FROM receipts ORDER BY received_at")]
    finally:
        db.close()
    return files, rows


def wait_drained(course: Path, expected: int, timeout: float) -> float:
    """Wait until ``expected`` receipts are stored and none is queued or being graded; returns time.time() then
    (raises when ``timeout`` passes first)."""
    give_up = time.monotonic() + timeout
    while True:
        _, rows = stored(course)
        waiting = [r for r in rows if r["state"] in ("queued", "grading")]
        if len(rows) >= expected and not waiting:
            return time.time()
        if time.monotonic() > give_up:
            raise AssertionError(f"{len(waiting)} of {len(rows)} receipts still queued or being graded after "
                                 f"{timeout:g} s")
        time.sleep(0.25)
