"""Customer value segments: placement at the thresholds' edges, the top share, the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import DEFAULT_RULES, ProgramRules, SegmentRules
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.domain.segments import Segment, in_top, place, top_count, window

NOW = datetime(2027, 6, 30, 12, 0, tzinfo=UTC)
RULES = SegmentRules(value_min=Decimal("2000"), bookings_min=3, tenure_days_min=365)
LOYAL_SINCE = NOW - timedelta(days=365)  # exactly the tenure


@pytest.mark.parametrize(("value", "bookings", "first_at", "segment"), [
    (Decimal("2000"), 3, LOYAL_SINCE, Segment.champions),  # every threshold met exactly
    (Decimal("1999.99"), 3, LOYAL_SINCE, Segment.loyal_regulars),  # a cent short of high value
    (Decimal("2000"), 2, LOYAL_SINCE, Segment.big_spenders),  # a booking short of loyal
    (Decimal("2000"), 3, LOYAL_SINCE + timedelta(microseconds=1), Segment.big_spenders),  # tenure a moment short
    (Decimal("1999.99"), 2, LOYAL_SINCE, Segment.occasional),
    (Decimal("0"), 0, NOW, Segment.occasional),
    (Decimal("1000000"), 50, NOW - timedelta(days=10), Segment.big_spenders),  # many bookings, no tenure yet
    (Decimal("10"), 1, NOW - timedelta(days=4000), Segment.occasional),  # long tenure, one booking
])
def test_placement_at_the_thresholds_edges(value: Decimal, bookings: int, first_at: datetime,
                                           segment: Segment) -> None:
    assert place(value, bookings, first_at, NOW, RULES) is segment


def test_the_window_is_the_months_before_now_clamped_to_the_month_end() -> None:
    assert window(NOW, RULES).start == datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    assert window(datetime(2027, 3, 31, tzinfo=UTC), SegmentRules(window_months=1)).start == datetime(
        2027, 2, 28, tzinfo=UTC)


def test_the_top_share_takes_its_places_rounded_up_and_a_whole_tie_at_the_edge() -> None:
    assert [top_count(n, RULES) for n in (0, 1, 4, 5, 6, 10, 11)] == [0, 1, 1, 1, 2, 2, 3]
    # 10 members: two places. The second of value (one above it) is in, and so is a tie for
    # second (one above each); the next value down has three above it: out.
    assert in_top(Decimal(500), 0, 10, RULES) and in_top(Decimal(400), 1, 10, RULES)
    assert not in_top(Decimal(300), 2, 10, RULES)
    assert not in_top(Decimal(0), 0, 10, RULES)  # nobody spent anything: no top


def test_rules_files_set_the_segments_and_default_them() -> None:
    assert DEFAULT_RULES.segments == SegmentRules()
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "programme_currency": "GBP", "segments": {
        "window_months": 6, "value_min": "1500.50", "bookings_min": 2, "tenure_days_min": 90,
        "top_share": "0.1"}})
    assert rules.segments == SegmentRules("GBP", 6, Decimal("1500.50"), 2, 90, Decimal("0.1"))
    assert ProgramRules.from_dict({**DEFAULT_RULES_DICT, "segments": {"bookings_min": 5}}).segments == SegmentRules(
        bookings_min=5)


@pytest.mark.parametrize("segments", [
    {"top_share": "0"}, {"top_share": "1.5"}, {"window_months": 0}, {"value_min": "-1"}, {"currency": "euro"},
    {"bookings_min": -1}, {"tenure_days_min": 40_000}, {"value_threshold": 5},
])
def test_rules_files_with_segments_out_of_bounds_are_refused(segments: dict) -> None:
    with pytest.raises(ValueError, match="segments"):
        ProgramRules.from_dict({**DEFAULT_RULES_DICT, "segments": segments})
