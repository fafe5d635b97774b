"""The replay of a rebuild: every event up to the head, in stream order, into the
empty `*_rebuild` tables, in several processes.

Why stream order: a member's events then come together, so once the replay has moved
on to the next member that member's rows are final, and are written once, by COPY
(into tables without indexes yet: building them at the end costs less). In position
order, as the live runner reads, every page touches most members again, and each
member's rows were upserted about once per page.

Why processes: what is left is decoding events into domain objects and applying them,
Python work on one core per process. The members are cut into spans of stream ids,
each a set of whole members, so the spans' rows never overlap and need no merging;
this process and spawned ones replay the spans, each on connections of its own.

The same `apply` of each projection as the live runner's folds a member's events into
deltas; `ReadModels.completed` turns a complete member's deltas into its final rows,
which are what the live runner's upserts arrive at (the tests compare the tables).
Memory per process is bounded by the page size: the page being applied, the next one
being read, the previous one's rows being copied, and the deltas of the member a page
ends in, which may go on in the next page.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.gc_pause import gc_paused
from ledger.store.events import LEAN_COLUMNS, lean_row_to_event

from .models import COLUMNS, TABLES, ReadModels

log = logging.getLogger(__name__)

SUFFIX = "_rebuild"
EVENTS_PER_WORKER_MIN = 50_000  # below this a process costs more to start than it saves
SPANS_PER_WORKER = 8  # small enough that no process is left with much to do at the end
SAMPLE_EVENTS = 20_000  # about how many events the split points are chosen from
PROGRESS_S = 0.2

_COLUMNS = LEAN_COLUMNS
_PAGE = (f"SELECT {_COLUMNS} FROM events WHERE (stream_id, stream_version) > ($1, $2) AND position <= $3"
         " ORDER BY stream_id, stream_version LIMIT $4")
_PAGE_BEFORE = (f"SELECT {_COLUMNS} FROM events WHERE (stream_id, stream_version) > ($1, $2) AND position <= $3"
                " AND stream_id < $5 ORDER BY stream_id, stream_version LIMIT $4")

Done = Callable[[int], None]


async def create_tables(conn: asyncpg.Connection) -> list[str]:
    """Create empty rebuild tables like the live ones but without their indexes, which
    are cheaper to build once over the copied rows (sorted in bulk) than to keep up row
    by row; returns the statements that add them back, as `LIKE ... INCLUDING ALL`
    made them (same definitions, same names), for `create_indexes`."""
    add: list[str] = []
    for table in TABLES:
        await conn.execute(f"DROP TABLE IF EXISTS {table}{SUFFIX}")
        # With the live table's storage parameters (its fillfactor), which LIKE leaves out.
        # Autovacuum would start on the tables as they fill (the rows inserted call for
        # it), to no use, and hold up the index builds until it gave way.
        options = [o for o in await _storage_parameters(conn, table) if not o.startswith("autovacuum_enabled=")]
        await conn.execute(
            f"CREATE TABLE {table}{SUFFIX} (LIKE {table} INCLUDING ALL)"
            f" WITH ({', '.join(['autovacuum_enabled = false', *options])})"
        )
        rows = await conn.fetch(
            "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,"
            " pg_get_constraintdef(oid)), format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname)"
            " FROM pg_constraint WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x')"
            " UNION ALL"
            " SELECT pg_get_indexdef(indexrelid), format('DROP INDEX %s', indexrelid::regclass) FROM pg_index i"
            " WHERE indrelid = $1::regclass"
            " AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            f"{table}{SUFFIX}",
        )
        for create, drop in rows:
            await conn.execute(drop)
            add.append(create)
    return add


async def create_indexes(pool: asyncpg.Pool, statements: list[str]) -> None:
    """Run `create_tables`' statements, each on a connection of its own, concurrently;
    then let autovacuum see to the tables again, as it does to the live ones."""

    async def run(statement: str) -> None:
        async with pool.acquire() as conn:
            await conn.execute(statement)

    await asyncio.gather(*(run(s) for s in statements))
    async with pool.acquire() as conn:
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table}{SUFFIX} RESET (autovacuum_enabled)")
            live = [o for o in await _storage_parameters(conn, table) if o.startswith("autovacuum_enabled=")]
            if live:
                await conn.execute(f"ALTER TABLE {table}{SUFFIX} SET ({live[0]})")


async def _storage_parameters(conn: asyncpg.Connection, table: str) -> list[str]:
    """A table's storage parameters as set (`fillfactor=70`, ...)."""
    return list(await conn.fetchval("SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass", table))


