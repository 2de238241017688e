"""``llmcourse grade serve``: learners submit, the service grades at once and gives the feedback back.

Standalone it binds 127.0.0.1 (another address only with a TLS certificate and key) and knows a learner by the
token ``llmcourse grade tokens`` issued (the roster holds its hash). As a JupyterHub service (the hub sets
``JUPYTERHUB_SERVICE_URL``) it binds where the hub says and knows a learner as the hub user behind the token of
their server, asked of the hub's API. Identity never comes from a request field: a request naming another
learner is refused (403), and so is another learner's receipt.

    GET  <prefix>health                      200 once serving
    POST <prefix>submissions/<assignment>    the notebook file as the body -> 202 and a receipt
    GET  <prefix>receipts/<id>               its state, and its score and feedback once graded
    GET  <prefix>feedback/<assignment>       the learner's receipts of an assignment, and the one that counts

Receipts and results are kept in ``service/`` (grader/classroom/store.py); grading uses the isolated
autograder (grader/autograde.py) in a pool of worker processes, one submission each at a time. For tests,
``LLMCOURSE_SERVICE_FAULT=<point>`` makes the service exit at a named point: ``before-row`` (file written, no
receipt yet), ``after-store`` (receipt stored, before the reply), ``while-grading`` (a submission handed to a
worker, its result not recorded).
"""

import hashlib
import ipaddress
import json
import multiprocessing
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from grader.autograde import GradeJob, fingerprint, read_submission, warm_imports
from grader.classroom import grading
from grader.classroom.course import Course, CourseError
from grader.classroom.settings import Settings
from grader.classroom.store import Receipt, Store, utc_now
from grader.classroom.tokens import learner_for_token
from grader.sandbox import Limits, sweep_run_folders

FAULT_ENV = "LLMCOURSE_SERVICE_FAULT"
FAULT_EXIT = 70
HUB_CACHE_S = 60  # a hub token's user is asked of the hub again after this
LEARNER_ID = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*")


def fault(point: str) -> None:
    """Exit at once, as a crash would, when the fault-injection switch names this point."""
    if os.environ.get(FAULT_ENV) == point:
        print(f"fault injection: exiting at {point}", file=sys.stderr, flush=True)
        os._exit(FAULT_EXIT)


class Refused(Exception):
    """A request refused with an HTTP status and a message for the learner."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- who is asking

class RosterIdentity:
    """Standalone: the learner whose token hash is in the roster (``Settings.roster`` reads it again when it
    changes, so a revoked token stops at the next request)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def learner(self, token: str) -> str | None:
        return learner_for_token(self.settings.roster(), token)


