"""What-if simulations on the real PostgreSQL: a simulation writes no event (the count and
the chain's head unchanged), goes from queued to done under the scheduler, gives the
same result whatever its page size, a difference of zero under the rules in force, and
a running simulation whose process is gone goes back to the queue (or fails, visibly,
after ATTEMPTS_MAX starts)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.bootstrap import Container
from ledger.domain import EPOCH, AmendBooking, CancelBooking, CompleteBooking, ConfirmBooking, ProgramRules
from ledger.domain.earn import RecordActivity
from ledger.domain.rulebook import RuleBook, RuleVersion
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.handlers import CommandRequest
from ledger.simulations import ATTEMPTS_MAX, SimulationRunner, SimulationStore, replay

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
RULES = {**DEFAULT_RULES_DICT, "version": "s.1", "promotions": [], "activities": {
    "social.shared": {"points": 50}, "review.submitted": {"points": 30}},
    "caps": [{"source": "social.shared", "period": "month", "max_points": 80}]}
PRODUCTS = ("flight", "hotel", "rail", "car", "package")


async def _history(container: Container) -> None:
    # The rules of the test in force from the epoch, with the published exchange rates (CNY converts).
    container.swap_book(RuleBook([RuleVersion(ProgramRules.from_dict(RULES), EPOCH)], container.book.fx))
    requests = []
    for i in range(60):
        cls = ConfirmBooking if i % 4 == 0 else CompleteBooking
        requests.append(CommandRequest(cls(f"m{i % 9}", T0 + timedelta(days=i * 3), f"B{i}", PRODUCTS[i % 5],
                                           Decimal(40 + 17 * i), "CNY" if i % 3 == 0 and i % 5 != 1 else "EUR")))
    for i in range(4):
        requests.append(CommandRequest(RecordActivity("m1", T0 + timedelta(days=i), f"s{i}", "social.shared",
                                                      "wechat")))
    requests += [
        CommandRequest(RecordActivity("m2", T0, "r1", "review.submitted")),
        CommandRequest(CancelBooking("m0", T0 + timedelta(days=200), "B0")),
        CommandRequest(AmendBooking("m1", T0 + timedelta(days=200), "B1", "refunded", refund_amount=Decimal(20))),
        CommandRequest(AmendBooking("m2", T0 + timedelta(days=200), "B2", "amended", amount=Decimal(500))),
    ]
    outcomes = await container.ledger.handle_batch(requests)
    assert all(o.status == "applied" for o in outcomes), [o for o in outcomes if o.status != "applied"]


async def _chain(container: Container) -> tuple[Any, ...]:
    return tuple(await container.pool.fetchrow(
        "SELECT count(*), max(position), (SELECT hash FROM events ORDER BY position DESC LIMIT 1) FROM events"))


def _request(rules: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    return {"rules": {**rules, "effective_from": "2026-01-01T00:00:00+00:00"}, "from": start.isoformat(),
            "to": end.isoformat()}


async def _run_all(container: Container, runner: SimulationRunner, ids: list[str]) -> list[tuple[str, ...]]:
    """Runs the scheduler until every one of `ids` has ended: the statuses seen on the way."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    store = SimulationStore(container.pool)
    seen: list[tuple[str, ...]] = []
    try:
        async with asyncio.timeout(15):
            while True:
                statuses = tuple([(await store.get(i)).status for i in ids])  # type: ignore[union-attr]
                if not seen or seen[-1] != statuses:
                    seen.append(statuses)
                if not {"queued", "running"} & set(statuses):
                    return seen
                await asyncio.sleep(0.005)
    finally:
        stop.set()
        await task


