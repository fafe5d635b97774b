"""The supervisor restarts failed tasks with back-off, counts them and reports them."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ledger.supervisor import Backoff, ReportedTasks, Supervisor, TaskCollector, supervise_until


async def _until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_failing_task_is_logged_counted_reported_down_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    calls = {"flaky": 0, "quitter": 0, "steady": 0}
    healthy = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise asyncpg.InternalClientError("cannot switch to state 15")
        healthy.set()
        await stop.wait()

    async def quitter(stop: asyncio.Event) -> None:
        calls["quitter"] += 1  # returns at once: ending silently is a failure too

    async def steady(stop: asyncio.Event) -> None:
        calls["steady"] += 1
        await stop.wait()

    supervisor = Supervisor(backoff_s_min=0.01, backoff_s_max=0.05)
    for name, task in (("flaky", flaky), ("quitter", quitter), ("steady", steady)):
        supervisor.add(name, task)
    registry = CollectorRegistry()
    registry.register(TaskCollector(lambda: supervisor))
    with caplog.at_level(logging.ERROR, logger="ledger.supervisor"):
        supervisor.start()
        await asyncio.wait_for(healthy.wait(), 5)
        await _until(lambda: calls["quitter"] >= 3)
        status = supervisor.status()
        assert status["flaky"]["up"] and status["flaky"]["failures"] == 2 and status["flaky"]["restarts"] == 2
        assert status["flaky"]["last_error"] == "InternalClientError: cannot switch to state 15"
        assert status["quitter"]["failures"] >= 2 and "returned" in status["quitter"]["last_error"]
        assert status["steady"] == {**status["steady"], "up": True, "failures": 0, "restarts": 0}
        text = generate_latest(registry).decode()
        assert 'ledger_task_failures_total{task="flaky"} 2.0' in text
        assert 'ledger_task_up{task="steady"} 1.0' in text
        await supervisor.stop(timeout_s=5)
    assert calls["steady"] == 1
    assert not supervisor.all_up
    tracebacks = [r for r in caplog.records if r.exc_info and "flaky" in r.getMessage()]
    assert len(tracebacks) == 2  # once per failure


async def test_a_task_down_is_not_up_until_its_back_off_is_over() -> None:
    async def broken(stop: asyncio.Event) -> None:
        raise OSError("connection refused")

    supervisor = Supervisor(backoff_s_min=10, backoff_s_max=10)
    supervisor.add("broken", broken)
    registry = CollectorRegistry()
    registry.register(TaskCollector(lambda: supervisor))
    supervisor.start()
    await _until(lambda: supervisor.status()["broken"]["failures"] == 1)
    assert not supervisor.all_up
    assert 'ledger_task_up{task="broken"} 0.0' in generate_latest(registry).decode()
    await supervisor.stop(timeout_s=5)  # the back-off wait ends with the stop
    assert supervisor.status()["broken"]["restarts"] == 0


async def test_a_task_that_ignores_stop_is_cancelled_after_the_timeout() -> None:
    async def stubborn(stop: asyncio.Event) -> None:
        await asyncio.sleep(3600)

    supervisor = Supervisor()
    supervisor.add("stubborn", stubborn)
    supervisor.start()
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await supervisor.stop(timeout_s=0.05)


def test_backoff_doubles_to_its_bound_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next() for _ in range(8)]
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.1


async def test_a_task_that_raises_cancelled_error_unasked_is_a_failure_not_a_silent_end(
        caplog: pytest.LogCaptureFixture) -> None:
    # A CancelledError escaping a task's own code (say, from a library's inner task) while
    # nobody cancelled the supervisor ended its loop: no log, no count, still shown up.
    calls = 0
    healthy = asyncio.Event()

    async def stray(stop: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError()
        healthy.set()
        await stop.wait()

    supervisor = Supervisor(backoff_s_min=0.01, backoff_s_max=0.05)
    supervisor.add("stray", stray)
    with caplog.at_level(logging.ERROR, logger="ledger.supervisor"):
        supervisor.start()
        await asyncio.wait_for(healthy.wait(), 5)
    status = supervisor.status()["stray"]
    assert (status["up"], status["failures"], status["restarts"]) == (True, 1, 1)
    assert status["last_error"].startswith("CancelledError")
    assert any("stray" in r.getMessage() and r.exc_info for r in caplog.records)
    await supervisor.stop(timeout_s=5)
    assert not supervisor.all_up


async def test_a_task_that_ignores_stop_is_still_cancelled_by_stop() -> None:
    cancelled = asyncio.Event()

    async def stubborn(stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    supervisor = Supervisor(backoff_s_min=0.01, backoff_s_max=0.05)
    supervisor.add("stubborn", stubborn)
    supervisor.start()
    await asyncio.sleep(0.05)
    await supervisor.stop(timeout_s=0.2)
    assert cancelled.is_set() and supervisor.status()["stubborn"]["up"] is False


async def test_tasks_another_process_reports_show_and_count_and_go_down_when_it_falls_silent() -> None:
    """A process's own tasks and those another reports (`source/task`): one of theirs
    down, or a source silent past `stale_s`, makes the whole not up; `supervise_until`
    reports its tasks' statuses as it runs."""
    reported = ReportedTasks(stale_s=0.2)
    supervisor = Supervisor(reported=reported)

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.add("own", steady)
    supervisor.start()
    try:
        await _until(lambda: supervisor.all_up)
        stop, reports = asyncio.Event(), []
        child = asyncio.create_task(supervise_until(stop, {"runner": steady}, report=reports.append))
        await _until(lambda: reports and reports[-1]["runner"]["up"])
        reported.set("child", reports[-1])
        assert set(supervisor.status()) == {"own", "child/runner"} and supervisor.all_up
        reported.set("child", {"runner": {**reports[-1]["runner"], "up": False, "failures": 1, "last_error": "boom"}})
        assert not supervisor.all_up and supervisor.status()["child/runner"]["last_error"] == "boom"
        registry = CollectorRegistry()
        registry.register(TaskCollector(lambda: supervisor))
        assert 'ledger_task_failures_total{task="child/runner"} 1.0' in generate_latest(registry).decode()
        reported.set("child", reports[-1])
        assert supervisor.all_up
        await asyncio.sleep(0.3)  # no report since: silent past stale_s
        silent = supervisor.status()["child/runner"]
        assert not silent["up"] and "no report from child" in silent["last_error"] and not supervisor.all_up
        reported.clear("child")
        assert supervisor.all_up
        stop.set()
        await child
    finally:
        await supervisor.stop()
