"""Customer value segments: the four quadrants of scale (value) by loyalty, and the top
share of members by value (the 80/20 view). Pure: the read side sums the spend and the
bookings of the window, and places the members by these functions (or, for a whole
programme at once, by the same comparisons in SQL, held to these by the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from math import ceil

from .rules import SegmentRules
from .timeutil import add_months


class Segment(StrEnum):
    """The quadrants, in the names CRM teams use for them."""

    champions = "champions"  # high value, high loyalty: keep and reward
    big_spenders = "big_spenders"  # high value, low loyalty: win their repeat business
    loyal_regulars = "loyal_regulars"  # low value, high loyalty: grow their spend
    occasional = "occasional"  # low value, low loyalty


QUADRANTS: dict[tuple[bool, bool], Segment] = {  # (high value, high loyalty) -> segment
    (True, True): Segment.champions,
    (True, False): Segment.big_spenders,
    (False, True): Segment.loyal_regulars,
    (False, False): Segment.occasional,
}


@dataclass(frozen=True, slots=True)
class Window:
    """The bookings that count at `now`: earned after `start`, up to `now` inclusive."""

    start: datetime
    now: datetime


def window(now: datetime, rules: SegmentRules) -> Window:
    return Window(add_months(now, -rules.window_months), now)


def high_value(value: Decimal, rules: SegmentRules) -> bool:
    return value >= rules.value_min


def high_loyalty(bookings: int, first_at: datetime, now: datetime, rules: SegmentRules) -> bool:
    """Repeat bookings in the window and a tenure, both: a member who booked three times
    in their first week is not loyal yet, nor one of many years who booked once."""
    return bookings >= rules.bookings_min and now - first_at >= timedelta(days=rules.tenure_days_min)


def place(value: Decimal, bookings: int, first_at: datetime, now: datetime, rules: SegmentRules) -> Segment:
    return QUADRANTS[(high_value(value, rules), high_loyalty(bookings, first_at, now, rules))]


def top_count(members: int, rules: SegmentRules) -> int:
    """How many places the top share takes: the share of the members, rounded up."""
    return ceil(members * rules.top_share)


def in_top(value: Decimal, higher: int, members: int, rules: SegmentRules) -> bool:
    """Whether a member of `value`, below `higher` members of more value, is in the top
    share: ranked (ties share the rank, so all of a tie at the edge are in) within the
    top places, and with some value (a member who spent nothing is in no top)."""
    return value > 0 and higher < top_count(members, rules)