async def test_a_simulation_writes_no_event_and_runs_from_queued_to_done(container: Container) -> None:
    await _history(container)
    before = await _chain(container)
    store = SimulationStore(container.pool)
    start, end = T0, T0 + timedelta(days=366)
    same, created = await store.create(_request(RULES, start, end), "k-same", "admin-key", 10)
    assert created and same.status == "queued" and same.result is None
    again, created = await store.create(_request(RULES, start, end), "k-same", "admin-key", 10)
    assert (again.simulation_id, created) == (same.simulation_id, False)
    doubled_rules = {**RULES, "earn_rates": {**RULES["earn_rates"], "hotel": {"EUR": "20"}}}
    doubled, _ = await store.create(_request(doubled_rules, start, end), "k-double", "admin-key", 10)

    runner = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=7, poll_s=0.05)
    seen = await _run_all(container, runner, [same.simulation_id, doubled.simulation_id])
    # One at a time, in the order asked for: queued, running, done.
    assert seen[0] == ("queued", "queued") and seen[-1] == ("done", "done")
    assert ("running", "queued") in seen and all(s != ("running", "running") for s in seen)
    assert await _chain(container) == before  # nothing appended, the chain's head where it was

    done = await store.get(same.simulation_id)
    assert done is not None and done.status == "done" and done.error is None and done.attempts == 1
    assert done.position == done.head == before[1] and done.finished_at is not None
    result = done.result
    assert result is not None
    earns = await container.pool.fetchval(
        "SELECT count(*) FROM events WHERE type IN ('PointsEarned', 'ActivityPointsEarned')"
        " AND occurred_at >= $1 AND occurred_at < $2", start, end)
    assert result["earns"] == earns == 65 and result["take_backs"] == 3 and result["not_earned"] == 0
    for rows in ("by_product", "by_tier", "by_rule"):
        assert {r["difference"] for r in result[rows]} == {0}, rows
    assert result["net"]["difference"] == result["liability"]["difference"] == 0
    assert any(r["rule"] == "cap:social.shared:month" and r["actual"] < 0 for r in result["by_rule"])
    actual = await container.pool.fetchval(
        "SELECT sum((data->>'points')::bigint) FROM events WHERE type IN ('PointsEarned', 'ActivityPointsEarned')")
    assert result["earned"]["actual"] == actual

    other = (await store.get(doubled.simulation_id)).result  # type: ignore[union-attr]
    assert other is not None
    hotel = {r["rule"]: r for r in other["by_rule"]}["base:hotel:EUR"]
    assert hotel["simulated"] == 2 * hotel["actual"] > 0  # whole amounts in euros: the base doubles exactly
    assert {r["product"] for r in other["by_product"] if r["difference"]} == {"hotel"}
    assert {r["difference"] for r in other["by_product"] if r["product"] != "hotel"} == {0}


async def test_the_page_size_changes_nothing_but_the_memory_and_a_narrow_window_only_its_earns(
        container: Container) -> None:
    await _history(container)
    head = await container.store.head()
    draft = ProgramRules.from_dict({**RULES, "version": "d", "tiers": [
        {"name": "member", "threshold": 0, "multiplier": "1.5"}], "expiry_months": 1, "cost_per_point": "0.02"})
    start, end = T0 + timedelta(days=30), T0 + timedelta(days=120)
    results = []
    async with container.pool.acquire() as conn:
        for page in (3, 50, 10_000):
            result = await replay(conn, draft, container.book, start, end, head, page)
            assert result.pop("replay")["page_events"] == page
            results.append(result)
    assert results[0] == results[1] == results[2]
    result = results[0]
    assert result["earns"] == 30 and result["earned"]["simulated"] > result["earned"]["actual"]
    # A month's expiry: the earns before the last month of the window are gone at its end.
    assert result["liability"]["simulated"] < result["earned"]["simulated"]
    assert result["liability"]["actual"] == result["earned"]["actual"] + result["taken_back"]["actual"]


async def test_a_running_simulation_whose_process_is_gone_is_queued_again_then_failed(container: Container) -> None:
    store = SimulationStore(container.pool)
    sim, _ = await store.create(_request(RULES, T0, T0 + timedelta(days=1)), "k-orphan", "admin-key", 10)
    runner = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=100, poll_s=0.05)
    # As a process that claimed it and died would leave it: running, its lock held by no one.
    await container.pool.execute("UPDATE simulations SET status = 'running', attempts = 1 WHERE simulation_id = $1",
                                 sim.simulation_id)
    assert await runner.requeue_orphans() == 1
    assert (await store.get(sim.simulation_id)).status == "queued"  # type: ignore[union-attr]
    await container.pool.execute("UPDATE simulations SET status = 'running', attempts = $2 WHERE simulation_id = $1",
                                 sim.simulation_id, ATTEMPTS_MAX)
    assert await runner.requeue_orphans() == 1
    failed = await store.get(sim.simulation_id)
    assert failed is not None and failed.status == "failed" and "stopped" in (failed.error or "")


