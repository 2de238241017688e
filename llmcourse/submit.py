"""``llmcourse submit NN [--wait]`` and ``llmcourse feedback NN``: the learner's side of the grading service.

``submit`` sends the saved file of the learner's copy (``my-work/NN-topic/NN-topic.ipynb``), printing its save
time and hash so the learner knows which version went, then the receipt. Where the service is and who the
learner is come from the environment:

- inside JupyterHub, the token is the learner's server's own (``JUPYTERHUB_API_TOKEN``), and the service's
  address is ``LLMCOURSE_SUBMIT_URL``, which the hub's configuration sets for every server;
- standalone, ``LLMCOURSE_SUBMIT_URL`` and the token file the instructor handed out
  (``LLMCOURSE_SUBMIT_TOKEN_FILE``, default ``~/.llmcourse/submit-token``); ``LLMCOURSE_SUBMIT_CA`` names the
  certificate to trust when the service's is self-signed.

A lost reply is retried with the same submission id, so a retry never makes a second receipt.
"""

import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

URL_ENV, TOKEN_FILE_ENV, CA_ENV = "LLMCOURSE_SUBMIT_URL", "LLMCOURSE_SUBMIT_TOKEN_FILE", "LLMCOURSE_SUBMIT_CA"
DEFAULT_TOKEN_FILE = Path("~/.llmcourse/submit-token")
RETRY_S = 30  # how long a submission is retried while the service restarts
WAIT_S = 600  # how long --wait waits for the grade


class SubmitError(RuntimeError):
    """What went wrong, in words for the learner."""


def connection() -> tuple[str, str]:
    """(the service's base URL ending in /, the learner's token) from the environment."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        raise SubmitError(f"no grading service is configured: set {URL_ENV} to the address your instructor gave you "
                          f"(inside the course's JupyterHub it is set for you)")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE).expanduser()
        try:
            token = path.read_text().strip()
        except OSError:
            raise SubmitError(f"no token file at {path}: save the token file your instructor gave you there, or set "
                              f"{TOKEN_FILE_ENV} to its path") from None
    return url.rstrip("/") + "/", token


def request(method: str, path: str, data: bytes | None = None, headers: dict | None = None,
            retry_s: float = 0.0) -> tuple[int, dict]:
    """(HTTP status, JSON body) of one request to the service, retried on a lost connection for ``retry_s``."""
    base, token = connection()
    context = ssl.create_default_context(cafile=os.environ.get(CA_ENV) or None)
    give_up = time.monotonic() + retry_s
    while True:
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"token {token}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60, context=context) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as err:
            if err.code in (502, 503, 504) and time.monotonic() < give_up:  # a proxy before a restarting service
                time.sleep(1)
                continue
            try:
                body = json.load(err)
            except ValueError:
                body = {"error": f"HTTP {err.code} {err.reason}"}
            return err.code, body
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, ValueError) as err:
            # no reply, or one cut off (the service died while answering): retried, with the same submission id
            if time.monotonic() < give_up:
                time.sleep(1)
                continue
            raise SubmitError(f"the grading service at {base} cannot be reached or did not answer "
                              f"({getattr(err, 'reason', err)}): you have no receipt. Try again in a minute "
                              f"(`llmcourse feedback` lists what arrived), or tell your instructor") from None


def _checked(status: int, body: dict) -> dict:
    if status >= 400:
        raise SubmitError(body.get("error", f"HTTP {status}"))
    return body


def submit(notebook: Path, assignment: str, wait: bool = False, out=print) -> dict:
    """Send the saved notebook; returns the receipt (and, with ``wait``, prints the grade when it is ready)."""
    connection()  # what to set comes first: a learner configures once
    try:
        data = notebook.read_bytes()
    except OSError:
        raise SubmitError(f"{notebook} does not exist: `llmcourse start {assignment[:2]}` makes your copy") from None
    saved = datetime.fromtimestamp(notebook.stat().st_mtime).astimezone()
    out(f"Submitting {notebook}")
    out(f"  saved   {saved:%Y-%m-%d %H:%M:%S %Z} ({saved.astimezone(timezone.utc):%H:%M:%S} UTC): the file as "
        f"last saved; unsaved changes in an open notebook are not sent (save first)")
    out(f"  sha256  {hashlib.sha256(data).hexdigest()}  ({len(data):,} bytes)")
    receipt = _checked(*request("POST", f"submissions/{assignment}", data,
                                {"Content-Type": "application/x-ipynb+json", "X-Submission-Id": uuid.uuid4().hex},
                                retry_s=RETRY_S))
    late = f", {receipt['days_late']} day(s) late (due {receipt['due']})" if receipt.get("days_late") else ""
    out(f"receipt {receipt['receipt']}: received {receipt['received_at']} (server time, UTC){late}")
    if receipt["sha256"] != hashlib.sha256(data).hexdigest():
        raise SubmitError("the service stored a different file than was sent: submit again")
    if wait:
        out("waiting for the grade ...")
        deadline = time.monotonic() + WAIT_S
        while True:
            view = _checked(*request("GET", f"receipts/{receipt['receipt']}", retry_s=RETRY_S))
            if view["state"] in ("graded", "failed", "error"):
                break
            if time.monotonic() > deadline:
                out(f"not graded after {WAIT_S} s: `llmcourse feedback {assignment[:2]}` fetches it later")
                return receipt
            time.sleep(0.5)
        for line in describe(view):
            out(line)
    else:
        out(f"`llmcourse feedback {assignment[:2]}` shows the grade and feedback once it is graded")
    return receipt


def describe(view: dict) -> list[str]:
    """A receipt's grade and feedback as lines of text."""
    head = f"{view['receipt']} ({view['received_at']}): {view['state']}"
    if view["state"] in ("queued", "grading"):
        where = f", {view['queue_position']} in the queue" if view.get("queue_position") else ""
        return [head + where]
    if view["state"] == "error":
        return [f"{head}: {view.get('why')}"]
    hidden = "" if view.get("hidden_shown", True) else " (visible cells; hidden cells after the deadline)"
    lines = [f"{head}: score {view['earned']:g}/{view['possible']:g}{hidden}"]
    if view.get("why"):
        lines.append(f"  could not be graded: {view['why']}")
    if view.get("penalised") is not None:
        lines.append(f"  {view['days_late']} day(s) late: {view['penalised']:g} after the late penalty")
    lines += [f"  note: {note}" for note in view.get("notes", [])]
    for cell in view.get("cells", []):  # a passed cell in one line; a failed one with its whole report
        earned = "?" if cell["earned"] is None else f"{cell['earned']:g}"
        text = cell["text"].splitlines() or [""]
        passed = cell["earned"] is not None and cell["earned"] == cell["possible"]
        lines.append(f"[{cell['cell']}] {earned}/{cell['possible']:g}  {text[0]}")
        lines += [] if passed else ["    " + line for line in text[1:]]
    return lines


def feedback(assignment: str, out=print) -> dict:
    """Print the learner's receipts of an assignment, the newest first, and which one counts."""
    body = _checked(*request("GET", f"feedback/{assignment}"))
    if not body["receipts"]:
        out(f"no submission of {body['assignment']} yet: `llmcourse submit {assignment[:2]}` sends one")
        return body
    counted = body.get("counted")
    if counted:
        score = "" if counted["score"] is None else f": {counted['score']:g} points"
        out(f"{body['assignment']}: receipt {counted['receipt']} counts{score}")
    newest, *older = body["receipts"]
    out("")
    for line in describe(newest):
        out(line)
    if older:
        out("\nearlier submissions:")
        for view in older:
            out("  " + describe(view)[0])
    return body
