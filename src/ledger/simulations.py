"""What-if simulations of a draft rule set: the `simulations` table, the replay of a
window of the event log under the draft (`ledger.domain.whatif`), and the scheduler
that runs the queued ones under the supervisor. Nothing here appends an event.

The replay reads the events table by position, a page of `simulation_page_events`
positions at a time up to the head it started at (each page one bounded index range
scan, no transaction held open across pages), and keeps only the sums of
`ledger.domain.whatif.Replay` (keyed by product, tier and rule). It prices a slice of
`SLICE_ROWS` rows and then yields to the event loop, so that a simulation running in
the API's process holds the loop a few milliseconds at a time (the result records the
longest hold, `loop_block_ms_max`).

Running: at most `simulations_running_max` at once over every process (claimed under a
transaction-level advisory lock that counts the running ones). The process running a
simulation holds a session advisory lock on it for as long as it runs; a running
simulation whose lock nobody holds was left by a process that stopped, and the next
scheduler pass of any process puts it back in the queue to start over (at most
`ATTEMPTS_MAX` times, then it fails with the reason). A process that stops cleanly puts
its running simulations back in the queue itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ledger.domain.rulebook import EPOCH, RuleBook, RuleVersion
from ledger.domain.rules import ProgramRules
from ledger.domain.whatif import Replay
from ledger.store.database import DATABASE_ERRORS, UNAVAILABLE

log = logging.getLogger(__name__)

# Advisory lock keys: (LOCK_CLASS, 0) serialises claims; (LOCK_CLASS, hashtext(id)) is
# held by the session running a simulation.
LOCK_CLASS = 71_912
ATTEMPTS_MAX = 3
SLICE_ROWS = 500  # rows priced between two yields to the event loop (about 5 ms here)
ERROR_CHARS_MAX = 500
PROGRESS_S = 0.2  # a running simulation's progress is written at most this often
LIST_PAGE_MAX = 100
EARN_TYPES = ["PointsEarned", "ActivityPointsEarned", "AnniversaryBonusGranted"]
TAKE_BACK_TYPES = ["EarnReversed", "BookingAmended"]

# What each earn of the window was priced with, read from its event (see
# `ledger.domain.whatif`), and whether its points are still outstanding at the window's
# end: as issued (`expires_at`; none while pending), and under the draft's
# `expiry_months` from the earn (pending: still outstanding).
_OUTSTANDING = """
    coalesce((data->>'expires_at')::timestamptz > $4, true),
    coalesce(data->>'status' = 'pending', false)
        OR (occurred_at AT TIME ZONE 'UTC') + make_interval(months => $5) > ($4 AT TIME ZONE 'UTC')"""
_EARNS_SQL = f"""
SELECT type, occurred_at, (data->>'points')::bigint, data->>'breakdown',
       data->>'product', data->>'amount', data->>'currency', data->>'converted_amount', data->>'tier',
       data->>'activity_type', data->>'role', (data->>'year')::int, {_OUTSTANDING}
FROM events
WHERE position > $1 AND position <= $2 AND occurred_at >= $3 AND occurred_at < $4 AND type = ANY($6::text[])"""
_TAKE_BACKS_SQL = """
SELECT stream_id, type, data->>'booking_id', (data->>'points')::bigint
FROM events
WHERE position > $1 AND position <= $2 AND occurred_at >= $3 AND occurred_at < $4 AND type = ANY($5::text[])"""
# The earns of the bookings a page's take-backs name: in the members' own streams (an
# index range scan each), within the window and before the head.
_TAKEN_EARNS_SQL = f"""
SELECT stream_id, data->>'booking_id', occurred_at, (data->>'points')::bigint, data->>'breakdown',
       data->>'product', data->>'amount', data->>'currency', data->>'converted_amount', data->>'tier',
       {_OUTSTANDING}