async def test_at_most_running_max_run_at_once_and_the_queue_is_bounded(container: Container) -> None:
    store = SimulationStore(container.pool)
    for i in range(3):
        await store.create(_request(RULES, T0, T0 + timedelta(days=1)), f"k{i}", "admin-key", 3)
    from ledger.simulations import QueueFull

    with pytest.raises(QueueFull):
        await store.create(_request(RULES, T0, T0 + timedelta(days=1)), "k3", "admin-key", 3)
    runner = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=100, poll_s=0.05)
    other = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=100, poll_s=0.05)
    conn = await asyncpg.connect(container.url)  # a session of its own, as another process has
    try:
        claimed = await runner._claim(conn)  # running, its lock held by this session
        assert claimed is not None
        assert not await other._start_one()  # one at a time over every process
        assert await other.requeue_orphans() == 0  # someone holds it
    finally:
        await conn.close()  # the session's locks go with it: as a process that stopped
    assert await other.requeue_orphans() == 1
    ids = [r[0] for r in await container.pool.fetch("SELECT simulation_id FROM simulations")]
    seen = await _run_all(container, other, ids)
    assert all(statuses.count("running") <= 1 for statuses in seen) and seen[-1] == ("done",) * 3


async def test_a_clean_stop_puts_a_running_simulation_back_in_the_queue_to_start_over(container: Container) -> None:
    await _history(container)
    store = SimulationStore(container.pool)
    sim, _ = await store.create(_request(RULES, T0, T0 + timedelta(days=366)), "k-stop", "admin-key", 10)
    runner = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=1, poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    async with asyncio.timeout(10):
        while (await store.get(sim.simulation_id)).status != "running":  # type: ignore[union-attr]
            await asyncio.sleep(0.002)
    stop.set()
    await task
    stopped = await store.get(sim.simulation_id)
    assert stopped is not None and (stopped.status, stopped.attempts, stopped.result) == ("queued", 0, None)
    other = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=1_000, poll_s=0.05)
    assert (await _run_all(container, other, [sim.simulation_id]))[-1] == ("done",)  # its lock went with the run


async def test_a_simulation_whose_connection_is_cut_goes_back_to_the_queue_and_the_scheduler_goes_on(
    container: Container,
) -> None:
    """A database that goes away under a running simulation is not the simulation's fault:
    it is neither failed nor does it take the scheduler down (a supervised task shown down
    in /readyz); the next pass finds it running with no session holding its lock, puts it
    back in the queue, and it runs again to the end."""
    from ledger.simulations import LOCK_CLASS

    await _history(container)
    store = SimulationStore(container.pool)
    sim, _ = await store.create(_request(RULES, T0, T0 + timedelta(days=366)), "k-cut", "admin-key", 10)
    runner = SimulationRunner(container.pool, lambda: container.book, running_max=1, page_events=1, poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    try:
        async with asyncio.timeout(10):
            while (await store.get(sim.simulation_id)).status != "running" or not (pids := await container.pool.fetch(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid"
                    " AND objid <> 0 AND objsubid = 2 AND granted", LOCK_CLASS)):  # type: ignore[union-attr]
                await asyncio.sleep(0.002)
        assert len(pids) == 1
        assert await container.pool.fetchval("SELECT pg_terminate_backend($1)", pids[0]["pid"])
        async with asyncio.timeout(15):
            while (await store.get(sim.simulation_id)).status != "done":  # type: ignore[union-attr]
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    done = await store.get(sim.simulation_id)
    assert done is not None and done.error is None and done.attempts == 2 and done.result is not None
