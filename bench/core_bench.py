"""Core throughput benchmark: the batch append path, the live projection runner and a
projection rebuild over the same events, against COPY of the same rows (the machine's
limit for getting those rows into PostgreSQL).

    .venv/bin/python bench/core_bench.py [--events N --members M --batch B --processes P]

It starts its own embedded PostgreSQL in a temporary directory unless
LEDGER_BENCH_DATABASE_URL points at a server (the bench creates and drops its own
database there). This is a measurement, not a test: it asserts only what the figures
need to mean something (every command applied, every event projected).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger import event_loop
from ledger.bootstrap import Container, GcPacer, build
from ledger.domain import CompleteBooking, ConfirmBooking
from ledger.embedded import EmbeddedPostgres
from ledger.handlers import BatchOutcomes, CommandRequest
from ledger.settings import Settings
from ledger.store import migrate
from projections.runner import rebuild

DATABASE = "ledger_bench"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
YEAR_DAYS = 365
PENDING_PERCENT = 30  # bookings confirmed first (pending points), completed one round later
APPEND_TARGET_RATIO = 0.5
REBUILD_TARGET_EVENTS_S = 100_000
RSS_SAMPLE_S = 0.5

# (product, weight, amount range in currency units)
PRODUCTS = (("flight", 35, (40, 1_800)), ("hotel", 30, (60, 2_500)), ("package", 10, (400, 6_000)),
            ("rail", 15, (10, 300)), ("car", 10, (30, 900)))
CURRENCIES = (("EUR", 60), ("USD", 25), ("GBP", 15))

console = Console(stderr=True)


def _weighted(choices: tuple, weights: list[int], roll: int) -> object:
    """The choice at `roll` (0..99) on the cumulative weights, which add up to 100."""
    for choice, limit in zip(choices, weights, strict=True):
        if roll < limit:
            return choice
    raise AssertionError(roll)


def _cumulative(weights: list[int]) -> list[int]:
    out, total = [], 0
    for w in weights:
        total += w
        out.append(total)
    assert total == 100
    return out


_PRODUCT_LIMITS = _cumulative([w for _, w, _ in PRODUCTS])
_CURRENCY_LIMITS = _cumulative([w for _, w in CURRENCIES])


def _mix(*values: int) -> int:
    """A cheap deterministic hash, so command i can be regenerated without any state."""
    h = 0xCBF29CE484222325
    for v in values:
        h = ((h ^ v) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 29)


@dataclass(frozen=True)
class Workload:
    """Command i goes to member i % members in round i // members, so every batch
    touches `batch` distinct members (the costly case for loading states) and each
    member's bookings move forward through the year round by round."""

    events: int
    members: int

    @property
    def rounds(self) -> int:
        return -(-self.events // self.members)

    def _pending(self, member: int, round_: int) -> bool:
        # Confirmed in an even round, completed in the next: one event each time.
        return round_ % 2 == 0 and round_ + 1 < self.rounds and _mix(member, round_, 1) % 100 < PENDING_PERCENT

    def request(self, i: int) -> CommandRequest:
        member, round_ = i % self.members, i // self.members
        completes_pending = round_ % 2 == 1 and self._pending(member, round_ - 1)
        booking_round = round_ - 1 if completes_pending else round_
        h = _mix(member, booking_round)
        product, _, (low, high) = _weighted(PRODUCTS, _PRODUCT_LIMITS, h % 100)  # type: ignore[misc]
        currency = _weighted(tuple(c for c, _ in CURRENCIES), _CURRENCY_LIMITS, (h >> 8) % 100)
        amount = Decimal(low + (h >> 16) % (high - low)) + Decimal((h >> 40) % 100) / 100
        day = YEAR_DAYS * round_ // self.rounds + (h >> 48) % max(1, YEAR_DAYS // self.rounds)
        at = T0 + timedelta(days=day, minutes=(h >> 24) % 720)
        member_id, booking_id = f"M-{member:07d}", f"BK-{member:07d}-{booking_round:03d}"
        pending = self._pending(member, round_)
        cls = ConfirmBooking if pending else CompleteBooking
        event_id = f"{booking_id}-{'confirmed' if pending else 'completed'}"
        body = f"{event_id}|{member_id}|{booking_id}|{product}|{amount}|{currency}|{at.isoformat()}"
        return CommandRequest(
            cls(member_id, at, booking_id, product, amount, currency),  # type: ignore[arg-type]
            idempotency_key=f"booking-event:{event_id}",
            request_hash=hashlib.sha256(body.encode()).hexdigest(),
            metadata={"source": "bench", "causation_id": event_id, "correlation_id": booking_id},
        )

    def batches(self, size: int) -> Iterator[range]:
        for start in range(0, self.events, size):
            yield range(start, min(start + size, self.events))

    def partition_batches(self, size: int, partition: int, partitions: int) -> Iterator[list[int]]:
        """The commands of the members `member % partitions == partition`, in order, in
        batches: what one Kafka partition's consumer would hand to handle_batch."""
        batch: list[int] = []
        for i in range(self.events):
            if (i % self.members) % partitions == partition:
                batch.append(i)
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch


@dataclass
class RssSampler:
    """Peak resident memory of the PostgreSQL server's processes, sampled."""

    postmaster_pid: int | None
    peak_sum_bytes: int = 0
    peak_process_bytes: int = 0
    _task: asyncio.Task | None = field(default=None, repr=False)

    def _processes(self) -> list[psutil.Process]:
        if self.postmaster_pid is None:
            return []
        try:
            root = psutil.Process(self.postmaster_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        sizes = []
        for p in self._processes():
            try:
                sizes.append(p.memory_info().rss)
            except psutil.Error:
                continue
        if sizes:
            self.peak_sum_bytes = max(self.peak_sum_bytes, sum(sizes))
            self.peak_process_bytes = max(self.peak_process_bytes, max(sizes))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_SAMPLE_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.sample()


@dataclass
class Stage:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("inf")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _with_db(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


async def fresh_database(server_url: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    url = _with_db(server_url, DATABASE)
    await migrate(url)
    return url


def _check_applied(outcomes: BatchOutcomes) -> None:
    """Every command of the batch applied, read as the Kafka consumer reads a batch: by
    its counts, which build no command's outcome (an HTTP request builds its own one)."""
    if outcomes.counts()["applied"] != len(outcomes):
        bad = next(o for o in outcomes if o.status != "applied")
        raise AssertionError(f"the bench's commands must all apply: {bad}")


async def stage_append(container: Container, work: Workload, batch: int) -> tuple[Stage, float]:
    """Returns the append stage and, separately, the seconds spent generating commands."""
    generate_s = append_s = 0.0
    pacer = GcPacer()  # as the Kafka consumer paces its collections after each batch
    with _progress() as progress:
        task = progress.add_task("append", total=work.events)
        for indexes in work.batches(batch):
            t = time.perf_counter()
            requests = [work.request(i) for i in indexes]
            t1 = time.perf_counter()
            results = await container.ledger.handle_batch(requests)
            pacer.after_batch()
            append_s += time.perf_counter() - t1
            generate_s += t1 - t
            _check_applied(results)
            progress.update(task, advance=len(indexes))
    return Stage("append (handle_batch)", work.events, append_s), generate_s


def _append_process(url: str, events: int, members: int, batch: int, partition: int, processes: int,
                    ready: Any, go: Any, results: Any) -> None:
    """One of the processes of the multi-process append: the members with
    `member % processes == partition`, in batches, like one Kafka partition's consumer."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(data_dir=Path(data_dir), db_pool_size_max=4,
                                state_cache_members_max=max(members // processes + 1, 1))  # type: ignore[call-arg]
            container = await build(settings, run_migrations=False, url=url)
        work = Workload(events, members)
        try:
            # The commands are built before the clock starts, as COPY's rows are read
            # before each COPY: the stage times the path, not the making of its input.
            batches = [[work.request(i) for i in indexes]
                       for indexes in work.partition_batches(batch, partition, processes)]
            pacer = GcPacer()  # as the Kafka consumer paces its collections after each batch
            pacer.after_batch()  # the commands built so far are frozen, as a consumer's start-up is
            ready.wait()
            go.wait()
            t = time.perf_counter()
            for requests in batches:
                out = await container.ledger.handle_batch(requests)
                pacer.after_batch()
                _check_applied(out)
            results.put((partition, time.perf_counter() - t))
        finally:
            await container.close()

    event_loop.run(main())  # the loop `ledger consume` runs on


def stage_append_processes(url: str, work: Workload, batch: int, processes: int) -> Stage:
    """The append in `processes` OS processes at once, each on its own members, as
    consumers of as many Kafka partitions would run: one CPython process decides and
    encodes on one core at most, so this is how a single host uses its cores. Each
    process builds all of its commands before the clock starts (about 1 KiB each)."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Barrier(processes + 1), ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=_append_process, args=(url, work.events, work.members, batch, p, processes,
                                                       ready, go, results)) for p in range(processes)]
    for proc in procs:
        proc.start()
    ready.wait()  # every process connected and its commands built
    with _progress() as progress:
        progress.add_task(f"append x{processes} processes", total=None)
        t = time.perf_counter()
        go.wait()
        outcomes = [results.get() for _ in procs]
        wall_s = time.perf_counter() - t
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0, proc.exitcode
    console.print(f"append with {processes} processes: {wall_s:,.1f} s wall; each process"
                  f" {', '.join(f'{s:,.1f} s' for _, s in sorted(outcomes))}")
    return Stage(f"append ({processes} processes)", work.events, wall_s)


async def settle(pool: asyncpg.Pool) -> None:
    """Before a timed stage: vacuum and analyse what the previous stage wrote (as
    autovacuum would in time) and flush the dirty pages, so that no stage pays for
    the one before it."""
    await pool.execute("VACUUM ANALYZE")
    try:
        await pool.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        console.print("CHECKPOINT refused (not a superuser): stages may pay for earlier ones' writes")


async def stage_live(container: Container, head: int, *, reports: bool = False) -> Stage:
    """The live runner of the member read models, or of the reports' group."""
    runner = container.reports_runner if reports else container.runner
    name = "live projection, reports" if reports else "live projection"
    with _progress() as progress:
        task = progress.add_task(name, total=head)
        t = time.perf_counter()
        while await runner.run_once():
            progress.update(task, completed=runner.position)
        seconds = time.perf_counter() - t
    assert runner.position == head
    return Stage(f"{name} (page {runner.page_size})", head, seconds)


async def stage_rebuild(container: Container, head: int) -> Stage:
    with _progress() as progress:
        task = progress.add_task("rebuild", total=head)
        t = time.perf_counter()
        position = await rebuild(container.pool, container.store, dsn=container.url,
                                 progress=lambda done, _: progress.update(task, completed=done))
        seconds = time.perf_counter() - t
    assert position == head
    return Stage("projection rebuild", head, seconds)


COPY_COLUMNS = ("stream_id", "stream_version", "type", "schema_version", "data", "metadata", "occurred_at", "hash",
                "idempotency_key")


async def stage_copy(container: Container, head: int, chunk: int, label: str) -> Stage:
    """COPY the events' rows, read back page by page (reads not timed), into a scratch
    table shaped like events (same columns, identity, defaults and indexes; LIKE does
    not copy triggers), one transaction per `chunk` rows."""
    scratch = "events_copy_bench"
    copy_s = 0.0
    async with container.pool.acquire() as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {scratch}")
        await conn.execute(f"CREATE TABLE {scratch} (LIKE events INCLUDING ALL)")
        after = 0
        with _progress() as progress:
            task = progress.add_task(label, total=head)
            while after < head:
                rows = await conn.fetch(
                    f"SELECT position, {', '.join(COPY_COLUMNS)} FROM events WHERE position > $1"
                    " ORDER BY position LIMIT $2", after, chunk,
                )
                records = [tuple(r)[1:] for r in rows]
                t = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_records_to_table(scratch, records=records, columns=COPY_COLUMNS)
                copy_s += time.perf_counter() - t
                after = rows[-1]["position"]
                progress.update(task, completed=after)
        copied = await conn.fetchval(f"SELECT count(*) FROM {scratch}")
        await conn.execute(f"DROP TABLE {scratch}")
    assert copied == head
    return Stage(label, head, copy_s)


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def report(stages: list[Stage], generate_s: float, rss: RssSampler, wall_s: float, args: argparse.Namespace) -> None:
    by_name = {s.name: s for s in stages}
    # The reference is COPY in transactions of the append's batch size: the same rows
    # and the same number of commits, so the ratio measures the path, not the batching.
    # Stages are found by name, not by place, so a stage added to the run moves nothing.
    append, copy = stages[0], by_name[f"COPY (batch {args.batch:,})"]
    appends = [append, *(s for s in stages if s.name.startswith("append (") and s is not append)]
    table = Table(title=f"{args.events:,} events, {args.members:,} members, batch {args.batch:,}")
    table.add_column("stage")
    table.add_column("events", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column(f"vs {copy.name}", justify="right")
    for s in stages:
        table.add_row(s.name, f"{s.events:,}", f"{s.seconds:,.1f}", f"{s.rate:,.0f}", f"{s.rate / copy.rate:.0%}")
    console.print(table)
    # The target is for the machine: one CPython process decides and encodes on one core,
    # so with several processes (as consumers of several partitions run) the best of them
    # is what the machine appends; with one, the single process.
    best = max(appends, key=lambda s: s.rate)
    ratio = best.rate / copy.rate
    rebuild_rate = by_name["projection rebuild"].rate
    bench_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    lines = [
        f"command generation (not in append time): {generate_s:,.1f} s",
        *(f"{s.name} / COPY: {s.rate / copy.rate:.0%}" for s in appends if s is not best),
        f"{best.name} / COPY: {ratio:.0%} (target >= {APPEND_TARGET_RATIO:.0%}): "
        + ("met" if ratio >= APPEND_TARGET_RATIO else "NOT met"),
        f"rebuild: {rebuild_rate:,.0f} events/s (target >= {REBUILD_TARGET_EVENTS_S:,}): "
        + ("met" if rebuild_rate >= REBUILD_TARGET_EVENTS_S else "NOT met"),
        f"peak RSS, bench process: {_mib(bench_peak)}",
        *([f"peak RSS, largest append process: {_mib(children_peak)} (with all of its commands built in advance)"]
          if children_peak else []),
        f"peak RSS, PostgreSQL: largest process {_mib(rss.peak_process_bytes)}, all processes summed "
        f"{_mib(rss.peak_sum_bytes)} (the sum counts shared buffers once per process that touched them)"
        if rss.postmaster_pid else "peak RSS, PostgreSQL: not sampled (external server)",
        f"wall time: {wall_s:,.1f} s",
    ]
    for line in lines:
        console.print(line)
    print("\n".join(f"{s.name}\t{s.events}\t{s.seconds:.3f}\t{s.rate:.0f}" for s in stages))


async def run(args: argparse.Namespace, server_url: str, postmaster_pid: int | None) -> None:
    wall = time.perf_counter()
    rss = RssSampler(postmaster_pid)
    rss.start()
    url = await fresh_database(server_url)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), db_pool_size_max=4,
                            state_cache_members_max=max(args.members, 1))  # type: ignore[call-arg]
        container = await build(settings, run_migrations=False, url=url)
    try:
        try:
            work = Workload(args.events, args.members)
            await settle(container.pool)
            append, generate_s = await stage_append(container, work, args.batch)
            head = await container.store.head()
            # A booking may append more than its earn (a tier upgrade after it): the
            # stages count the events written, as COPY counts its rows.
            assert head >= args.events, (head, args.events)
            stages = [Stage(append.name, head, append.seconds)]
            for stage in (lambda: stage_live(container, head), lambda: stage_live(container, head, reports=True),
                          lambda: stage_rebuild(container, head),
                          lambda: stage_copy(container, head, args.batch, f"COPY (batch {args.batch:,})"),
                          lambda: stage_copy(container, head, args.copy_chunk, f"COPY (batch {args.copy_chunk:,})")):
                await settle(container.pool)
                stages.append(await stage())
        finally:
            await container.close()
        # Let the first run's state cache go before the second builds its own, so that
        # the peak RSS reported is that of one pipeline set, not two.
        del container
        if args.processes > 1:
            stages.append(await _append_in_processes(server_url, args))
    finally:
        await rss.stop()
    report(stages, generate_s, rss, time.perf_counter() - wall, args)