FROM events
WHERE stream_id = ANY($1::text[]) AND type = 'PointsEarned' AND position <= $2 AND occurred_at >= $3
  AND occurred_at < $4 AND data->>'booking_id' = ANY($6::text[])"""


class QueueFull(Exception):
    """As many simulations are queued as `simulations_queued_max` allows."""


class KeyReused(Exception):
    """The Idempotency-Key asked for another simulation before."""


@dataclass(frozen=True)
class Simulation:
    simulation_id: str
    seq: int
    status: str
    request: dict[str, Any]
    requested_by: str
    attempts: int
    position: int
    head: int | None
    events_read: int
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Simulation:
        return cls(row["simulation_id"], row["seq"], row["status"], orjson.loads(row["request"]),
                   row["requested_by"], row["attempts"], row["position"], row["head"], row["events_read"],
                   None if row["result"] is None else orjson.loads(row["result"]), row["error"],
                   row["created_at"], row["started_at"], row["finished_at"])


def request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


_COLUMNS = ("simulation_id, seq, status, request::text AS request, requested_by, attempts, position, head, events_read,"
            " result::text AS result, error, created_at, started_at, finished_at")


class SimulationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, request: dict[str, Any], idempotency_key: str, requested_by: str,
                     queued_max: int) -> tuple[Simulation, bool]:
        """(the simulation, True) when queued now; (the one the key asked for, False) for
        a retry of the same request. KeyReused, QueueFull."""
        digest = request_hash(request)
        async with self.pool.acquire() as conn, conn.transaction():
            # One creation at a time, so that the queue's bound holds under concurrent requests.
            await conn.execute("SELECT pg_advisory_xact_lock($1, 1)", LOCK_CLASS)
            row = await conn.fetchrow(f"SELECT {_COLUMNS}, request_hash FROM simulations WHERE idempotency_key = $1",
                                      idempotency_key)
            if row is not None:
                if row["request_hash"] != digest:
                    raise KeyReused(idempotency_key)
                return Simulation.of(row), False
            queued = await conn.fetchval("SELECT count(*) FROM simulations WHERE status = 'queued'")
            if queued >= queued_max:
                raise QueueFull(queued)
            row = await conn.fetchrow(
                f"INSERT INTO simulations (simulation_id, status, request, idempotency_key, request_hash, requested_by)"
                f" VALUES ($1, 'queued', $2::jsonb, $3, $4, $5) RETURNING {_COLUMNS}",
                f"sim-{uuid.uuid4()}", orjson.dumps(request).decode(), idempotency_key, digest, requested_by)
        return Simulation.of(row), True

    async def get(self, simulation_id: str) -> Simulation | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM simulations WHERE simulation_id = $1", simulation_id)
        return None if row is None else Simulation.of(row)

    async def page(self, limit: int, before: int | None) -> list[Simulation]:
        """Newest first, `limit` of them, those asked for before `before` (a `seq`)."""
        assert 1 <= limit <= LIST_PAGE_MAX + 1
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM simulations WHERE seq < coalesce($1, 9223372036854775807)"
            " ORDER BY seq DESC LIMIT $2", before, limit)
        return [Simulation.of(r) for r in rows]


def draft_of(request: dict[str, Any]) -> ProgramRules:
    rules = dict(request["rules"])
    rules.pop("effective_from", None)
    return ProgramRules.from_dict(rules)


async def replay(conn: asyncpg.Connection, draft: ProgramRules, book: RuleBook, start: datetime, end: datetime,
                 head: int, page_events: int,
                 on_page: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """The result of replaying the earns of [start, end) up to position `head` under
    `draft` (with the exchange rates of `book`), beside what was issued.

    The next page is read while this one is priced: the server works on it (on another
    core) while this process prices, so the replay costs about the larger of the two
    rather than their sum. At most two pages are in memory."""
    assert 1 <= page_events and start < end
    sums = Replay(RuleBook([RuleVersion(draft, EPOCH)], book.fx))
    months = draft.expiry_months
    events_read = 0
    block_max = read_s = price_s = 0.0
    started = time.perf_counter()

    async def read(after: int) -> tuple[list[asyncpg.Record], list[asyncpg.Record], list[asyncpg.Record]]:
        upto = min(after + page_events, head)
        earns = await conn.fetch(_EARNS_SQL, after, upto, start, end, months, EARN_TYPES)
        taken = await conn.fetch(_TAKE_BACKS_SQL, after, upto, start, end, TAKE_BACK_TYPES)
        taken_earns = await conn.fetch(_TAKEN_EARNS_SQL, sorted({r[0] for r in taken}), head, start, end, months,
                                       sorted({r[2] for r in taken})) if taken else []
        return earns, taken, taken_earns

    after = 0
    pending = asyncio.ensure_future(read(after)) if after < head else None
    try:
        while pending is not None:
            t = time.perf_counter()
            rows, taken, taken_earns = await pending
            read_s += time.perf_counter() - t
            after = min(after + page_events, head)
            pending = asyncio.ensure_future(read(after)) if after < head else None
            for first in range(0, len(rows), SLICE_ROWS):
                t = time.perf_counter()
                _price(sums, rows[first:first + SLICE_ROWS])
                held = time.perf_counter() - t
                price_s += held
                block_max = max(block_max, held)
                await asyncio.sleep(0)
            if taken:
                _take_back(sums, taken, taken_earns)
            events_read += len(rows) + len(taken)
            if on_page is not None:
                await on_page(after, events_read)  # not on `conn`, which reads the next page
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    seconds = time.perf_counter() - started
    at_end = book.at(end)
    result = sums.result(cost_per_point=(at_end.cost_per_point, draft.cost_per_point),
                         currency=draft.programme_currency)
    result["replay"] = {"seconds": round(seconds, 3), "earns_per_s": round(sums.earns / seconds) if seconds else 0,
                        "loop_block_ms_max": round(block_max * 1000, 2), "page_events": page_events,
                        "events_read": events_read, "read_s": round(read_s, 3), "price_s": round(price_s, 3)}
    return result


def _price(sums: Replay, rows: list[asyncpg.Record]) -> None:
    loads = orjson.loads
    for (kind, at, points, breakdown, product, amount, currency, converted, tier, activity, role, year,
         outstanding, outstanding_draft) in rows:
        flags = (outstanding, outstanding_draft)
        if kind == "PointsEarned":
            sums.booking(at, product, amount, currency, converted, tier, points, loads(breakdown), flags)
        elif kind == "ActivityPointsEarned":
            sums.activity(at, activity, role, points, loads(breakdown), flags)
        else:
            sums.anniversary(at, year, points, loads(breakdown), flags)


def _take_back(sums: Replay, taken: list[asyncpg.Record], taken_earns: list[asyncpg.Record]) -> None:
    """Each take-back of a booking earned in the window, scaled to its simulated earn; one
    of a booking earned before the window is not part of the replay."""
    earns: dict[tuple[str, str], tuple[tuple[int, int], tuple[bool, bool]]] = {}
    for (stream, booking, at, points, breakdown, product, amount, currency, converted, tier, outstanding,
         outstanding_draft) in taken_earns:
        simulated = sums.price_booking(at, product, amount, currency, converted, tier, orjson.loads(breakdown))
        earns[(stream, booking)] = ((points, simulated), (outstanding, outstanding_draft))
    for stream, kind, booking, points in taken:
        earn = earns.get((stream, booking))
        if earn is not None:
            sums.take_back(-points if kind == "EarnReversed" else points, *earn)


class SimulationRunner:
    """Claims queued simulations and runs them, at most `running_max` over every process."""

    def __init__(self, pool: asyncpg.Pool, book: Callable[[], RuleBook], *, running_max: int, page_events: int,
                 poll_s: float) -> None:
        self.pool, self.book = pool, book
        self.running_max, self.page_events, self.poll_s = running_max, page_events, poll_s
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}

    async def run_forever(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.wake.clear()  # before looking: a simulation asked for from now on wakes the wait below
                try:
                    await self.requeue_orphans()
                    while len(self.running) < self.running_max and await self._start_one():
                        pass
                except DATABASE_ERRORS as exc:  # a database away is waited out, as the other loops do
                    log.warning("simulations scheduler: %s: %s", type(exc).__name__, exc)
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait()),
                         *self.running.values()]
                await asyncio.wait(waits, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                for w in waits[:2]:
                    w.cancel()
                for sid, task in list(self.running.items()):
                    if task.done():
                        del self.running[sid]
                        error = None if task.cancelled() else task.exception()
                        if isinstance(error, DATABASE_ERRORS):  # left running: requeued once its lock is gone
                            log.warning("simulation %s stopped: %s: %s", sid, type(error).__name__, error)
                        elif error is not None:
                            raise error
        finally:
            for task in self.running.values():
                task.cancel()
            for task in self.running.values():
                with contextlib.suppress(BaseException):
                    await task
            self.running.clear()

    async def requeue_orphans(self) -> int:
        """Running simulations no process holds: back in the queue, or failed after
        ATTEMPTS_MAX starts."""
        done = 0
        async with self.pool.acquire() as conn:
            for sid, attempts in await conn.fetch("SELECT simulation_id, attempts FROM simulations"
                                                  " WHERE status = 'running'"):
                if sid in self.running:
                    continue
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, sid):
                    continue
                try:
                    if attempts >= ATTEMPTS_MAX:
                        await conn.execute(
                            "UPDATE simulations SET status = 'failed', finished_at = now(), error = $2"
                            " WHERE simulation_id = $1 AND status = 'running'", sid,
                            f"the process running it stopped {attempts} times: not started again")
                    else:
                        await conn.execute("UPDATE simulations SET status = 'queued' WHERE simulation_id = $1"
                                           " AND status = 'running'", sid)
                    done += 1
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, sid)
        return done

    async def _start_one(self) -> bool:
        conn = await self.pool.acquire()
        try:
            row = await self._claim(conn)
        except BaseException:
            await self.pool.release(conn)
            raise
        if row is None:
            await self.pool.release(conn)
            return False
        sim = Simulation.of(row)
        self.running[sim.simulation_id] = asyncio.create_task(self._run(conn, sim), name=sim.simulation_id)
        return True

    async def _claim(self, conn: asyncpg.Connection) -> asyncpg.Record | None:
        """The oldest queued simulation, now running in this session; None when none is
        queued or `running_max` run already."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_CLASS)
            running = await conn.fetchval("SELECT count(*) FROM simulations WHERE status = 'running'")
            if running >= self.running_max:
                return None
            row = await conn.fetchrow(
                "UPDATE simulations SET status = 'running', attempts = attempts + 1, started_at = now(),"
                " position = 0, events_read = 0, head = (SELECT coalesce(max(position), 0) FROM events)"
                " WHERE simulation_id = (SELECT simulation_id FROM simulations WHERE status = 'queued'"
                " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_COLUMNS}")
            # Held by this session until the run ends: the mark that someone runs it. Only
            # a session that has not let go of an earlier run of it can hold it already:
            # then it stays queued, and the claim is rolled back.
            if row is not None and not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                                                           LOCK_CLASS, row["simulation_id"]):
                await conn.execute("UPDATE simulations SET status = 'queued', attempts = attempts - 1"
                                   " WHERE simulation_id = $1", row["simulation_id"])
                return None
            return row

    async def _run(self, conn: asyncpg.Connection, sim: Simulation) -> None:
        sid = sim.simulation_id
        try:
            try:
                request = sim.request
                start, end = datetime.fromisoformat(request["from"]), datetime.fromisoformat(request["to"])

                shown = [0.0]

                async def progress(position: int, events_read: int) -> None:
                    if time.monotonic() - shown[0] >= PROGRESS_S:
                        shown[0] = time.monotonic()
                        await self.pool.execute("UPDATE simulations SET position = $2, events_read = $3"
                                                " WHERE simulation_id = $1", sid, position, events_read)

                result = await replay(conn, draft_of(request), self.book(), start, end, sim.head or 0,
                                      self.page_events, progress)
            except asyncio.CancelledError:
                # A clean stop: back in the queue, to start over in whichever process runs
                # next (on another connection: this one may be in the middle of a page).
                await asyncio.shield(self.pool.execute(
                    "UPDATE simulations SET status = 'queued', attempts = attempts - 1 WHERE simulation_id = $1"
                    " AND status = 'running'", sid))
                raise
            except UNAVAILABLE:
                raise  # not the simulation's fault: left running, put back in the queue by the next pass
            except Exception as exc:  # the simulation fails, visibly; the scheduler goes on
                log.exception("simulation %s failed", sid)
                await conn.execute("UPDATE simulations SET status = 'failed', finished_at = now(), error = $2"
                                   " WHERE simulation_id = $1", sid, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX])
                return
            await conn.execute("UPDATE simulations SET status = 'done', finished_at = now(), result = $2::jsonb,"
                               " position = head, events_read = $3 WHERE simulation_id = $1", sid, orjson.dumps(result).decode(),
                               result["replay"]["events_read"])
        finally:
            # The session's lock must not outlive the run in the pool: a connection that
            # cannot say it let go is closed instead, which lets go of it for sure.
            # (One the server cut is let go of by the pool already: nothing to close.)
            try:
                await asyncio.shield(conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, sid))
            except BaseException:
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            await self.pool.release(conn)
