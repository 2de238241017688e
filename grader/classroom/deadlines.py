"""Deadlines: which submission of a learner counts, and with what late penalty.

A due instant has an explicit time zone. A submission at the due instant is on time; from one second after
it, each started 24 h deducts ``penalty_percent`` of the points possible, the total deduction capped at
``cap_percent``, the score floored at 0. An extension is another due instant for one learner. The score that
counts is the best of the latest on-time submission's score and every late submission's penalised score (on a
tie, the on-time one); a learner without a submission has no score (an empty cell, not 0).
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = timedelta(hours=24)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its time zone ("2026-12-18T23:59:00+01:00" or "...Z"); a naive one is refused."""
    instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{text!r} has no time zone: write it as 2026-12-18T23:59:00+01:00 (or Z for UTC)")
    return instant


@dataclass(frozen=True)
class Deadline:
    """An assignment's due instant (time-zone aware) and its late penalty: ``penalty_percent`` of the points
    possible per started 24 h late, at most ``cap_percent`` in all."""

    due: datetime
    penalty_percent: float = 0.0
    cap_percent: float = 100.0

    def __post_init__(self):
        if self.due.tzinfo is None or self.due.utcoffset() is None:
            raise ValueError("a due instant needs its time zone (a naive datetime is ambiguous)")
        if not 0 <= self.penalty_percent <= 100 or not 0 <= self.cap_percent <= 100:
            raise ValueError("the penalty and its cap are percentages of the points possible, from 0 to 100")

    def for_learner(self, extension: datetime | None) -> "Deadline":
        """The same penalty, with the learner's extension (a new due instant) when there is one."""
        return self if extension is None else Deadline(extension, self.penalty_percent, self.cap_percent)

    def days_late(self, submitted: datetime) -> int:
        """Started 24-hour periods after the due instant: 0 up to the due instant itself, 1 from a second after."""
        late = submitted - self.due
        return 0 if late <= timedelta(0) else math.ceil(late / DAY)

    def penalised(self, score: float, possible: float, submitted: datetime) -> float:
        """``score`` less the late deduction, floored at 0."""
        deduction = min(self.days_late(submitted) * self.penalty_percent, self.cap_percent) / 100 * possible
        return max(score - deduction, 0.0)


@dataclass(frozen=True)
class Submission:
    receipt: str
    submitted: datetime  # the service's receipt time, time-zone aware
    score: float
    possible: float


@dataclass(frozen=True)
class Counted:
    receipt: str
    score: float  # after the penalty
    days_late: int


def counted_score(submissions: list[Submission], deadline: Deadline) -> Counted | None:
    """The submission that counts for one learner under ``deadline`` (their extension already applied), or None
    when they submitted nothing."""
    on_time = [s for s in submissions if deadline.days_late(s.submitted) == 0]
    late = [s for s in submissions if deadline.days_late(s.submitted) > 0]
    candidates = []
    if on_time:
        latest = max(on_time, key=lambda s: s.submitted)
        candidates.append(Counted(latest.receipt, latest.score, 0))
    for s in sorted(late, key=lambda s: s.submitted):
        candidates.append(Counted(s.receipt, deadline.penalised(s.score, s.possible, s.submitted),
                                  deadline.days_late(s.submitted)))
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.score, c.days_late == 0))  # the first best; on a tie, on time
