"""Runs the process's background tasks (projection runner, expiry scheduler, Kafka
consumer, embedded database watchdog) so that none ends silently.

A task is an async function of a stop event that runs until the event is set. When
one raises (anything but cancellation) the supervisor logs the traceback once, counts
the failure, marks the task down, waits a back-off and calls it again; a task that
returns while the supervisor is not stopping is a failure too. `status()` feeds
/readyz (not ready while a task is down) and `TaskCollector` feeds /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Task = Callable[[asyncio.Event], Awaitable[None]]

BACKOFF_S_MIN = 0.1
BACKOFF_S_MAX = 30.0
HEALTHY_S = 30.0  # a run this long resets the back-off to its minimum
STOP_TIMEOUT_S = 30.0  # then the tasks still running are cancelled
ERROR_CHARS_MAX = 500
REPORT_S = 1.0  # how often a process reports its tasks' statuses to the one that shows them
REPORT_STALE_S = 10.0  # a report older than this shows the reporting process's tasks down


class Backoff:
    """Exponential back-off with jitter: `next()` gives a delay between half and all
    of the current step, which doubles from `s_min` up to `s_max`."""

    def __init__(self, s_min: float = BACKOFF_S_MIN, s_max: float = BACKOFF_S_MAX) -> None:
        assert 0 < s_min <= s_max
        self.s_min, self.s_max = s_min, s_max
        self.step = s_min

    def next(self) -> float:
        step, self.step = self.step, min(self.step * 2, self.s_max)
        return step * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.step = self.s_min


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class TaskStatus:
    up: bool = False
    restarts: int = 0
    failures: int = 0
    last_error: str | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {"up": self.up, "restarts": self.restarts, "failures": self.failures, "last_error": self.last_error,
                "since": self.since.isoformat()}


class ReportedTasks:
    """The task statuses other processes report (the projection process of `ledger
    serve`), by source, to show with this process's own as `source/task`: a task of theirs
    that is down makes this process not ready too, and so does a source whose last report
    is older than `stale_s` (a process that hangs, or stopped reporting)."""

    def __init__(self, stale_s: float = REPORT_STALE_S) -> None:
        self.stale_s = stale_s
        self._sources: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}

    def set(self, source: str, statuses: dict[str, dict[str, Any]]) -> None:
        self._sources[source] = (time.monotonic(), statuses)

    def clear(self, source: str) -> None:
        self._sources.pop(source, None)

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        now = time.monotonic()
        for source, (at, statuses) in self._sources.items():
            silent = now - at > self.stale_s
            for task, s in statuses.items():
                out[f"{source}/{task}"] = ({**s, "up": False, "last_error": f"no report from {source} for {now - at:.0f} s"}
                                          if silent else s)
        return out


class Supervisor:
    def __init__(self, *, backoff_s_min: float = BACKOFF_S_MIN, backoff_s_max: float = BACKOFF_S_MAX,
                 healthy_s: float = HEALTHY_S, reported: ReportedTasks | None = None) -> None:
        self.backoff_s_min, self.backoff_s_max, self.healthy_s = backoff_s_min, backoff_s_max, healthy_s
        self.reported = reported
        self.stop_event = asyncio.Event()
        self._tasks: dict[str, Task] = {}
        self._status: dict[str, TaskStatus] = {}
        self._running: list[asyncio.Task[None]] = []

    def add(self, name: str, task: Task) -> None:
        assert name not in self._tasks, f"two tasks named {name!r}"
        assert not self._running, "tasks are added before start()"
        self._tasks[name] = task
        self._status[name] = TaskStatus()

    def start(self) -> None:
        for name, task in self._tasks.items():
            self._running.append(asyncio.create_task(self._keep(name, task), name=f"supervised:{name}"))

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Set the stop event, wait for the tasks (bounded), then cancel what is left."""
        self.stop_event.set()
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=timeout_s)
        for t in pending:
            log.error("task %s did not stop within %.0f s; cancelling it", t.get_name(), timeout_s)
            t.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()

    def status(self) -> dict[str, dict[str, Any]]:
        own = {name: s.as_dict() for name, s in self._status.items()}
        return own if self.reported is None else {**own, **self.reported.status()}

    @property
    def all_up(self) -> bool:
        return all(s.up for s in self._status.values()) and (
            self.reported is None or all(s["up"] for s in self.reported.status().values()))

    async def _keep(self, name: str, task: Task) -> None:
        status, stop = self._status[name], self.stop_event
        backoff = Backoff(self.backoff_s_min, self.backoff_s_max)
        while not stop.is_set():
            started = time.monotonic()
            status.up, status.since = True, datetime.now(UTC)
            failure: BaseException | None = None
            try:
                await task(stop)
            except asyncio.CancelledError as exc:
                # Cancelled from outside (stop() past its timeout, the loop shutting
                # down): end. Raised by the task's own code while nobody cancelled it (a
                # library's inner task that was cancelled, a stray cancel()), it would end
                # this loop with the task still shown up and nothing logged: a failure.
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    status.up = False
                    raise
                failure = exc
            except Exception as exc:
                failure = exc
            if failure is None and stop.is_set():
                break
            error = ("returned while the process was running" if failure is None
                     else f"{type(failure).__name__}: {failure}"[:ERROR_CHARS_MAX])
            status.up, status.last_error, status.since = False, error, datetime.now(UTC)
            status.failures += 1
            if stop.is_set():
                log.error("task %s failed while stopping", name, exc_info=failure)
                return
            if time.monotonic() - started >= self.healthy_s:
                backoff.reset()
            delay = backoff.next()
            if failure is None:
                log.error("task %s %s; starting it again in %.1f s", name, error, delay)
            else:
                log.error("task %s failed; starting it again in %.1f s", name, delay, exc_info=failure)
            await sleep_or_stop(stop, delay)
            if not stop.is_set():
                status.restarts += 1
        status.up = False


async def supervise_until(stop: asyncio.Event, tasks: dict[str, Task],
                          report: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> Supervisor:
    """Run `tasks` under a supervisor of their own until `stop` is set: what a process
    with no HTTP server (`ledger consume`, `ledger projections run --follow`) runs.
    `report`: called with the tasks' statuses every `REPORT_S` (see `ReportedTasks`)."""
    supervisor = Supervisor()
    for name, task in tasks.items():
        supervisor.add(name, task)
    supervisor.start()
    try:
        if report is None:
            await stop.wait()
        else:
            while not stop.is_set():
                report(supervisor.status())
                await sleep_or_stop(stop, REPORT_S)
    finally:
        await supervisor.stop()
    return supervisor


class TaskCollector(Collector):
    """`ledger_task_up{task}` and `ledger_task_failures_total{task}` of whichever
    supervisor `find()` returns (None: not started, no metrics)."""

    def __init__(self, find: Callable[[], Supervisor | None]) -> None:
        self.find = find

    def collect(self) -> Iterator[Metric]:
        supervisor = self.find()
        if supervisor is None:
            return
        up = GaugeMetricFamily("ledger_task_up", "1 while the background task runs, 0 while it waits to restart",
                               labels=["task"])
        failures = CounterMetricFamily("ledger_task_failures", "Times the background task raised or returned"
                                       " unasked since the process started", labels=["task"])
        for name, s in supervisor.status().items():
            up.add_metric([name], 1 if s["up"] else 0)
            failures.add_metric([name], s["failures"])
        yield up
        yield failures
