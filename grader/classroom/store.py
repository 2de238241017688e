"""The grading service's own store: every submission as its own file, and a queue and results that survive a crash.

``service/`` in the course folder holds ``submissions/<assignment>/<learner>/<receipt>.ipynb`` and
``service.db`` (SQLite, WAL, synchronous=FULL). A receipt is given only once its file is on disk (fsync'd, then
renamed, then the folder fsync'd) and its row committed; a file whose row never came (the service died in
between) is swept at the next start. A receipt's state goes ``queued`` -> ``grading`` -> ``graded`` (a result:
the score, or "failed: why" when the notebook could not be graded); when the grader itself fails, it is queued
again, and left in ``error`` after ``ATTEMPTS`` tries (``regrade`` queues it once more). Grading interrupted by a crash is found in ``grading`` at the next start and queued again;
a result is written only over a receipt in ``grading``, so each receipt has exactly one recorded result.

nbgrader's gradebook holds one submission per learner and assignment: the one that counts (``counted``) is
written there by the service; the export reads the scores that count from here.
"""

import json
import os
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader.classroom.deadlines import Counted, Submission, counted_score

FOLDER = "service"
SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    id TEXT PRIMARY KEY, learner TEXT NOT NULL, assignment TEXT NOT NULL, client_id TEXT,
    sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, received_at TEXT NOT NULL, path TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, earned REAL, possible REAL, why TEXT,
    result TEXT, fingerprint TEXT, graded_at TEXT, UNIQUE (learner, client_id));