class HubIdentity:
    """Inside JupyterHub: the hub user behind a token, from ``GET <hub api>/user`` with that token."""

    def __init__(self, api_url: str):
        self.api_url = api_url.rstrip("/")
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def learner(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < HUB_CACHE_S:
            return cached[1]
        request = urllib.request.Request(f"{self.api_url}/user", headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                model = json.load(reply)
            name = model.get("name") if model.get("kind", "user") == "user" else None
        except urllib.error.HTTPError as err:
            if err.code not in (401, 403, 404):
                raise Refused(503, f"the hub could not check your token (HTTP {err.code}); try again") from None
            name = None
        except (OSError, ValueError) as err:
            raise Refused(503, f"the hub could not be reached to check your token ({err}); try again") from None
        with self._lock:
            self._cache[key] = (time.monotonic(), name)
        return name


# ---------------------------------------------------------------- what a learner sees

def feedback_view(receipt: Receipt, settings: Settings, now: datetime, counted: str | None = None) -> dict:
    """A receipt as its learner may see it: never the hidden cases' inputs (their cells' texts are counts and
    named mistakes only), and the hidden cells' results only when the course's policy allows it now."""
    deadline = settings.deadline_for(receipt.assignment, receipt.learner)
    view = {"receipt": receipt.id, "assignment": receipt.assignment, "learner": receipt.learner,
            "state": receipt.state, "received_at": receipt.received_at, "sha256": receipt.sha256,
            "bytes": receipt.bytes, "counts": receipt.id == counted,
            "days_late": deadline.days_late(receipt.received) if deadline else 0,
            "due": deadline.due.isoformat() if deadline else None}
    if receipt.state == "error":
        view["why"] = f"{receipt.why}: not your notebook's fault; your instructor sees it and can regrade it"
    if receipt.state not in ("graded", "failed"):
        return view
    result = json.loads(receipt.result)
    show_hidden = settings.hidden_visible(receipt.assignment, receipt.learner, now)
    cells, earned, possible = [], 0.0, 0.0
    for grade_id, cell in result["cells"].items():
        if grade_id.startswith("hidden_") and not show_hidden:
            cells.append({"cell": grade_id, "earned": None, "possible": cell["possible"],
                          "text": f"hidden tests: results shown after the deadline ({view['due']})"})
            continue
        earned, possible = earned + cell["earned"], possible + cell["possible"]
        cells.append({"cell": grade_id, "earned": cell["earned"], "possible": cell["possible"], "text": cell["text"]})
    view.update(earned=earned, possible=possible, hidden_shown=show_hidden, cells=cells, notes=result["notes"],
                why=receipt.why)
    if deadline and view["days_late"] and show_hidden:
        view["penalised"] = deadline.penalised(earned, possible, receipt.received)
    return view


# ---------------------------------------------------------------- the service

class GradingService:
    """The store, the identity, and a grading thread that feeds a pool of workers from the queue."""

    def __init__(self, course: Course, hub_api_url: str | None = None, workers: int = 2,
                 limits: Limits | None = None, isolate: bool = True, prefix: str = "/"):
        self.course, self.workers = course, workers
        self.settings = Settings.load(course.root)
        self.identity = HubIdentity(hub_api_url) if hub_api_url else RosterIdentity(self.settings)
        self.store = Store(course.root)
        self.limits, self.isolate = limits or Limits(), isolate
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self._stop = threading.Event()
        self._pool, self._grader = None, None
        self._fingerprints: dict[tuple, str] = {}  # (assignment, its texts) -> fingerprint

    # ------------------------------------------------------------ requests

    def who(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("token ").removeprefix("Bearer ").strip()
        if not token:
            raise Refused(401, "no token: `llmcourse submit` sends it (inside the hub, the hub's own; standalone, the "
                               "token file your instructor gave you)")
        learner = self.identity.learner(token)
        if not learner:
            raise Refused(401, "this token is not valid (wrong, revoked or expired): ask your instructor for a new one")
        if not LEARNER_ID.fullmatch(learner):  # it names folders in the store and the gradebook
            raise Refused(403, f"the user name {learner!r} cannot be a course id (letters, digits, . _ @ + - only, "
                               f"not starting with a dot): ask your instructor")
        return learner

    def assignment(self, target: str) -> str:
        try:
            name = self.course.assignment(target)
        except CourseError:
            name = None
        released = self.course.released_assignments()
        if name not in released:
            raise Refused(404, f"no assignment {target!r} is open for submissions; open: {', '.join(released) or 'none'}")
        return name

    def submit(self, learner: str, target: str, data: bytes, client_id: str | None) -> dict:
        assignment = self.assignment(target)
        notebook, unreadable = read_submission(data)
        if notebook is None:
            raise Refused(400, f"nothing was stored: {unreadable}. Save the notebook in Jupyter and submit again")
        now = utc_now()
        if self.settings.daily_limit and not (client_id and self.store.find_client(learner, client_id)):
            if self.store.submitted_today(learner, assignment, now) >= self.settings.daily_limit:
                raise Refused(429, f"nothing was stored: you have made the {self.settings.daily_limit} submissions "
                                   f"allowed per day for {assignment}; the limit resets at 00:00 UTC")
        receipt, new = self.store.receive(learner, assignment, data, hashlib.sha256(data).hexdigest(), client_id,
                                          fault)
        if new:
            fault("after-store")
            print(f"received {receipt.id}: {learner} {assignment} ({receipt.bytes:,} bytes)", file=sys.stderr,
                  flush=True)
        return {**feedback_view(receipt, self.settings, now), "queue_position": self.store.queue_position(receipt.id)}

    def receipt_view(self, learner: str, receipt_id: str) -> dict:
        receipt = self.store.receipt(receipt_id)
        if receipt is None:
            raise Refused(404, f"no receipt {receipt_id}")
        if receipt.learner != learner:
            raise Refused(403, f"receipt {receipt_id} is not yours: you can read only your own receipts")
        counted = self._counted(receipt.assignment, learner)
        view = feedback_view(receipt, self.settings, utc_now(), counted and counted.receipt)
        view["queue_position"] = self.store.queue_position(receipt_id)
        return view

    def feedback(self, learner: str, target: str) -> dict:
        assignment = self.assignment(target)
        counted = self._counted(assignment, learner)
        now = utc_now()
        views = [feedback_view(r, self.settings, now, counted and counted.receipt)
                 for r in reversed(self.store.receipts(assignment, learner))]
        show = self.settings.hidden_visible(assignment, learner, now)
        return {"assignment": assignment, "learner": learner, "receipts": views,
                "counted": None if counted is None else {"receipt": counted.receipt, "days_late": counted.days_late,
                                                         "score": counted.score if show else None}}

    def _counted(self, assignment: str, learner: str, record: bool = False):
        return self.store.counted(assignment, learner, self.settings.deadline_for(assignment, learner), record)

    # ------------------------------------------------------------ grading

    def start(self) -> None:
        """Recover the queue, warm the workers (forked before any request thread exists), start grading."""
        sweep_run_folders()
        requeued, swept = self.store.recover()
        if requeued or swept:
            print(f"recovered: {requeued} interrupted gradings queued again, {swept} unacknowledged files removed",
                  file=sys.stderr, flush=True)
        self._pool = self._new_pool()
        self._grader = threading.Thread(target=self._grade_forever, name="grading", daemon=True)
        self._grader.start()

    def grading_alive(self) -> bool:
        return self._grader is not None and self._grader.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def _new_pool(self) -> ProcessPoolExecutor:
        import nbformat

        grading._prepare_process()
        for assignment in self.course.released_assignments():
            warm_imports(nbformat.read(self.course.release(assignment), as_version=4))
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=grading._init_worker,
                                   initargs=(context.Value("i", 0),))
        wait([pool.submit(int, 0) for _ in range(self.workers)])  # fork every worker now, while this is one thread
        return pool

    def _job(self, receipt: Receipt) -> tuple[GradeJob, str]:
        """The receipt's grading job, from the assignment's texts as they are now, and their fingerprint (with the
        checks' code, which this process imported once: computed once per version of the texts)."""
        texts = self.course.grading_texts(receipt.assignment)
        key = (receipt.assignment, *texts)
        if key not in self._fingerprints:
            self._fingerprints[key] = fingerprint(receipt.assignment[:2], *texts)
        job = GradeJob(receipt.assignment, receipt.learner, self.store.data(receipt), *texts, self.limits,
                       str(self.course.root), self.isolate)
        return job, self._fingerprints[key]

    def _grade_forever(self) -> None:
        running, caught_up = {}, False  # future -> (receipt, fingerprint)
        while not self._stop.is_set():
            try:
                caught_up = caught_up or self._catch_up_gradebook()
                self._grade_some(running)
            except Exception as err:  # the store or the pool failed: said, and tried again, never a silent stop
                print(f"error: grading: {type(err).__name__}: {err}; retrying in 5 s", file=sys.stderr, flush=True)
                time.sleep(5)

    def _grade_some(self, running: dict) -> None:
        """Hand queued receipts to free workers, and record what the workers finished."""
        for receipt in self.store.claim(self.workers - len(running)):
            try:
                job, stamp = self._job(receipt)
            except OSError as err:  # the stored file or the assignment's source is unreadable
                self._record(receipt, None, "", f"the grader could not read what it needs ({err})")
                continue
            running[self._pool.submit(grading._grade_locally, job)] = (receipt, stamp)
            fault("while-grading")
        if not running:
            time.sleep(0.1)
            return
        done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
        broken = False
        for future in done:
            receipt, stamp = running.pop(future)
            try:
                result, why = future.result(), None
            except Exception as err:  # the grading machinery failed, not the submission: state "error"
                result, why = None, f"the grader failed ({type(err).__name__}: {err})"
                broken = broken or isinstance(err, BrokenProcessPool)
            self._record(receipt, result, stamp, why)
        if broken:  # a worker died: the others' jobs are lost too, so they fail alike; a new pool grades on
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def _catch_up_gradebook(self) -> bool:
        """At start, in the grading thread (the gradebook's one writer): copy into the gradebook each learner's
        counted submission that is not there yet. A result is recorded in the store first and copied after, so a
        crash between the two (or a copy that failed) left the gradebook without it, and the exports, which list
        nbgrader's rows, without the learner."""
        for assignment in sorted({r.assignment for r in self.store.receipts()}):
            for learner in self.store.learners(assignment):
                counted = self._counted(assignment, learner)
                if counted is None:
                    continue
                receipt = self.store.receipt(counted.receipt)
                record = self.course.record(learner, assignment) or {}
                if (record.get("submission_sha256"), record.get("fingerprint")) == (receipt.sha256, receipt.fingerprint):
                    continue
                if self._copy_counted(receipt):
                    print(f"gradebook: {learner}'s counted {assignment} ({receipt.id}) copied in", file=sys.stderr,
                          flush=True)
        return True

    def _copy_counted(self, receipt: Receipt) -> bool:
        """Copy a learner's counted submission and its result into nbgrader's gradebook; a failure is said, not
        raised: the store is the record, and the next start copies what is missing."""
        try:
            self.course.record_counted(receipt, self.store.data(receipt), receipt.fingerprint)
            return True
        except Exception as err:
            print(f"warning: the gradebook was not updated for {receipt.id} ({type(err).__name__}: {err}); the next "
                  f"start of the service copies it", file=sys.stderr, flush=True)
            return False

    def _record(self, receipt: Receipt, result: dict | None, stamp: str, why: str | None) -> None:
        """The receipt's one result, then the gradebook's copy of the submission that counts."""
        if not self.store.finish(receipt.id, result, stamp, why):
            return
        score = "" if result is None else f"{sum(c['earned'] for c in result['cells'].values()):g} points, "
        print(f"graded {receipt.id}: {receipt.learner} {receipt.assignment}, {score}"
              f"{why or (result or {}).get('status', '')}"[:200], file=sys.stderr, flush=True)
        if result is None:
            return
        counted = self._counted(receipt.assignment, receipt.learner, record=True)
        if counted and counted.receipt == receipt.id:
            self._copy_counted(self.store.receipt(receipt.id))


# ---------------------------------------------------------------- HTTP

ROUTES = [("POST", re.compile(r"submissions/([\w.-]+)"), "submit"),
          ("GET", re.compile(r"receipts/([\w.-]+)"), "receipt"),
          ("GET", re.compile(r"feedback/([\w.-]+)"), "feedback"),
          ("GET", re.compile(r"health"), "health")]
NAMING_FIELDS = ("student", "learner", "student_id", "user")
DRAIN_LIMIT = 256 * 2**20  # a refused upload's unread body is read and dropped up to this size (see _discard_body)


def make_handler(service: GradingService):
    class Handler(BaseHTTPRequestHandler):
        server_version = "llmcourse-grading/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # the service prints its own one-line events
            pass

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body, indent=1).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            self._unread = 0
            if method == "POST":
                try:
                    self._unread = max(int(self.headers.get("Content-Length", "0")), 0)
                except ValueError:
                    pass
            try:
                self._reply(*self._route(method))
            except Refused as err:
                self._discard_body()
                self.close_connection = method == "POST"  # an unread body must not be taken for the next request
                self._reply(err.status, {"error": str(err)})
            except Exception as err:  # a bug here must not stop the service; the learner is told to retry
                print(f"error: {method} {self.path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                self._reply(500, {"error": "the grading service failed on this request; try again"})

        def _route(self, method: str) -> tuple[int, dict]:
            url = urlsplit(self.path)
            if not url.path.startswith(service.prefix):
                raise Refused(404, f"not found: the service is at {service.prefix}")
            path = url.path[len(service.prefix):]
            for verb, pattern, name in ROUTES:
                match = pattern.fullmatch(path)
                if match and verb == method:
                    break
            else:
                raise Refused(404 if method == "GET" else 405, f"no {method} {url.path}")
            if name == "health":
                return 200, {"ok": True, "grading": service.grading_alive()}
            learner = service.who(self.headers.get("Authorization"))
            named = [v for k, values in parse_qs(url.query).items() if k in NAMING_FIELDS for v in values]
            named += [self.headers[h] for h in ("X-Student", "X-Learner") if self.headers.get(h)]
            if any(n != learner for n in named):
                raise Refused(403, f"you are {learner}: a request cannot name another learner (the service knows "
                                   f"you from your token only)")
            if name == "receipt":
                return 200, service.receipt_view(learner, match.group(1))
            if name == "feedback":
                return 200, service.feedback(learner, match.group(1))
            return 202, service.submit(learner, match.group(1), self._body(), self.headers.get("X-Submission-Id"))

        def _body(self) -> bytes:
            limit = service.settings.max_upload_bytes
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise Refused(411, "nothing was stored: the request has no Content-Length") from None
            if length > limit:
                raise Refused(413, f"nothing was stored: the notebook is {length / 2**20:.1f} MB, over the limit of "
                                   f"{limit / 2**20:.3g} MB. Clear its outputs (Edit > Clear Outputs of All Cells), "
                                   f"save, and submit again")
            data = self.rfile.read(length)
            self._unread = 0
            if len(data) != length:
                raise Refused(400, "nothing was stored: the upload was cut short; submit again")
            return data

        def _discard_body(self) -> None:
            """Read what is left of a refused POST's body: a client still sending it (a notebook over the size
            limit, a revoked token) would otherwise get a broken pipe instead of the reply that says why."""
            if self._unread > DRAIN_LIMIT:
                return
            while self._unread > 0:
                chunk = self.rfile.read(min(self._unread, 2**20))
                if not chunk:
                    break
                self._unread -= len(chunk)

    return Handler


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def check_address(host: str, cert: str | None, key: str | None) -> None:
    """An address other machines reach is served only with TLS (tokens and notebooks must not travel in clear)."""
    if not is_loopback(host) and not (cert and key):
        raise CourseError(f"{host} is reachable from other machines: serve it with TLS (--cert and --key), or bind "
                          f"127.0.0.1 behind a proxy that terminates TLS")


def make_server(service: GradingService, host: str, port: int, cert: str | None = None,
                key: str | None = None) -> ThreadingHTTPServer:
    """The HTTP(S) server of ``service`` bound to ``host:port``."""
    check_address(host, cert, key)
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def serve(course: Course, host: str = "127.0.0.1", port: int = 8765, cert: str | None = None,
          key: str | None = None, workers: int = 2, limits: Limits | None = None, isolate: bool = True) -> int:
    """Run the service until interrupted: as a hub service when the hub's environment says so, else standalone."""
    hub_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if hub_url:
        where = urlsplit(hub_url)
        host, port = where.hostname or "127.0.0.1", where.port or 80
        hub_api, prefix = os.environ["JUPYTERHUB_API_URL"], os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    else:
        hub_api, prefix = None, "/"
    check_address(host, cert, key)  # before the workers start
    service = GradingService(course, hub_api, workers, limits, isolate, prefix)
    service.start()
    server = make_server(service, host, port, cert, key)
    print(f"serving {course.root.name} at {'https' if cert and key else 'http'}://{host}:{server.server_address[1]}"
          f"{service.prefix} ({'hub users' if hub_url else 'roster tokens'}, {workers} grading workers); Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        server.server_close()
    return 0
