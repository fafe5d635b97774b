"""Feeds the read models from the global event stream, page by page, one runner per
projection group (`projections.models`: the member read models, the reports).

Each page's read-model rows and the group's checkpoint are written in one transaction,
so a crash never applies an event twice nor skips one. An advisory lock per group makes
runners in several processes take turns, and lets a rebuild swap its tables in safely.
A group's runner may defer to another's (`defer_to`): the reports' runner waits while
the member runner has a backlog, until it has been behind for `defer_max_s` (then it
catches up, page by page, and waits again) or by half the events the two share
(`EventPages`: then it takes pages from them until it is less behind). While the
member runner keeps up (a steady load), it takes each full page of its own as one is
waiting. Under load the members' reads stay fresh, the reports are at
most about `defer_max_s` behind, and their work comes in full pages (of events that
come together, which costs less per event) with the member runner's pages in between,
taken from the events it read and decoded. The member runner in turn waits before it
would let go of events the reports' runner has yet to take (`holding_back`), so that
under a backlog each event is read and decoded once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from ledger.store import EventStore, StoredEvent
from ledger.store.database import DATABASE_ERRORS, UNAVAILABLE

from . import reports
from .models import GROUPS, MEMBERS, TABLES, Group, KnownRows, Models, ReadModels
from .rebuild import SUFFIX, create_indexes, create_tables, replay

log = logging.getLogger(__name__)

CHECKPOINT = MEMBERS.name
FOLLOWER_STALL_S = 5.0  # a follower with no page committed for this long is not waited for
REFUSED_PAGES_MAX = 3  # a page the server refuses this many times in a row goes to the supervisor
ADVISORY_LOCK_ID = MEMBERS.lock_id  # any constant unique to this lock within the database

Page = tuple[list[StoredEvent], Models]


class EventPages:
    """The latest stretch of the event stream read, decoded, shared by the runners of
    one process: the reports' runner, a page or a few behind the members', takes its
    events from here rather than reading and decoding them again (measured in
    `bench/kafka_bench.py`: the read and the decode were 6 µs of PostgreSQL and 5 of
    Python per event, per group).

    A read of the events after a position is complete up to its last event (appends
    take turns until they commit: positions become visible in order), and the events
    never change, so what is held stays true: it holds the events of (`after`, the last
    one's position], at most `events_max` of them, the oldest let go first."""

    def __init__(self, store: EventStore, events_max: int = 20_000) -> None:
        self.store = store
        self.events_max = events_max
        self.after = 0
        self.events: list[StoredEvent] = []
        self.positions: list[int] = []

    def _last(self) -> int:
        return self.positions[-1] if self.positions else self.after

    def held_after(self, position: int) -> int | None:
        """How many events held come after `position`; None if a read from there is
        not served from what is held (it was let go, or never read)."""
        if position < self.after:
            return None
        return len(self.positions) - bisect.bisect_right(self.positions, position)

    def _held(self, after_position: int, limit: int) -> list[StoredEvent]:
        if not self.after <= after_position < self._last():
            return []
        start = bisect.bisect_right(self.positions, after_position)
        return self.events[start:start + limit]

    def _keep(self, after_position: int, events: list[StoredEvent]) -> None:
        """Hold `events`, read after `after_position`, if they go on from what is held
        (or start a new stretch ahead of it)."""
        if not events:
            return
        if after_position == self._last():
            self.events.extend(events)
            self.positions.extend(e.position for e in events)
        elif after_position > self._last():
            self.after, self.events, self.positions = after_position, list(events), [e.position for e in events]
        else:
            return
        drop = len(self.events) - self.events_max
        if drop > 0:
            self.after = self.positions[drop - 1]
            del self.events[:drop], self.positions[:drop]

    async def read(self, after_position: int, limit: int, conn: asyncpg.Connection | None = None) -> list[StoredEvent]:
        """`EventStore.read_all(after_position, limit, lean=True)`, from what is held
        as far as it goes."""
        events = self._held(after_position, limit)
        if len(events) == limit:
            return events
        start = events[-1].position if events else after_position
        more = await self.store.read_all(start, limit - len(events), conn=conn, lean=True)
        self._keep(start, more)
        return events + more if events else more


def _applied(group: Group, events: list[StoredEvent]) -> Page:
    models = group.models()
    for stored in events:
        models.apply(stored)
    return events, models


async def _taken(ahead: asyncio.Future[tuple[int, Page]] | None, position: int) -> Page | None:
    """The page read ahead if it starts at `position`; else it is dropped (and a failed
    read ahead is only logged: the caller reads the page itself)."""
    if ahead is None:
        return None
    if ahead.done() and not ahead.cancelled() and ahead.exception() is None and ahead.result()[0] != position:
        return None
    try:
        after, page = await ahead
    except DATABASE_ERRORS as exc:
        log.warning("projection runner: reading ahead failed: %s", exc)
        return None
    return page if after == position else None


async def checkpoint(conn: asyncpg.Connection | asyncpg.Pool, group: Group = MEMBERS) -> int:
    return int(await conn.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1", group.name))


class ProjectionRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        *,
        page_size: int = 2_000,
        idle_ms: int = 50,
        wake: asyncio.Event | None = None,
        known_rows_max: int = 100_000,
        group: Group = MEMBERS,
        defer_to: ProjectionRunner | None = None,
        defer_max_s: float = 10.0,
    ) -> None:
        assert 1 <= page_size <= 50_000
        self.group = group
        self.defer_to = defer_to
        self.defer_max_s = defer_max_s
        self.follower: ProjectionRunner | None = None  # the runner that defers to this one
        self.progressed = time.monotonic()  # when a page last committed (see `holding_back`)
        self.busy = False  # the last page had events: more may be waiting (see `defer_to`)
        self.backlogged = False  # the last page was full: a backlog (see `deferring`)
        self._caught_up = time.monotonic()  # when a page last found nothing more to take
        self.known = KnownRows(known_rows_max)
        self.pool = pool
        self.store = store
        # The events read lately, shared with the runner this one defers to.
        self.pages = defer_to.pages if defer_to is not None else EventPages(store)
        if defer_to is not None:
            defer_to.follower = self
        self.page_size = page_size
        self.idle_s = idle_ms / 1000
        self.wake = wake
        self.position = 0  # last checkpoint this process wrote or saw
        self._ahead: asyncio.Future[tuple[int, Page]] | None = None

    async def run_once(self) -> int:
        """Project one page; returns how many events it took.

        After a full page (a backlog), the next page is read and applied on another
        connection while this one's rows are written: the server writes one page while
        this process decodes the next, so catching up uses both. The page read ahead
        is used only if it starts at the checkpoint found under the lock (a rebuild may
        have moved it); it is a read of committed events, so it changes nothing.
        """
        ahead, self._ahead = self._ahead, None
        try:
            return await self._project_page(ahead)
        except BaseException as exc:
            self.known.clear()  # it may hold rows of a page that did not commit
            if isinstance(exc, asyncpg.UniqueViolationError) and self.known.insert_new:
                log.warning("projection runner: a row an earn made was stored already (%s); upserts only from now", exc)
                self.known.insert_new = False
            raise

    async def _project_page(self, ahead: asyncio.Future[tuple[int, Page]] | None) -> int:
        group = self.group
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", group.lock_id)
            # Read inside the lock: a rebuild may have moved the checkpoint.
            position = await checkpoint(conn, group)
            if position != self.position:
                self.known.clear()  # someone else wrote the tables: what it holds may be stale
            page = await _taken(ahead, position)
            if page is None:
                page = _applied(group, await self._read(position, conn))
            events, models = page
            if events:
                # A runner that defers reads ahead only when a full page more is waiting: under a
                # steady load it would read a short one, and then take it, a page of its
                # fixed costs for a few events.
                if len(events) == self.page_size and (
                        self.defer_to is None or self.defer_to.position - events[-1].position >= self.page_size):
                    self._ahead = asyncio.ensure_future(self._read_ahead(events[-1].position))
                await models.write(conn, self.known)
                position = events[-1].position
                await conn.execute(
                    "UPDATE projection_checkpoints SET position = $2 WHERE name = $1", group.name, position
                )
        self.position = position
        self.progressed = time.monotonic()
        self.known.trim()
        self.busy = bool(events)
        self.backlogged = len(events) == self.page_size
        if len(events) < self.page_size:
            self._caught_up = time.monotonic()
        return len(events)

    async def _read_ahead(self, after_position: int) -> tuple[int, Page]:
        return after_position, _applied(self.group, await self._read(after_position))

    async def _read(self, after_position: int, conn: asyncpg.Connection | None = None) -> list[StoredEvent]:
        return await self.pages.read(after_position, self.page_size, conn)

    def holding_back(self) -> bool:
        """Whether to wait for the runner that defers to this one (the reports'): it
        takes its pages from the events held (`EventPages`), and the next page or two
        of this one's would let go of events it has yet to take; it would read them
        again from the table and decode them again. Under a backlog it fell out of the
        window and never came back: every event was read and decoded twice, 6 µs of
        PostgreSQL and 5 of Python per event (`bench/kafka_bench.py` at 1,000,000
        events). Both groups' pages run in this process's one thread, so the wait costs
        the member read models little: the reports' page runs in it. Not waited for: a
        follower out of the window already (a rebuilt group replaying from the start),
        or one with no page committed for `FOLLOWER_STALL_S` (failing, or another
        process's runner holds its group's lock)."""
        f = self.follower
        if f is None or time.monotonic() - f.progressed >= FOLLOWER_STALL_S:
            return False
        held = self.pages.held_after(f.position)
        events_max = self.pages.events_max
        return held is not None and held >= max(events_max // 2, events_max - 2 * max(self.page_size, f.page_size))

    def deferring(self) -> bool:
        """Whether to wait before the next page: the runner deferred to has events to
        project, and this one was caught up less than `defer_max_s` ago; unless that
        runner keeps up (its last page was not full: a steady load, not a backlog) and a
        full page of this one's is waiting, which it then takes; or this one is half the
        events held (`EventPages`) behind, and takes its pages from there while they are:
        read again from the table and decoded again, under a backlog of 1,000,000 events
        four in five of them were (`bench/kafka_bench.py`). Under a steady load the
        reports' work so comes a page at a time, evenly, rather than as `defer_max_s` of
        events at once every `defer_max_s`, which held the member read models up while
        it lasted (`bench/kafka_bench.py` at 5,000 events/s: p99 1,276 ms, against 423
        with the reports held off)."""
        to = self.defer_to
        if to is None or not to.busy or time.monotonic() - self._caught_up >= self.defer_max_s or to.holding_back():
            return False
        behind = to.position - self.position
        if behind >= self.pages.events_max // 2:
            return False  # its next pages are leaving the events held: take them from there, not the table
        return to.backlogged or behind < self.page_size

    async def close(self) -> None:
        """Drop a page read ahead that no run will take."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, *DATABASE_ERRORS):
                await ahead

    async def run_until_caught_up(self, pages_max: int = 1_000_000) -> None:
        for _ in range(pages_max):
            if not await self.run_once():
                return

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; survives database outages by retrying."""
        try:
            await self._run_until_stopped(stop)
        finally:
            await self.close()

    async def _run_until_stopped(self, stop: asyncio.Event) -> None:
        backoff = self.idle_s
        refused = 0  # pages the server refused in a row, with the database reachable
        while not stop.is_set():
            if self.deferring() or self.holding_back():
                await _sleep_or_stop(stop, self.idle_s)
                continue
            if self.wake is not None:
                self.wake.clear()  # before the read: an append from now on wakes the wait below
            try:
                taken = await self.run_once()
                backoff, refused = self.idle_s, 0
            except DATABASE_ERRORS as exc:
                # A database that is away is waited for here, however long. An error the
                # server answers (a statement a concurrent rebuild invalidated) passes on a
                # retry or two; one that does not is a page the runner cannot apply, and is
                # raised to the supervisor, which logs its traceback, counts it and shows
                # the runner down in /readyz, rather than a runner that looks up while its
                # lag grows.
                if not isinstance(exc, UNAVAILABLE):
                    refused += 1
                    if refused >= REFUSED_PAGES_MAX:
                        raise
                log.warning("projection runner: %s: %s; retrying in %.1fs", type(exc).__name__, exc, backoff)
                taken, backoff = 0, min(backoff * 2, 5.0)
                await _sleep_or_stop(stop, backoff)
                continue
            if taken < self.page_size:
                await _sleep_or_stop(stop, self.idle_s, self.wake)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def rebuild(
    pool: asyncpg.Pool,
    store: EventStore,
    *,
    page_size: int = 5_000,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    dsn: str | None = None,
) -> int:
    """Replay every event from position 0 into fresh tables of every group, then swap
    them in.

    Reads keep working on the old tables meanwhile. The events up to the head found at
    the start (all committed by then: appends hold a table lock until they commit) are
    replayed member by member in `workers` processes, by default one per core (see
    `projections.rebuild`; spawned processes connect with `dsn`, by default the pool's
    URL). What was appended since is then applied by the live runner's path, under its
    lock, before the swap. `progress(done, total)` gets the events replayed so far and
    the head. Returns the position the new tables are at.

    Pages of 5,000 events (about 2 MB of rows) by default: measured as fast as larger
    ones, with a third of the memory, as the next page read ahead fits in the socket
    buffers and arrives while this one is applied.
    """
    assert 1 <= page_size <= 50_000
    async with pool.acquire() as conn:
        indexes = await create_tables(conn)
    head = await store.head()
    await replay(pool, head, page_size=page_size, workers=workers, dsn=dsn, progress=progress)
    await reports.compact(pool, SUFFIX)  # the reports' deltas, copied page by page, into one row per key
    await create_indexes(pool, indexes)
    position = head
    async with pool.acquire() as conn, conn.transaction():
        for group in GROUPS:  # always in this order, as no runner takes two
            await conn.execute("SELECT pg_advisory_xact_lock($1)", group.lock_id)
        # Catch up on what was appended during the replay, then swap under the locks
        # so each group's live runner continues from exactly where the new tables stand.
        while events := await store.read_all(position, page_size, conn=conn, lean=True):
            models = ReadModels(SUFFIX)
            for stored in events:
                models.apply(stored)
            await models.write(conn)
            position = events[-1].position
        for table in TABLES:
            await conn.execute(f"DROP TABLE {table}")
            await conn.execute(f"ALTER TABLE {table}{SUFFIX} RENAME TO {table}")
        await conn.execute("UPDATE projection_checkpoints SET position = $2 WHERE name = ANY($1::text[])",
                           [group.name for group in GROUPS], position)
    if progress:
        progress(position, max(head, position))
    return position
