"""Learners' tokens for the standalone grading service (``llmcourse grade tokens``).

A token is 32 random bytes, shown once (and written to a file the instructor hands out); the roster keeps only
its SHA-256 (column ``token_sha256``). A token of such entropy needs no slow hash: guessing it is the attack,
and 2^256 guesses are out of reach. Revoking empties the learner's hash; rotating replaces it.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from grader.classroom.settings import Settings, SettingsError

HASH_COLUMN = "token_sha256"
PREFIX = "llmc_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def learner_for_token(roster: list[dict], token: str) -> str | None:
    """The learner whose hash matches this token (compared in constant time), or None."""
    digest = token_hash(token)
    found = None
    for row in roster:
        stored = (row.get(HASH_COLUMN) or "").strip()
        if stored and hmac.compare_digest(stored, digest):
            found = row["student_id"]
    return found


def _roster_with(settings: Settings, learners: list[str]) -> list[dict]:
    """The roster's rows, refused when there is none or when it lacks one of ``learners``."""
    roster = settings.roster()
    if not roster:
        raise SettingsError(f"no roster at {settings.roster_path}: write one row per learner (a student_id column) "
                            f"first")
    unknown = [name for name in learners if name not in {row["student_id"] for row in roster}]
    if unknown:
        raise SettingsError(f"not in the roster {settings.roster_path}: {', '.join(unknown)}")
    return roster


def issue(settings: Settings, learners: list[str], out: Path, replace: bool) -> dict[str, Path]:
    """A new token for each learner (every roster learner when ``learners`` is empty), written to
    ``out/<learner>.token`` (readable by the owner only); with ``replace=False`` learners who hold a token
    keep it. Returns learner -> token file."""
    roster = _roster_with(settings, learners)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for row in roster:
        name = row["student_id"]
        if (learners and name not in learners) or (not replace and (row.get(HASH_COLUMN) or "").strip()):
            continue
        token = PREFIX + secrets.token_urlsafe(32)
        path = out / f"{name}.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        row[HASH_COLUMN] = token_hash(token)
        written[name] = path
    settings.write_roster(roster)
    return written


def revoke(settings: Settings, learners: list[str]) -> list[str]:
    """Empty the hashes of these learners: their tokens stop working at the service's next request."""
    roster = _roster_with(settings, learners)
    for row in roster:
        if row["student_id"] in learners:
            row[HASH_COLUMN] = ""
    settings.write_roster(roster)
    return learners