@dataclass(frozen=True)
class Span:
    """The members with a stream id from `first` (inclusive) to `end` (exclusive; None:
    to the last)."""

    first: str = ""
    end: str | None = None


async def spans(conn: asyncpg.Connection, head: int, parts: int) -> list[Span]:
    """About `parts` spans with about as many events each (fewer if members run out).

    The split points are stream ids at even intervals in a sample of the events, in
    the server's order (its collation is what the pages' keyset compares by); the
    spans need not be even, only whole members each, in order and without overlap."""
    sampled = await conn.fetch(
        "SELECT stream_id FROM events TABLESAMPLE SYSTEM ($1) WHERE position <= $2 ORDER BY stream_id",
        min(100.0, 100.0 * SAMPLE_EVENTS / max(head, 1)), head,
    )
    starts = [""]
    for k in range(1, parts):
        at = sampled[len(sampled) * k // parts][0] if sampled else ""
        if at != starts[-1]:
            starts.append(at)
    return [Span(first, end) for first, end in zip(starts, [*starts[1:], None], strict=True)]


def _apply(models: ReadModels, rows: list[asyncpg.Record]) -> None:
    """Decode each row as the store's lean read does, and apply it: the hot loop."""
    apply = models.apply
    for row in rows:
        apply(lean_row_to_event(row))


def _read(conn: asyncpg.Connection, head: int, span: Span, after: tuple[str, int], limit: int) -> asyncio.Future:
    """The next page of the span after the (stream id, version) `after`; keyset
    pagination on the unique index, so each page is an index range scan."""
    if span.end is None:
        return asyncio.ensure_future(conn.fetch(_PAGE, after[0], after[1], head, limit))
    return asyncio.ensure_future(conn.fetch(_PAGE_BEFORE, after[0], after[1], head, limit, span.end))


async def _copy(conn: asyncpg.Connection, rows: dict[str, list[tuple]]) -> None:
    """COPY a page's rows in one transaction that does not wait for its WAL to reach
    the disk: nothing reads the rebuild tables before the swap, whose own (synchronous)
    commit flushes all the WAL before it, so a crash before then loses only a replay
    that had to start over anyway, and the replay does not stall on a busy disk."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        for table, records in rows.items():
            if records:
                await conn.copy_records_to_table(f"{table}{SUFFIX}", records=records, columns=COLUMNS[table])


async def _settled(future: asyncio.Future | None) -> None:
    """Cancel and wait for a read or a write that is no longer wanted (the replay failed)."""
    if future is not None and not future.done():
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await future


async def replay_span(
    read: asyncpg.Connection, write: asyncpg.Connection, head: int, span: Span,
    page_size: int, done: Done,
) -> None:
    """Replay the span's events up to `head` into the rebuild tables.

    The next page is read on `read` while this one is decoded and applied, and the
    previous page's rows are copied on `write` meanwhile, so the server's work on both
    overlaps with this process's. A page's last member may go on in the next page: its
    deltas are kept until a page ends in another member, or the span ends.
    """
    models = ReadModels(SUFFIX)
    reading: asyncio.Future | None = _read(read, head, span, (span.first, 0), page_size)
    writing: asyncio.Future | None = None
    try:
        while reading is not None:
            rows = await reading
            reading = _read(read, head, span, (rows[-1][1], rows[-1][2]), page_size) if len(rows) == page_size else None
            _apply(models, rows)
            completed = models.completed(keep=rows[-1][1] if reading is not None else None)
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(_copy(write, completed))
            done(len(rows))
        if writing is not None:
            await writing
        await _copy(write, models.completed())
    finally:
        await _settled(reading)
        await _settled(writing)


async def replay(
    pool: asyncpg.Pool, head: int, *, page_size: int, workers: int | None, dsn: str | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Replay every event up to `head` into the (empty) rebuild tables.

    In `workers` processes (by default one per core, fewer for a short history): this
    one and `workers - 1` spawned ones, which need the database's URL (`dsn`, or the
    one the pool connects with). The members are cut into several spans per process,
    which each process takes one after the other, so that one started late, or given
    less CPU by the machine, does less of the work rather than holding up the end."""
    dsn = dsn or _pool_dsn(pool)
    workers = _workers(workers, head, dsn)
    context = multiprocessing.get_context("spawn")
    shared = _Shared(context)

    def report(events: int) -> None:
        shared.count(events)
        if progress is not None:
            progress(shared.replayed.value, head)

    async with pool.acquire() as conn:
        parts = await spans(conn, head, SPANS_PER_WORKER * workers) if workers > 1 else [Span()]
    if len(parts) == 1:
        # The replay makes no reference cycles to speak of (events, rows and deltas are
        # freed by reference counting), and collections walking a page's objects again
        # and again cost about a tenth of its time.
        with gc_paused():
            await _replay_spans_here(pool, head, parts, page_size, shared, report)
        return
    assert dsn is not None
    with ProcessPoolExecutor(workers - 1, mp_context=context, initializer=_worker_init,
                             initargs=(shared,)) as executor:
        try:
            await _replay_with(executor, workers - 1, pool, dsn, head, parts, page_size, shared, report)
        except BaseException:
            shared.stop(len(parts))
            executor.shutdown(wait=False, cancel_futures=True)
            raise


def _workers(workers: int | None, head: int, dsn: str | None) -> int:
    """How many processes replay: as asked, else one per core but one per
    `EVENTS_PER_WORKER_MIN` events at most; only this one without a database URL."""
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, head // EVENTS_PER_WORKER_MIN))
    assert workers >= 1
    if workers > 1 and dsn is None:
        log.warning("rebuild: no database URL for worker processes; replaying in this process only")
        return 1
    return workers


async def _replay_with(
    executor: ProcessPoolExecutor, processes: int, pool: asyncpg.Pool, dsn: str, head: int,
    parts: list[Span], page_size: int, shared: _Shared, report: Done,
) -> None:
    """Replay spans here while `processes` spawned ones do too, then wait for them,
    reporting the progress meanwhile; a worker's exception is raised here."""
    loop = asyncio.get_running_loop()
    waiting = {loop.run_in_executor(executor, _replay_in_worker, dsn, head, parts, page_size)
               for _ in range(processes)}
    with gc_paused():  # as in `replay`
        await _replay_spans_here(pool, head, parts, page_size, shared, report)
    while waiting:
        finished, waiting = await asyncio.wait(waiting, timeout=PROGRESS_S)
        report(0)
        for future in finished:
            future.result()


class _Shared:
    """What the processes of a replay share: the index of the next span to take, and
    how many events they have replayed (for the progress)."""

    def __init__(self, context: Any) -> None:
        self.next_span = context.Value("q", 0)
        self.replayed = context.Value("q", 0)

    def take(self) -> int:
        with self.next_span.get_lock():
            taken = self.next_span.value
            self.next_span.value = taken + 1
        return int(taken)

    def stop(self, spans: int) -> None:
        """No more spans for anyone (the replay failed)."""
        with self.next_span.get_lock():
            self.next_span.value = spans

    def count(self, events: int) -> None:
        with self.replayed.get_lock():
            self.replayed.value += events


async def _replay_spans(
    read: asyncpg.Connection, write: asyncpg.Connection, head: int, parts: list[Span],
    page_size: int, shared: _Shared, done: Done,
) -> None:
    while (taken := shared.take()) < len(parts):
        await replay_span(read, write, head, parts[taken], page_size, done)


async def _replay_spans_here(
    pool: asyncpg.Pool, head: int, parts: list[Span], page_size: int, shared: _Shared,
    done: Done,
) -> None:
    async with pool.acquire() as read, pool.acquire() as write:
        await _replay_spans(read, write, head, parts, page_size, shared, done)


_shared: _Shared | None = None  # in a worker process


def _worker_init(shared: _Shared) -> None:
    global _shared
    _shared = shared
    gc.disable()  # as `gc_paused` in `replay`: the process ends with the replay


def _replay_in_worker(dsn: str, head: int, parts: list[Span], page_size: int) -> None:
    asyncio.run(_replay_connected(dsn, head, parts, page_size))


async def _replay_connected(dsn: str, head: int, parts: list[Span], page_size: int) -> None:
    assert _shared is not None
    read = await asyncpg.connect(dsn)
    try:
        write = await asyncpg.connect(dsn)
        try:
            await _replay_spans(read, write, head, parts, page_size, _shared, _shared.count)
        finally:
            await write.close()
    finally:
        await read.close()


def _pool_dsn(pool: asyncpg.Pool) -> str | None:
    """The URL the pool was created with (asyncpg keeps it as the first connect argument)."""
    args = getattr(pool, "_connect_args", None)
    return args[0] if args and isinstance(args[0], str) else None
