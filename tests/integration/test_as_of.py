"""Reads as of an instant on a real PostgreSQL: as of an instant after every event, each
equals what the read models answer, over the projections test's history (bookings,
redemptions, reversals, adjustments, holds, transfers, partial refunds and amendments,
debts, expiries)."""

from __future__ import annotations

from datetime import timedelta

from ledger.bootstrap import Container
from ledger.domain import tier_status
from projections.asof import _present, events_as_of, expiry_page_as_of, member_as_of, read_member_as_of
from projections.balances import COUNTERS
from projections.queries import expiry_page

from tests.unit.test_movement_properties import same

from .test_projections import _history


async def test_as_of_after_every_event_equals_the_read_models(container: Container) -> None:
    await _history(container, members=20)
    await container.project()
    pool = container.pool
    at = await pool.fetchval("SELECT max(occurred_at) FROM events") + timedelta(seconds=1)
    rows = await pool.fetch(f"SELECT member_id, {', '.join(COUNTERS)}, last_activity, position FROM balances")
    assert len(rows) > 20
    for row in rows:
        member = row["member_id"]
        events = await events_as_of(pool, member, at)
        assert [e.stream_version for e in events] == list(range(1, len(events) + 1))
        assert len(events) == await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", member)
        got = member_as_of(member, events)
        assert got is not None
        assert got.totals == {c: row[c] for c in COUNTERS}, member
        assert (got.last_activity, got.position) == (row["last_activity"], row["position"])
        # The member as it is, without the fold: the same answer.
        present = await _present(pool, member, at, container.ledger.member_state)
        assert present is not None
        assert (present.totals, present.last_activity, present.position) == (
            got.totals, got.last_activity, got.position)
        same(present.state, got.state)
        assert await _present(pool, member, events[-1].event.occurred_at - timedelta(microseconds=1),
                              container.ledger.member_state) is None  # its last event is after that
        entries = await pool.fetch("SELECT earned_at, points FROM tier_qualifying WHERE member_id = $1", member)
        live_tier = tier_status([(r["earned_at"], r["points"]) for r in entries], at, container.rules)
        assert tier_status(got.state.qualifying_entries(), at, container.rules) == live_tier, member
        horizon = at + timedelta(days=800)
        live_page = await expiry_page(pool, member, at, horizon, None, 1_000)
        assert expiry_page_as_of(got.state, at, horizon, None, 1_000) == live_page, member
        # Paged two lots at a time, the same lots.
        lots, after = [], None
        for _ in range(1_000):
            page = expiry_page_as_of(got.state, at, horizon, after, 2)
            lots += page.lots
            assert page.expiring_points == live_page.expiring_points
            if page.next_after is None:
                break
            after = page.next_after
        assert live_page is not None and lots == live_page.lots
    # Before a member's first event, nothing.
    first = await pool.fetchval("SELECT min(occurred_at) FROM events WHERE stream_id = 'm0'")
    assert await read_member_as_of(pool, "m0", first - timedelta(microseconds=1)) is None
    assert await read_member_as_of(pool, "m0", first) is not None
