"""The deadline rule of issue 23 (grader/classroom/deadlines.py): on time up to the due instant itself, each
started 24 h late costs the penalty, capped, floored at 0; the best of the latest on-time score and each late
penalised score counts, the on-time one on a tie; no submission, no score."""

from datetime import datetime, timedelta, timezone

import pytest

from grader.classroom.deadlines import Deadline, Submission, counted_score, parse_instant

DUE = parse_instant("2026-12-18T23:59:00+01:00")
RULE = Deadline(DUE, penalty_percent=10, cap_percent=30)


def sub(receipt, after, score, possible=10.0):
    return Submission(receipt, DUE + after, score, possible)


def test_instants_need_their_time_zone():
    assert parse_instant("2026-12-18T22:59:00Z") == DUE
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2026-12-18T23:59:00")
    with pytest.raises(ValueError, match="time zone"):
        Deadline(datetime(2026, 12, 18, 23, 59))


@pytest.mark.parametrize("after, days", [
    (timedelta(0), 0),  # at the due instant: on time
    (-timedelta(days=3), 0),
    (timedelta(seconds=1), 1),  # one second after: one started day
    (timedelta(hours=24), 1),
    (timedelta(hours=24, seconds=1), 2),
    (timedelta(days=9), 9),
])
def test_each_started_day_late_counts(after, days):
    assert RULE.days_late(DUE + after) == days


def test_the_penalty_is_a_share_of_the_points_possible_capped_and_floored_at_zero():
    assert RULE.penalised(9.0, 10.0, DUE) == 9.0
    assert RULE.penalised(9.0, 10.0, DUE + timedelta(hours=30)) == pytest.approx(7.0)  # 2 days: 20 % of 10
    assert RULE.penalised(9.0, 10.0, DUE + timedelta(days=8)) == pytest.approx(6.0)  # capped at 30 %
    assert RULE.penalised(2.0, 10.0, DUE + timedelta(days=8)) == 0.0


def test_the_best_of_the_latest_on_time_and_the_penalised_late_ones_counts():
    earlier_better = sub("r1", -timedelta(hours=5), 9.0)
    latest_on_time = sub("r2", -timedelta(hours=1), 6.0)
    late_full = sub("r3", timedelta(hours=2), 10.0)  # 1 day late: 9.0
    assert counted_score([earlier_better, latest_on_time], RULE).receipt == "r2"  # the latest on-time one
    best = counted_score([earlier_better, latest_on_time, late_full], RULE)
    assert (best.receipt, best.score, best.days_late) == ("r3", 9.0, 1)
    tie = counted_score([sub("r4", timedelta(0), 9.0), late_full], RULE)
    assert (tie.receipt, tie.days_late) == ("r4", 0)  # on a tie, the on-time one
    assert counted_score([], RULE) is None  # no submission: no score, not 0


def test_an_extension_is_the_learners_own_due_instant():
    late_for_others = sub("r5", timedelta(hours=30), 8.0)
    assert counted_score([late_for_others], RULE).score == pytest.approx(6.0)
    extended = RULE.for_learner(DUE + timedelta(days=2))
    counted = counted_score([late_for_others], extended)
    assert (counted.score, counted.days_late) == (8.0, 0)
    assert extended.due.astimezone(timezone.utc) == datetime(2026, 12, 20, 22, 59, tzinfo=timezone.utc)
