"""The course's classroom settings: ``classroom.toml`` at the course's root, and the roster it names.

    roster = "roster.csv"          # one row per learner: student_id, and the columns below

    [deadlines."02-self-attention"]
    due = "2026-12-18T23:59:00+01:00"   # an instant with its time zone
    penalty_percent = 10                # of the points possible, per started 24 h late
    cap_percent = 50                    # the most a late submission loses

    [service]
    hidden_scores = "at-once"      # or "after-deadline": hidden cells' results shown once the learner's due instant passed
    daily_limit = 0                # submissions per learner, assignment and UTC day (0: no limit)
    max_upload_mb = 5              # the largest notebook accepted

    [canvas]                       # see grader/classroom/canvas.py

The roster's columns: ``student_id`` (the course's id: the hub user name, or the standalone token's learner),
``token_sha256`` (written by ``llmcourse grade tokens``: hashes only), ``extension <assignment>`` (a learner's
own due instant), and Canvas's learner columns.
"""

import csv
import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from grader.classroom.deadlines import Deadline, parse_instant

CONFIG = "classroom.toml"
EXTENSION = "extension "  # roster columns "extension 02-self-attention"
HIDDEN_POLICIES = ("at-once", "after-deadline")


class SettingsError(ValueError):
    """classroom.toml or the roster says something the course cannot use; the message says what to write."""


@dataclass
class Settings:
    root: Path
    roster_path: Path
    deadlines: dict = field(default_factory=dict)  # assignment -> Deadline
    hidden_scores: str = "at-once"
    daily_limit: int = 0
    max_upload_bytes: int = 5 * 2**20
    raw: dict = field(default_factory=dict)  # the whole file, for the Canvas section
    _roster: tuple = field(default=(None, []), repr=False)  # (the file's (mtime, size) when read, its rows)

    @classmethod
    def load(cls, root: Path) -> "Settings":
        """The settings of the course at ``root`` (defaults when it has no classroom.toml)."""
        path = Path(root) / CONFIG
        try:
            raw = tomllib.loads(path.read_text()) if path.is_file() else {}
        except tomllib.TOMLDecodeError as err:
            raise SettingsError(f"{path} does not parse: {err}") from None
        roster = raw.get("roster") or raw.get("canvas", {}).get("roster") or "roster.csv"
        settings = cls(Path(root), Path(root) / str(roster), raw=raw)
        for assignment, entry in raw.get("deadlines", {}).items():
            try:
                settings.deadlines[assignment] = Deadline(parse_instant(str(entry["due"])),
                                                          float(entry.get("penalty_percent", 0)),
                                                          float(entry.get("cap_percent", 100)))
            except (KeyError, ValueError) as err:
                raise SettingsError(f"{path}: [deadlines.\"{assignment}\"] needs due = \"2026-12-18T23:59:00+01:00\" "
                                    f"(with its time zone) and percentages from 0 to 100 ({err})") from None
        service = raw.get("service", {})
        settings.hidden_scores = str(service.get("hidden_scores", "at-once"))
        if settings.hidden_scores not in HIDDEN_POLICIES:
            raise SettingsError(f"{path}: [service] hidden_scores is {settings.hidden_scores!r}; write one of "
                                f"{', '.join(HIDDEN_POLICIES)}")
        try:
            settings.daily_limit = int(service.get("daily_limit", 0))
            settings.max_upload_bytes = int(float(service.get("max_upload_mb", 5)) * 2**20)
        except (TypeError, ValueError):
            raise SettingsError(f"{path}: [service] daily_limit is a whole number and max_upload_mb a number") from None
        return settings

    # ------------------------------------------------------------ the roster

    def roster(self) -> list[dict]:
        """The roster's rows ([] when there is no roster file), read again only when the file changed (a token
        revoked or an extension granted counts at the next request); each call gets its own copy to edit."""
        try:
            stat = self.roster_path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return []
        if version != self._roster[0]:
            with open(self.roster_path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and "student_id" not in rows[0]:
                raise SettingsError(f"the roster {self.roster_path} has no student_id column (the course's id of "
                                    f"each learner)")
            self._roster = (version, rows)
        return [dict(row) for row in self._roster[1]]

    def write_roster(self, rows: list[dict]) -> None:
        """Rewrite the roster with these rows, keeping its columns in order (new ones at the end), atomically."""
        columns = list(dict.fromkeys(["student_id", *(k for row in rows for k in row)]))
        partial = self.roster_path.with_name(self.roster_path.name + ".partial")
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, self.roster_path)

    def deadline_for(self, assignment: str, learner: str, roster: list[dict] | None = None) -> Deadline | None:
        """The assignment's deadline for this learner (their extension applied), or None when it has none."""
        deadline = self.deadlines.get(assignment)
        if deadline is None:
            return None
        for row in self.roster() if roster is None else roster:
            if row["student_id"] == learner and (row.get(EXTENSION + assignment) or "").strip():
                try:
                    return deadline.for_learner(parse_instant(row[EXTENSION + assignment]))
                except ValueError as err:
                    raise SettingsError(f"the roster {self.roster_path}: {learner}'s {EXTENSION}{assignment}: "
                                        f"{err}") from None
        return deadline

    def hidden_visible(self, assignment: str, learner: str, now: datetime) -> bool:
        """Whether a learner may see their hidden cells' results now."""
        if self.hidden_scores == "at-once":
            return True
        deadline = self.deadline_for(assignment, learner)
        return deadline is None or now > deadline.due
