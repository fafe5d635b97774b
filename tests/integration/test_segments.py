"""Customer value segments on a real PostgreSQL: the live read model equals a rebuild's,
and the segments read from it equal a recomputation from the events."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from ledger.bootstrap import Container
from ledger.domain import (
    AmendBooking,
    BookingAmended,
    CompleteBooking,
    EarnReversed,
    HOUSEHOLD_STREAM_PREFIX,
    PointsEarned,
    SegmentRules,
)
from ledger.domain.segments import Segment, in_top, place, window
from ledger.handlers import CommandRequest
from projections.runner import rebuild
from projections.segment_queries import member_segment, segments_overview

from .helpers import T0, earn
from .test_projections import _history

SEGMENT_TABLES = ("segment_bookings", "segment_members")
# Lower than the defaults, so that the history's six bookings in 200 days fill every quadrant.
RULES = SegmentRules(value_min=Decimal("6000"), bookings_min=4, tenure_days_min=120)


async def _segment_tables(container: Container) -> dict[str, list]:
    return {t: [dict(r) for r in await container.pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in SEGMENT_TABLES}


async def _out_of_order_cases(container: Container) -> None:
    """A member whose later page holds an earlier event (a backdated booking), bookings in
    another currency, and an amendment and a cancellation of bookings a page before."""
    ledger, runner = container.ledger, container.runner
    await ledger.handle(earn("late", "L1", "9000.00", at=T0 + timedelta(days=150)))
    await ledger.handle(CommandRequest(CompleteBooking("gbp", T0, "G1", "hotel", Decimal("9000.00"), "GBP")))
    await ledger.handle(earn("gbp", "G2", "10.00", at=T0 + timedelta(days=100)))
    await runner.run_until_caught_up()
    await ledger.handle(earn("late", "L0", "50.00", at=T0 + timedelta(days=10)))
    await ledger.handle(CommandRequest(AmendBooking("late", T0 + timedelta(days=151), "L1", "amended",
                                                    amount=Decimal("7000.00"))))
    await ledger.handle(CommandRequest(AmendBooking("gbp", T0 + timedelta(days=101), "G2", "refunded",
                                                    refund_amount=Decimal("10.00"))))


def _recomputed(events: list, now: datetime, rules: SegmentRules) -> dict[str, tuple[Decimal, int, datetime]]:
    """member -> (value, bookings, first event) at `now`, from the events alone."""
    bookings: dict[tuple[str, str], list] = {}
    first: dict[str, datetime] = {}
    for stored in events:
        member, e = stored.stream_id, stored.event
        if member.startswith(HOUSEHOLD_STREAM_PREFIX):
            continue
        first[member] = min(first.get(member, e.occurred_at), e.occurred_at)
        if isinstance(e, PointsEarned):
            bookings[(member, e.booking_id)] = [e.occurred_at, e.currency, Decimal(e.amount)]
        elif isinstance(e, BookingAmended):
            bookings[(member, e.booking_id)][2] = Decimal(e.amount)
        elif isinstance(e, EarnReversed):
            bookings[(member, e.booking_id)][2] = Decimal(0)
    start = window(now, rules).start
    out = {m: (Decimal(0), 0, at) for m, at in first.items() if at <= now}
    for (member, _), (earned_at, currency, amount) in bookings.items():
        if member in out and start < earned_at <= now and amount > 0:
            value, count, at = out[member]
            out[member] = (value + (amount if currency == rules.currency else 0), count + 1, at)
    return out


async def test_segments_equal_a_recomputation_from_the_events_live_and_rebuilt(container: Container) -> None:
    await _history(container, members=30, seed=11)
    await _out_of_order_cases(container)
    await container.project()
    live = await _segment_tables(container)
    assert next(r for r in live["segment_members"] if r["member_id"] == "late")["first_at"] == T0 + timedelta(days=10)

    await rebuild(container.pool, container.store, page_size=13, workers=2, dsn=container.url)
    assert await _segment_tables(container) == live
    await rebuild(container.pool, container.store, page_size=97, workers=1)
    assert await _segment_tables(container) == live

    events = await container.store.read_all(0, 50_000)
    # Before the history's end, after it, and where the window has left its first bookings behind.
    for now in (T0 + timedelta(days=150), T0 + timedelta(days=205), T0 + timedelta(days=450)):
        expected = _recomputed(events, now, RULES)
        ranked = sorted(v for v, _, _ in expected.values())
        placed = {m: (place(v, n, at, now, RULES), in_top(v, sum(1 for x in ranked if x > v), len(expected), RULES))
                  for m, (v, n, at) in expected.items()}
        overview = await segments_overview(container.pool, now, RULES)
        assert overview.members == len(expected)
        assert overview.value == sum(v for v, _, _ in expected.values())
        assert {t.segment: (t.members, t.value) for t in overview.segments} == {
            s: (sum(1 for m in placed if placed[m][0] is s),
                sum((expected[m][0] for m in placed if placed[m][0] is s), Decimal(0))) for s in Segment}
        assert overview.top_members == sum(1 for p in placed.values() if p[1])
        assert overview.top_value == sum((expected[m][0] for m, p in placed.items() if p[1]), Decimal(0))
        for member, (value, count, first_at) in expected.items():
            found = await member_segment(container.pool, member, now, RULES)
            assert found is not None
            assert (found.value, found.bookings, found.first_at, found.segment, found.in_top, found.top.members) == (
                value, count, first_at, placed[member][0], placed[member][1], len(expected)), member
        if now == T0 + timedelta(days=205):
            assert all(t.members for t in overview.segments), overview  # every quadrant has members
            assert 0 < overview.top_members < overview.members
            gbp = expected["gbp"]
            assert gbp[1] == 1 and gbp[0] == 0  # the GBP booking counts for loyalty, not value; G2 refunded
            assert expected["late"][0] == Decimal("7050.00")
    assert await member_segment(container.pool, "nobody", T0 + timedelta(days=205), RULES) is None
    assert await member_segment(container.pool, "late", T0, RULES) is None  # not a member yet