async def _append_in_processes(server_url: str, args: argparse.Namespace) -> Stage:
    """The append stage again, into a fresh database, from several processes."""
    url = await fresh_database(server_url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await settle(pool)
    finally:
        await pool.close()
    stage = await asyncio.to_thread(stage_append_processes, url, Workload(args.events, args.members), args.batch,
                                    args.processes)
    conn = await asyncpg.connect(url)
    try:
        written = int(await conn.fetchval("SELECT count(*) FROM events"))
        assert written >= args.events, (written, args.events)
    finally:
        await conn.close()
    return Stage(stage.name, written, stage.seconds)


def _postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000, help="commands per handle_batch call")
    parser.add_argument("--processes", type=int, default=2,
                        help="also time the append from this many processes at once, on disjoint members (1: skip)")
    parser.add_argument("--copy-chunk", type=int, default=20_000, help="rows per COPY transaction (second COPY run)")
    args = parser.parse_args()
    assert 1 <= args.batch <= 10_000 and 1 <= args.members <= args.events and 1 <= args.processes <= 8

    if url := os.environ.get("LEDGER_BENCH_DATABASE_URL"):
        event_loop.run(run(args, url, None))
        return
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = server.start()
        try:
            event_loop.run(run(args, url, _postmaster_pid(server)))
        finally:
            server.stop(mode="immediate")


if __name__ == "__main__":
    sys.exit(main())
