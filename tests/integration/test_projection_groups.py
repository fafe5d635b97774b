"""The two projection groups: the member read models and the reports each have their own
checkpoint, lock and runner, so the reports can neither hold up nor break what members
read, and under load they wait for the member runner, for a bounded time."""

from __future__ import annotations

import asyncio
import time

import pytest

from ledger.bootstrap import Container
from projections.models import MEMBERS, REPORTS
from projections.runner import ProjectionRunner, checkpoint

from .helpers import earn


async def _until(predicate, seconds: float = 10.0) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < seconds, "not within the bound"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_the_reports_runner_waits_while_the_member_runner_is_busy_then_catches_up(
        container: Container) -> None:
    await container.ledger.handle_batch([earn(f"m{i}", f"B{i}") for i in range(30)])
    await container.runner.run_until_caught_up()  # the member group only
    head = await container.store.head()
    reports = ProjectionRunner(container.pool, container.store, page_size=5, idle_ms=10,
                               group=REPORTS, defer_to=container.runner, defer_max_s=1.0)
    container.runner.busy = True  # as under a backlog: its last page was full
    container.runner.backlogged = True
    stop = asyncio.Event()
    task = asyncio.create_task(reports.run_forever(stop))
    try:
        await asyncio.sleep(0.4)
        assert await checkpoint(container.pool, REPORTS) == 0  # deferred
        # Behind for the bound: it catches up, page by page, though the load goes on.
        waited = await _until(lambda: _at_least(container, head))
        assert waited < 2.0
        # Caught up, it waits again for the bound before it takes the next events.
        await container.ledger.handle_batch([earn(f"n{i}", f"B{i}") for i in range(12)])
        # (By another member runner: the one deferred to stays as set, backlogged.)
        await ProjectionRunner(container.pool, container.store).run_until_caught_up()
        container.runner.busy = container.runner.backlogged = True
        await asyncio.sleep(0.3)
        assert await checkpoint(container.pool, REPORTS) == head
        head = await container.store.head()
        assert await _until(lambda: _at_least(container, head), 5.0) < 2.0
        # The load eased: it takes what comes at once.
        container.runner.busy = container.runner.backlogged = False
        await container.ledger.handle_batch([earn("late", "B1")])
        head = await container.store.head()
        assert await _until(lambda: _at_least(container, head), 5.0) < 0.5
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_under_a_steady_load_the_reports_runner_takes_each_full_page_as_it_comes(
        container: Container) -> None:
    """The member runner keeps up (its pages are not full): the reports' runner takes a
    page as soon as a full one is waiting, rather than after its bound, and waits while
    less is."""
    reports = ProjectionRunner(container.pool, container.store, page_size=5, idle_ms=10,
                               group=REPORTS, defer_to=container.runner, defer_max_s=60.0)
    await container.ledger.handle_batch([earn(f"m{i}", f"B{i}") for i in range(3)])
    await container.runner.run_until_caught_up()
    container.runner.busy, container.runner.backlogged = True, False  # as under a steady load
    stop = asyncio.Event()
    task = asyncio.create_task(reports.run_forever(stop))
    try:
        await asyncio.sleep(0.3)
        assert await checkpoint(container.pool, REPORTS) == 0  # less than a page waiting
        await container.ledger.handle_batch([earn(f"n{i}", f"B{i}") for i in range(4)])
        head = await container.store.head()
        # (By another member runner: the one deferred to stays as set, keeping up.)
        await ProjectionRunner(container.pool, container.store).run_until_caught_up()
        container.runner.position = head
        assert await _until(lambda: _at_least(container, 5), 5.0) < 1.0  # a full page: taken at once
        await asyncio.sleep(0.3)
        assert await checkpoint(container.pool, REPORTS) < await container.store.head()  # the rest waits
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_reports_runner_takes_the_events_the_member_runner_read(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's two runners share the events read lately: the reports' runner, a
    page behind, neither reads them from the server again nor decodes them again."""
    await container.ledger.handle_batch([earn(f"m{i}", f"B{i}") for i in range(30)])
    await container.runner.run_until_caught_up()
    reads = []
    read_all = container.store.read_all

    async def counted(after: int, limit: int, **kwargs: object) -> list:
        events = await read_all(after, limit, **kwargs)
        reads.append(len(events))
        return events

    monkeypatch.setattr(container.store, "read_all", counted)
    await container.reports_runner.run_until_caught_up()
    assert await checkpoint(container.pool, REPORTS) == await container.store.head()
    assert sum(reads) == 0, "the events were read again"


async def _at_least(container: Container, position: int) -> bool:
    return await checkpoint(container.pool, REPORTS) >= position


async def test_the_member_read_models_go_on_while_the_reports_are_locked_or_failing(container: Container) -> None:
    """A reports page held up (its lock taken, as by a long page or a rebuild elsewhere) or
    refused by the database (a report bug) leaves the member read models current."""
    await container.ledger.handle_batch([earn("a", "B1")])
    await container.project()
    async with container.pool.acquire() as blocker:
        await blocker.execute("SELECT pg_advisory_lock($1)", REPORTS.lock_id)
        try:
            await container.ledger.handle_batch([earn("a", "B2")])
            await asyncio.wait_for(container.runner.run_until_caught_up(), 5)
            assert await container.pool.fetchval("SELECT available FROM balances WHERE member_id = 'a'") == (
                (await container.ledger.member_state("a")).balance)
            assert await container.pool.fetchval("SELECT count(*) FROM expiry_lots WHERE member_id = 'a'") == 2
            with_lock = asyncio.create_task(container.reports_runner.run_once())
            await asyncio.sleep(0.2)
            assert not with_lock.done()  # waits for the lock, not for the member group
        finally:
            await blocker.execute("SELECT pg_advisory_unlock($1)", REPORTS.lock_id)
        assert await asyncio.wait_for(with_lock, 5) == 1
    async with container.pool.acquire() as conn:
        await conn.execute("ALTER TABLE activity_days ADD CONSTRAINT refuse_every_row CHECK (kind = '') NOT VALID")
    await container.ledger.handle_batch([earn("a", "B3")])
    try:
        await container.reports_runner.run_once()
        raise AssertionError("the reports page should have been refused")
    except Exception as exc:  # noqa: BLE001 - the database's refusal, whichever class asyncpg gives it
        assert "refuse_every_row" in str(exc)
    await container.runner.run_until_caught_up()
    head = await container.store.head()
    assert await checkpoint(container.pool, MEMBERS) == head
    assert await checkpoint(container.pool, REPORTS) < head
