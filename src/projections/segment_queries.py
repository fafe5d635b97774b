"""Reads of the customer value segments (`projections.segments`): the programme's
segments at a time, and one member's place in them.

Each member's value and bookings are summed over the window at the time asked, from the
booking rows (the window index: only the window's rows are read). Members are placed by
the comparisons of `ledger.domain.segments` written in SQL, with the thresholds passed
in; tests/integration/test_segments.py holds the two to each other. The top share is a
ranking over every member's value, so it sums every member's window: one scan of the
window's bookings (see the README for the time it takes at 100,000 members); a member's
read takes its edge (`top_edge`) as an argument, so that the API can keep it a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from ledger.domain import SegmentRules
from ledger.domain.segments import QUADRANTS, Segment, place, top_count, window

# Every member known to the read models with their window's value (in the programme's
# currency) and bookings (any currency), and whether each is in the high half of either
# axis. $1 window start (exclusive), $2 now, $3 currency, $4 value_min, $5 bookings_min,
# $6 the latest first event that has the tenure.
_MEMBERS = """
WITH spend AS (
    SELECT member_id, coalesce(sum(amount) FILTER (WHERE currency = $3), 0) AS value, count(*) AS bookings
    FROM segment_bookings WHERE earned_at > $1 AND earned_at <= $2 AND amount > 0
    GROUP BY member_id
), members AS (
    SELECT s.member_id, coalesce(v.value, 0) AS value, coalesce(v.bookings, 0) AS bookings, s.first_at
    FROM segment_members s LEFT JOIN spend v ON v.member_id = s.member_id
    WHERE s.first_at <= $2
), placed AS (
    SELECT member_id, value, bookings, first_at, value >= $4 AS high_value,
           bookings >= $5 AND first_at <= $6 AS high_loyalty,
           rank() OVER (ORDER BY value DESC) - 1 AS higher, count(*) OVER () AS members
    FROM members
)
"""

_OVERVIEW_SQL = _MEMBERS + """
SELECT high_value, high_loyalty, count(*) AS members, sum(value) AS value,
       count(*) FILTER (WHERE top) AS top_members, coalesce(sum(value) FILTER (WHERE top), 0) AS top_value
FROM (SELECT *, value > 0 AND higher < $7 AS top FROM placed) p
GROUP BY high_value, high_loyalty
"""

# The least value among the top places (the `top_count`-th largest positive value; none
# when fewer members have any): a member is in the top share when it has at least that
# much, and some. $1 window start, $2 now, $3 currency, $4 the top's places.
_TOP_EDGE_SQL = """
SELECT sum(amount) AS value FROM segment_bookings
WHERE earned_at > $1 AND earned_at <= $2 AND amount > 0 AND currency = $3
GROUP BY member_id ORDER BY value DESC OFFSET $4 - 1 LIMIT 1
"""

# One member's window, by its primary key: $1 member, $2 window start, $3 now, $4 currency.
_MEMBER_SQL = """
SELECT s.first_at, coalesce(sum(b.amount) FILTER (WHERE b.currency = $4), 0) AS value, count(b.member_id) AS bookings
FROM segment_members s
LEFT JOIN segment_bookings b ON b.member_id = s.member_id AND b.earned_at > $2 AND b.earned_at <= $3 AND b.amount > 0
WHERE s.member_id = $1 AND s.first_at <= $3
GROUP BY s.first_at
"""


@dataclass(frozen=True, slots=True)
class SegmentTotals:
    segment: Segment
    members: int
    value: Decimal


@dataclass(frozen=True, slots=True)
class SegmentsOverview:
    now: datetime
    window_start: datetime
    members: int
    value: Decimal
    segments: list[SegmentTotals]  # every quadrant, in `Segment` order, empty ones too
    top_members: int  # ties at the edge all count, so it may pass the share's places
    top_value: Decimal
    position: int  # the read models include every event up to here


@dataclass(frozen=True, slots=True)
class TopEdge:
    """Where the top share by value starts at `now`, over `members` members."""

    now: datetime
    members: int
    value_min: Decimal | None  # the least value in it; None: every member with some value is in it

    def holds(self, value: Decimal) -> bool:
        """`ledger.domain.segments.in_top`, by the edge rather than a rank: a value at
        least the top places' least has fewer members above it than there are places."""
        return value > 0 and (self.value_min is None or value >= self.value_min)


@dataclass(frozen=True, slots=True)
class MemberSegment:
    member_id: str
    now: datetime
    window_start: datetime
    value: Decimal
    bookings: int
    first_at: datetime
    segment: Segment
    in_top: bool
    top: TopEdge
    position: int


def _parameters(now: datetime, rules: SegmentRules) -> list[object]:
    w = window(now, rules)
    return [w.start, now, rules.currency, rules.value_min, rules.bookings_min,
            now - timedelta(days=rules.tenure_days_min)]


async def _checkpoint(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT position FROM projection_checkpoints WHERE name = 'reports'"))


async def segments_overview(pool: asyncpg.Pool, now: datetime, rules: SegmentRules) -> SegmentsOverview:
    """The members, value and top share of each quadrant at `now`, in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        members = await conn.fetchval("SELECT count(*) FROM segment_members WHERE first_at <= $1", now)
        rows = await conn.fetch(_OVERVIEW_SQL, *_parameters(now, rules), top_count(members, rules))
        position = await _checkpoint(conn)
    by_quadrant = {QUADRANTS[(r["high_value"], r["high_loyalty"])]: r for r in rows}
    totals = [SegmentTotals(s, int(by_quadrant[s]["members"]) if s in by_quadrant else 0,
                            Decimal(by_quadrant[s]["value"]) if s in by_quadrant else Decimal(0)) for s in Segment]
    return SegmentsOverview(
        now=now, window_start=window(now, rules).start, members=sum(t.members for t in totals),
        value=sum((t.value for t in totals), Decimal(0)), segments=totals,
        top_members=sum(int(r["top_members"]) for r in rows),
        top_value=sum((Decimal(r["top_value"]) for r in rows), Decimal(0)), position=position,
    )


async def top_edge(pool: asyncpg.Pool, now: datetime, rules: SegmentRules) -> TopEdge:
    """Where the top share by value starts at `now`: a sum over every member's window
    (one scan of the window's bookings), which a caller may keep for a while."""
    w = window(now, rules)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        members = int(await conn.fetchval("SELECT count(*) FROM segment_members WHERE first_at <= $1", now))
        places = top_count(members, rules)
        value_min = await conn.fetchval(_TOP_EDGE_SQL, w.start, now, rules.currency, places) if places else None
    return TopEdge(now, members, value_min)


async def member_segment(pool: asyncpg.Pool, member_id: str, now: datetime, rules: SegmentRules,
                         top: TopEdge | None = None) -> MemberSegment | None:
    """The member's value, bookings, tenure and place at `now`, and whether it is in the
    top share by `top` (by default found now); None for a member the read models do not
    know (or whose first event is after `now`). An index range of the member's bookings."""
    w = window(now, rules)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(_MEMBER_SQL, member_id, w.start, now, rules.currency)
        position = await _checkpoint(conn)
    if row is None:
        return None
    if top is None:
        top = await top_edge(pool, now, rules)
    value, bookings = Decimal(row["value"]), int(row["bookings"])
    return MemberSegment(
        member_id=member_id, now=now, window_start=w.start, value=value, bookings=bookings, first_at=row["first_at"],
        segment=place(value, bookings, row["first_at"], now, rules), in_top=top.holds(value), top=top,
        position=position,
    )
