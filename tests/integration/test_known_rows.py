"""The live runner writes no row a page would leave as it is: a member's anniversary
start and its first event (the segments' tenure) are written once, not again with every
booking, unless an earlier event comes; what it knows is dropped when another runner
wrote the tables, and the rows stay what a rebuild gives."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from ledger.bootstrap import Container
from projections.runner import rebuild

from .helpers import T0, earn


async def _versions(container: Container, member: str) -> tuple[object, object]:
    """The anniversaries' row version (xmin) and whether the segments' member row was
    touched since its insert (xmax: set by an update or a lock)."""
    anniversary = await container.pool.fetchval(
        "SELECT xmin::text FROM member_anniversaries WHERE member_id = $1", member)
    first = await container.pool.fetchval("SELECT xmax::text FROM segment_members WHERE member_id = $1", member)
    return anniversary, first


async def _rows(container: Container, member: str) -> tuple[object, object]:
    return (await container.pool.fetchrow("SELECT since, next_year, due_at FROM member_anniversaries"
                                          " WHERE member_id = $1", member),
            await container.pool.fetchval("SELECT first_at FROM segment_members WHERE member_id = $1", member))


async def test_later_bookings_leave_the_members_first_rows_alone_an_earlier_one_moves_them(
        container: Container) -> None:
    await container.ledger.handle_batch([earn("m1", "B1", at=T0 + timedelta(days=10))])
    await container.project()
    anniversary, first = await _versions(container, "m1")
    assert first == "0"
    for i in range(2, 5):  # a page each
        await container.ledger.handle_batch([earn("m1", f"B{i}", at=T0 + timedelta(days=10 + i))])
        await container.project()
    assert await _versions(container, "m1") == (anniversary, "0"), "the rows were written again"
    # A booking that happened earlier (sent late) moves both back.
    await container.ledger.handle_batch([earn("m1", "B0", at=T0)])
    await container.project()
    (since, _, _), first_at = await _rows(container, "m1")
    assert since == T0 and first_at == T0
    live = await _rows(container, "m1")
    await rebuild(container.pool, container.store, workers=1)
    assert await _rows(container, "m1") == live
    # After the rebuild (another writer), what the runners knew is dropped, not trusted.
    await container.ledger.handle_batch([earn("m1", "B9", at=T0 - timedelta(days=1))])
    await container.project()
    (since, _, _), first_at = await _rows(container, "m1")
    assert since == T0 - timedelta(days=1) and first_at == T0 - timedelta(days=1)


async def test_a_lot_an_earn_makes_found_stored_already_turns_the_plain_inserts_off(container: Container) -> None:
    """The lots and qualifying rows an earn makes go in as plain inserts; should the
    server ever hold one already, the page fails once and is written with upserts, as
    every page after it."""
    await container.ledger.handle_batch([earn("m1", "B1")])
    await container.pool.execute(
        "INSERT INTO expiry_lots (member_id, lot_id, status, points, remaining, expires_at)"
        " VALUES ('m1', 'booking:B1', 'active', 0, 0, NULL)")
    runner = container.runner
    assert runner.known.insert_new
    with pytest.raises(asyncpg.UniqueViolationError):
        await runner.run_once()
    assert not runner.known.insert_new
    assert await runner.run_once() == 1
    points, remaining = await container.pool.fetchrow(
        "SELECT points, remaining FROM expiry_lots WHERE member_id = 'm1' AND lot_id = 'booking:B1'")
    available = await container.pool.fetchval("SELECT available FROM balances WHERE member_id = 'm1'")
    assert points == remaining == available > 0
