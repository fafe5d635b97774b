"""Projections on a real PostgreSQL: live run, rebuild, the fold, expiry."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ledger.bootstrap import Container
from ledger.domain import (
    AdjustPoints,
    CancelBooking,
    CompleteBooking,
    EarnReversed,
    PendingPointsActivated,
    PointsEarned,
    RefundBooking,
    tier_status,
)
from ledger.expiry import expire_due
from ledger.handlers import CommandRequest
from projections.runner import TABLES, ProjectionRunner, checkpoint, rebuild

from .helpers import T0, earn, redeem


async def _tables(container: Container) -> dict[str, list]:
    out = {}
    for table in TABLES:
        rows = await container.pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
        out[table] = [dict(r) for r in rows]
    return out


async def _indexes(container: Container) -> list[tuple[str, str]]:
    """Each read-model table's index definitions, without the indexes' names."""
    rows = await container.pool.fetch(
        "SELECT tablename, regexp_replace(indexdef, 'INDEX \\S+ ON', 'INDEX ON') FROM pg_indexes"
        " WHERE tablename = ANY($1::text[]) ORDER BY 1, 2", list(TABLES),
    )
    return [(r[0], r[1]) for r in rows]


async def _history(container: Container, members: int = 40, seed: int = 7) -> None:
    rnd = random.Random(seed)
    ledger = container.ledger
    for step in range(6):
        at = T0 + timedelta(days=40 * step)
        batch = []
        for m in range(members):
            member, booking = f"m{m}", f"B{step}-{m}"
            batch.append(earn(member, booking, f"{rnd.randint(10, 3000)}.{rnd.randint(0, 99):02d}",
                              pending=rnd.random() < 0.3, at=at))
        await ledger.handle_batch(batch)
        follow = []
        for m in range(members):
            member = f"m{m}"
            r = rnd.random()
            if r < 0.3:
                follow.append(redeem(member, rnd.randint(1, 3000), f"r{step}-{m}", at=at + timedelta(hours=1)))
            elif r < 0.4:
                follow.append(CommandRequest(CancelBooking(member, at + timedelta(hours=2), f"B{step}-{m}")))
            elif r < 0.5:
                follow.append(CommandRequest(RefundBooking(member, at + timedelta(hours=2), f"B{step}-{m}")))
            elif r < 0.6:
                follow.append(CommandRequest(AdjustPoints(member, at, f"a{step}-{m}", rnd.randint(-500, 500) or 1,
                                                          "complaint", "support")))
        await ledger.handle_batch(follow)
        await container.runner.run_once()  # interleave live projection with writes


async def test_live_projections_equal_the_fold_and_a_rebuild(container: Container) -> None:
    await _history(container)
    await container.runner.run_until_caught_up()
    live = await _tables(container)
    assert await checkpoint(container.pool) == await container.store.head()

    for row in live["balances"]:
        state = await container.ledger.member_state(row["member_id"])
        assert row["available"] == state.balance
        assert row["pending"] == state.pending
        # The tier is shown as of the member's last qualifying change (or first event).
        stream = [s.event for s in await container.store.read_stream(row["member_id"])]
        as_of = max([stream[0].occurred_at] + [
            e.occurred_at for e in stream
            if isinstance(e, PointsEarned | PendingPointsActivated) and not (isinstance(e, PointsEarned)
                                                                             and e.status == "pending")
            or isinstance(e, EarnReversed) and e.qualifying_points
        ])
        status = tier_status(state.qualifying_entries(), as_of, container.rules)
        tier_row = next(t for t in live["tier_status"] if t["member_id"] == row["member_id"])
        assert tier_row["as_of"] == as_of
        assert (tier_row["tier"], tier_row["qualifying_points"]) == (status.tier, status.qualifying_points)
        lots = {r["lot_id"]: r["remaining"] for r in live["expiry_lots"] if r["member_id"] == row["member_id"]}
        assert lots == {lot_id: lot.remaining for lot_id, lot in state.all_lots().items()}

    parameters = "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])"
    before = dict(await container.pool.fetch(parameters, TABLES))
    assert before["balances"] == ["fillfactor=70"]
    await container.pool.execute("ALTER TABLE expiry_lots SET (autovacuum_enabled = true)")
    position = await rebuild(container.pool, container.store, container.rules, page_size=97)
    assert position == await container.store.head()
    assert await _tables(container) == live
    # The rebuilt tables have the live ones' storage parameters (HOT updates stay HOT).
    after = dict(await container.pool.fetch(parameters, TABLES))
    assert after == {**before, "expiry_lots": ["autovacuum_enabled=true"]}
    # The live runner carries on from the rebuilt tables without applying anything twice.
    await container.ledger.handle(earn("m0", "after-rebuild"))
    await container.runner.run_until_caught_up()
    after = await container.pool.fetchval("SELECT available FROM balances WHERE member_id = 'm0'")
    assert after == (await container.ledger.member_state("m0")).balance


async def test_page_size_does_not_change_the_read_models(container: Container) -> None:
    await _history(container, members=15, seed=3)
    await container.runner.run_until_caught_up()
    live = await _tables(container)
    await rebuild(container.pool, container.store, container.rules, page_size=1)
    assert await _tables(container) == live
    # Every member spans several pages, and the members are shared out among processes.
    await rebuild(container.pool, container.store, container.rules, page_size=1, workers=2, dsn=container.url)
    assert await _tables(container) == live


async def test_a_rebuild_in_worker_processes_equals_the_live_projections(container: Container) -> None:
    await _history(container, members=30, seed=11)
    # Dated away from UTC on a day that is 29 February in UTC: the tier window starts
    # twelve months before the as-of date on the UTC calendar (28 February 2027), not on
    # the event's own (1 March 2027 in UTC), and the rebuild must count it so too.
    new_york = timezone(timedelta(hours=-5))
    await container.ledger.handle_batch([
        earn(f"m{m}", f"leap-{m}", f"{100 * m + 50}.00", at=datetime(2028, 2, 28, 20, m, tzinfo=new_york))
        for m in range(0, 30, 3)
    ])
    await container.runner.run_until_caught_up()
    live, indexes = await _tables(container), await _indexes(container)
    head = await container.store.head()
    reported: list[tuple[int, int]] = []
    position = await rebuild(container.pool, container.store, container.rules, page_size=7, workers=2,
                             dsn=container.url, progress=lambda done, total: reported.append((done, total)))
    assert position == head
    assert await _tables(container) == live
    assert indexes and await _indexes(container) == indexes  # built after the rows were copied
    # Autovacuum, off while the rows were copied, is on again: the storage parameters left
    # are the live tables' (migration 0006).
    assert dict(await container.pool.fetch(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])", list(TABLES)
    )) == {"balances": ["fillfactor=70"], "tier_status": ["fillfactor=70"], "tier_qualifying": None,
           "expiry_lots": None, "household_members": None}
    assert reported[-1] == (head, head)


async def test_a_failed_worker_fails_the_rebuild_and_leaves_the_read_models_alone(container: Container) -> None:
    await _history(container, members=10, seed=13)
    await container.runner.run_until_caught_up()
    live = await _tables(container)
    position = await checkpoint(container.pool)
    with pytest.raises(OSError):  # the spawned process cannot connect
        await rebuild(container.pool, container.store, container.rules, workers=2,
                      dsn="postgresql://nobody@127.0.0.1:1/nowhere")
    assert await _tables(container) == live
    assert await checkpoint(container.pool) == position


async def test_events_appended_during_a_rebuild_are_in_the_rebuilt_tables(container: Container) -> None:
    await _history(container, members=15, seed=5)
    await container.runner.run_until_caught_up()
    head = await container.store.head()
    appending: list[asyncio.Future] = []

    def append_while_replaying(done: int, total: int) -> None:
        if not appending:
            appending.append(asyncio.ensure_future(container.ledger.handle_batch(
                [earn(f"m{m}", "during-rebuild", at=T0 + timedelta(days=400)) for m in range(15)]
                + [earn("new-member", "during-rebuild", at=T0 + timedelta(days=400))]
            )))

    # Small pages: the replay yields often, so the appends commit while it runs.
    position = await rebuild(container.pool, container.store, container.rules, page_size=5, workers=1,
                             progress=append_while_replaying)
    await asyncio.gather(*appending)
    assert head < position == await container.store.head()  # what was appended was caught up on
    assert await checkpoint(container.pool) == position
    rebuilt = await _tables(container)
    for row in rebuilt["balances"]:
        assert row["available"] == (await container.ledger.member_state(row["member_id"])).balance
    assert any(row["member_id"] == "new-member" for row in rebuilt["tier_status"])
    # The same tables as a rebuild with nothing appended meanwhile.
    await rebuild(container.pool, container.store, container.rules, page_size=97, workers=1)
    assert await _tables(container) == rebuilt
    await container.runner.run_until_caught_up()
    assert await _tables(container) == rebuilt


async def test_expiry_scheduler_expires_what_is_left_once(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn(f"m{i}", "B1", at=T0) for i in range(5)])
    await ledger.handle(redeem("m0", 400, "r0", at=T0 + timedelta(days=1)))
    await container.runner.run_until_caught_up()
    later = T0 + timedelta(days=800)
    assert await expire_due(ledger, container.pool, T0 + timedelta(days=30)) == 0
    assert await expire_due(ledger, container.pool, later) == 5
    # Before the projection has caught up the same members are due again: nothing more.
    assert await expire_due(ledger, container.pool, later) == 0
    await container.runner.run_until_caught_up()
    assert await expire_due(ledger, container.pool, later) == 0
    rows = await container.pool.fetch("SELECT member_id, available, lifetime_expired FROM balances ORDER BY 1")
    assert [(r["available"], r["lifetime_expired"]) for r in rows] == [(0, 600)] + [(0, 1000)] * 4


@pytest.mark.parametrize("cached_members", [100_000, 3, 0])
async def test_runners_taking_turns_with_cached_tier_rows_equal_a_rebuild(
        container: Container, cached_members: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live runner's tier recompute works from its cached qualifying rows: across
    small pages, over two years (rows leave the window and the cache), with pending
    bookings completed, cancelled and refunded, bookings dated before the member's
    latest, a page that fails, a cache that evicts (3) or is off (0), and a second
    runner writing some pages, after which the first must not trust what it holds."""
    rnd = random.Random(5)
    first, second = (ProjectionRunner(container.pool, container.store, container.rules, page_size=size,
                                      tier_cache_members_max=cached_members) for size in (7, 3))
    for runner in (first, second):
        runner.tiers.PRUNE_ABOVE = 2  # drop rows out of the window as soon as there are three
    taken = []
    for step in range(9):
        at = T0 + timedelta(days=90 * step)
        pending = [rnd.random() < 0.4 for _ in range(12)]
        batch = [earn(f"m{m}", f"B{step}-{m}", f"{rnd.randint(10, 3000)}.00", pending=pending[m],
                      at=at + timedelta(minutes=m)) for m in range(12)]
        await container.ledger.handle_batch(batch)
        follow = []
        for m in range(12):
            r, member, booking = rnd.random(), f"m{m}", f"B{step}-{m}"
            if pending[m]:  # completed days later (it activates then), or cancelled
                command = (CompleteBooking(member, at + timedelta(days=3), booking, "flight", Decimal("100.00"), "EUR")
                           if r < 0.7 else CancelBooking(member, at + timedelta(days=1), booking))
            else:  # refunded now and then, or followed by a booking dated months before
                command = RefundBooking(member, at + timedelta(days=5), booking) if r < 0.2 else None
                if r > 0.85:
                    follow.append(earn(member, f"late-{step}-{m}", "500.00", at=at - timedelta(days=200)))
            if command is not None:
                follow.append(CommandRequest(command))
        results = await container.ledger.handle_batch(follow)
        assert any(r.status == "applied" for r in results), [(r.status, r.error) for r in results]
        if step == 4:  # a page that fails leaves nothing behind, in the tables or the cache
            def failing(*args: object, **kwargs: object) -> None:
                raise OSError("connection lost")

            with monkeypatch.context() as patch:
                patch.setattr("projections.tiers._upsert_status", failing)
                patch.setattr("projections.models.write_tier_status", failing)
                with pytest.raises(OSError):
                    await first.run_once()
            assert len(first.tiers) == 0
        # Pages from either runner, in turns that shift with the step.
        for turn in range(rnd.randint(2, 6)):
            runner = first if (turn + step) % 3 else second
            taken.append(await runner.run_once())
    for runner in (first, second, first):
        await runner.run_until_caught_up()
    # The window's start moves back as the as-of date moves from 28 to 29 February: a row
    # out of the window on the first page counts again on the next.
    for when in ("2027-02-28T06:00", "2027-06-01T00:00", "2027-09-01T00:00", "2028-02-28T12:00",
                 "2028-02-29T01:00"):
        await container.ledger.handle(earn("leap", f"L-{when}", "900.00", at=datetime.fromisoformat(when + "+00:00")))
        await first.run_until_caught_up()
    assert sum(taken) > 0
    assert 0 < len(first.tiers) <= cached_members if cached_members else len(first.tiers) == 0
    leap = await container.pool.fetchrow("SELECT qualifying_points, as_of FROM tier_status WHERE member_id = 'leap'")
    every_row = await container.pool.fetchval("SELECT sum(points) FROM tier_qualifying WHERE member_id = 'leap'")
    assert leap["as_of"] == datetime(2028, 2, 29, 1, tzinfo=UTC) and leap["qualifying_points"] == every_row
    live = await _tables(container)
    assert any(row["tier"] != "member" for row in live["tier_status"])  # some reached a tier
    await rebuild(container.pool, container.store, container.rules, page_size=97, workers=1)
    assert await _tables(container) == live