CREATE INDEX IF NOT EXISTS by_state ON receipts (state, received_at);
CREATE INDEX IF NOT EXISTS by_learner ON receipts (assignment, learner, received_at);
CREATE TABLE IF NOT EXISTS overrides (
    learner TEXT NOT NULL, assignment TEXT NOT NULL, score REAL NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counted (
    learner TEXT NOT NULL, assignment TEXT NOT NULL, receipt TEXT NOT NULL, score REAL NOT NULL,
    days_late INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (learner, assignment));
"""
ATTEMPTS = 3  # a receipt whose grading the grader itself failed this many times is left in "error"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Receipt:
    id: str
    learner: str
    assignment: str
    sha256: str
    bytes: int
    received_at: str  # UTC, ISO 8601 with microseconds
    path: str  # relative to the store
    state: str
    attempts: int = 0
    earned: float | None = None
    possible: float | None = None
    why: str | None = None
    result: str | None = None  # SubmissionResult.to_dict() as JSON
    fingerprint: str | None = None
    graded_at: str | None = None
    client_id: str | None = None

    @property
    def received(self) -> datetime:
        return instant(self.received_at)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, course_root: Path):
        self.root = Path(course_root) / FOLDER
        (self.root / "submissions").mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "service.db"
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file: readers never wait for the writer
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _db(self):
        """A connection for one unit of work, committed at its end (a new one each time: threads never share)."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before a receipt is given
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # ------------------------------------------------------------ receiving

    def receive(self, learner: str, assignment: str, data: bytes, sha256: str, client_id: str | None,
                fault=lambda point: None) -> tuple[Receipt, bool]:
        """Store a submission: its file on disk, then its row. Returns (receipt, new); a repeated ``client_id``
        (the client retrying after a lost reply) returns the receipt it already has."""
        if client_id:
            existing = self.find_client(learner, client_id)
            if existing:
                return existing, False
        now = utc_now()
        receipt_id = f"r-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
        relative = Path("submissions") / assignment / learner / f"{receipt_id}.ipynb"
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_dir(path.parent)
        fault("before-row")
        receipt = Receipt(receipt_id, learner, assignment, sha256, len(data), now.isoformat(timespec="microseconds"),
                          str(relative), "queued", client_id=client_id)
        with self._db() as db:
            db.execute("INSERT INTO receipts (id, learner, assignment, client_id, sha256, bytes, received_at, path, "
                       "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (receipt.id, learner, assignment, client_id, sha256, len(data), receipt.received_at,
                        receipt.path, "queued"))
        return receipt, True

    def find_client(self, learner: str, client_id: str) -> Receipt | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM receipts WHERE learner = ? AND client_id = ?",
                             (learner, client_id)).fetchone()
        return Receipt(**dict(row)) if row else None

    def data(self, receipt: Receipt) -> bytes:
        return (self.root / receipt.path).read_bytes()

    def submitted_today(self, learner: str, assignment: str, now: datetime) -> int:
        day = now.astimezone(timezone.utc).date().isoformat()
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM receipts WHERE learner = ? AND assignment = ? AND "
                              "substr(received_at, 1, 10) = ?", (learner, assignment, day)).fetchone()[0]

    # ------------------------------------------------------------ the queue

    def recover(self) -> tuple[int, int]:
        """At start: grading interrupted by a crash is queued again; files whose row never came are removed.
        Returns (requeued, swept)."""
        with self._db() as db:
            requeued = db.execute("UPDATE receipts SET state = 'queued' WHERE state = 'grading'").rowcount
            known = {row[0] for row in db.execute("SELECT path FROM receipts")}
        swept = 0
        for path in (self.root / "submissions").rglob("*"):
            if path.is_file() and str(path.relative_to(self.root)) not in known:
                path.unlink()  # never acknowledged: the learner saw an error and submits again
                swept += 1
        return requeued, swept

    def claim(self, n: int) -> list[Receipt]:
        """Up to ``n`` queued receipts, oldest first, now ``grading``."""
        if n <= 0:
            return []
        with self._db() as db:
            rows = db.execute("UPDATE receipts SET state = 'grading', attempts = attempts + 1 WHERE id IN "
                              "(SELECT id FROM receipts WHERE state = 'queued' ORDER BY received_at LIMIT ?) "
                              "RETURNING *", (n,)).fetchall()
        return sorted((Receipt(**dict(r)) for r in rows), key=lambda r: r.received_at)

    def finish(self, receipt_id: str, result: dict | None, fingerprint: str, why: str | None = None) -> bool:
        """Record a receipt's one result (``result`` None: the grader failed, ``why``: queued again, ``error``
        after ``ATTEMPTS`` tries); False when it was not being graded (already recorded)."""
        if result is None:
            with self._db() as db:
                return db.execute("UPDATE receipts SET state = CASE WHEN attempts < ? THEN 'queued' ELSE 'error' END, "
                                  "why = ?, graded_at = ? WHERE id = ? AND state = 'grading'",
                                  (ATTEMPTS, why, utc_now().isoformat(timespec="seconds"), receipt_id)).rowcount == 1
        status = result["status"]
        state = "graded" if status == "graded" else "failed"
        why = None if state == "graded" else status.removeprefix("failed: ")
        earned = sum(c["earned"] for c in result["cells"].values())
        possible = sum(c["possible"] for c in result["cells"].values())
        with self._db() as db:
            return db.execute("UPDATE receipts SET state = ?, earned = ?, possible = ?, why = ?, result = ?, "
                              "fingerprint = ?, graded_at = ? WHERE id = ? AND state = 'grading'",
                              (state, earned, possible, why, json.dumps(result),
                               fingerprint, utc_now().isoformat(timespec="seconds"), receipt_id)).rowcount == 1

    def requeue(self, assignment: str, learners: list[str] | None = None) -> int:
        """Queue every finished receipt of ``assignment`` again (``regrade``); each keeps one result, replaced
        when it is graded again."""
        query = "UPDATE receipts SET state = 'queued' WHERE assignment = ? AND state IN ('graded', 'failed', 'error')"
        params: list = [assignment]
        if learners:
            query += f" AND learner IN ({', '.join('?' * len(learners))})"
            params += learners
        with self._db() as db:
            return db.execute(query, params).rowcount

    # ------------------------------------------------------------ reading

    def receipt(self, receipt_id: str) -> Receipt | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM receipts WHERE id = ?", (receipt_id,)).fetchone()
        return Receipt(**dict(row)) if row else None

    def receipts(self, assignment: str | None = None, learner: str | None = None) -> list[Receipt]:
        """Receipts in the order they were received, optionally of one assignment and learner."""
        query, params = "SELECT * FROM receipts WHERE 1 = 1", []
        for column, value in (("assignment", assignment), ("learner", learner)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY received_at", params).fetchall()
        return [Receipt(**dict(r)) for r in rows]

    def queue_position(self, receipt_id: str) -> int:
        """How many receipts are graded before this one (0: it is being graded or done)."""
        with self._db() as db:
            row = db.execute("SELECT state, received_at FROM receipts WHERE id = ?", (receipt_id,)).fetchone()
            if row is None or row["state"] != "queued":
                return 0
            return db.execute("SELECT COUNT(*) FROM receipts WHERE state IN ('queued', 'grading') AND "
                              "received_at <= ?", (row["received_at"],)).fetchone()[0]

    # ------------------------------------------------------------ what counts

    def override(self, learner: str, assignment: str, score: float, reason: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?)",
                       (learner, assignment, score, reason, utc_now().isoformat(timespec="seconds")))

    def overrides(self, assignment: str) -> dict[str, dict]:
        """learner -> the latest override of ``assignment`` (score, reason, at)."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM overrides WHERE assignment = ? ORDER BY rowid", (assignment,)).fetchall()
        return {r["learner"]: dict(r) for r in rows}

    def counted(self, assignment: str, learner: str, deadline, record: bool = False) -> Counted | None:
        """The receipt that counts for this learner under ``deadline`` (their extension applied; None: no
        deadline), recorded in ``counted`` when ``record``; None while nothing of theirs has a result."""
        scored = [Submission(r.id, r.received, r.earned, r.possible) for r in self.receipts(assignment, learner)
                  if r.state in ("graded", "failed") and r.possible is not None]
        if deadline is None:  # no deadline: the latest result counts
            chosen = Counted(scored[-1].receipt, scored[-1].score, 0) if scored else None
        else:
            chosen = counted_score(scored, deadline)
        if chosen is not None and record:
            with self._db() as db:
                db.execute("INSERT OR REPLACE INTO counted VALUES (?, ?, ?, ?, ?, ?)",
                           (learner, assignment, chosen.receipt, chosen.score, chosen.days_late,
                            utc_now().isoformat(timespec="seconds")))
        return chosen

    def learners(self, assignment: str) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT learner FROM receipts WHERE assignment = ? "
                                             "ORDER BY learner", (assignment,))]
