"""Expiry at scale, on a real PostgreSQL: any number of lots due, in bounded appends."""

from __future__ import annotations

import time
from datetime import timedelta

from ledger.bootstrap import Container
from ledger.domain import PointsEarned
from ledger.domain.decider import booking_lot_id
from ledger.expiry import EXPIRY_BATCH_EVENTS_MAX, expire_due
from ledger.store import StreamAppend
from ledger.store.events import GENESIS_HASH

from .helpers import T0

BIG_LOTS = 25_000  # more than one append takes (the store's bound is 20,000 events)
SMALL_MEMBERS, SMALL_LOTS = 100, 3
CHUNK = 10_000


def _earned(booking_id: str, points: int) -> PointsEarned:
    return PointsEarned(T0, booking_lot_id(booking_id), booking_id, "flight", "10.00", "EUR", points, points, "active",
                        T0 + timedelta(days=30 + points % 7), "2026.1", (("base:flight:EUR", points),))


async def _append_lots(container: Container, member_id: str, lots: int) -> None:
    """`lots` active lots for the member, straight into the store (deciding 25,000 earns
    one by one would take far longer than the expiry under test)."""
    version, prev = 0, GENESIS_HASH
    for start in range(0, lots, CHUNK):
        events = [_earned(f"{member_id}-B{i}", 1 + i % 50) for i in range(start, min(start + CHUNK, lots))]
        request = StreamAppend(member_id, version, prev, events)
        await container.store.append([request])
        version, prev = version + len(events), request.hashes[-1]


async def test_one_pass_expires_25000_lots_of_one_member_and_100_members_in_bounded_appends(
    container: Container,
) -> None:
    await _append_lots(container, "big", BIG_LOTS)
    for i in range(SMALL_MEMBERS):
        await _append_lots(container, f"m{i:03}", SMALL_LOTS)
    await container.project()
    earned = {r[0]: r[1] for r in await container.pool.fetch("SELECT member_id, available FROM balances")}
    now = T0 + timedelta(days=60)

    started = time.perf_counter()
    appended = await expire_due(container.ledger, container.pool, now)
    elapsed = time.perf_counter() - started
    print(f"expired {appended} lots in {elapsed:.1f} s")

    assert appended == BIG_LOTS + SMALL_MEMBERS * SMALL_LOTS
    # Every append stayed inside the expiry's bound (recorded_at is the transaction's time).
    per_append = await container.pool.fetch(
        "SELECT count(*) AS n FROM events WHERE type = 'PointsExpired' GROUP BY recorded_at")
    assert len(per_append) >= 3 and max(r["n"] for r in per_append) <= EXPIRY_BATCH_EVENTS_MAX
    assert await expire_due(container.ledger, container.pool, now) == 0  # the projection behind: nothing twice

    await container.project()
    assert await expire_due(container.ledger, container.pool, now) == 0
    assert await container.pool.fetchval(
        "SELECT count(*) FROM expiry_lots WHERE status = 'active' AND remaining > 0 AND expires_at <= $1", now) == 0
    rows = await container.pool.fetch("SELECT member_id, available, lifetime_expired FROM balances")
    assert {r[0]: (r[1], r[2]) for r in rows} == {m: (0, points) for m, points in earned.items()}
    big = await container.ledger.member_state("big")
    assert big.version == 2 * BIG_LOTS and big.available(now) == 0
    assert not big.lots and all(lot.remaining == 0 and lot.expired == lot.points for lot in big.all_lots().values())
