"""Kafka ingestion benchmark: topic to queryable balances, against the machine's limits.

    .venv/bin/python bench/kafka_bench.py [--events 1000000 --members 100000 --rate 5000 --seconds 30]

With N booking events already in the topic it measures, in one run:
- produce: how fast one aiokafka producer fills the topic (setup, for context);
- raw consume: aiokafka reading the N messages with no processing (a limit);
- raw COPY: the same number of event-shaped rows COPYed into PostgreSQL (a limit);
- end to end: `ledger consume` in its own process plus `ledger projections run --follow`
  in another, from the first message to every balance queryable (the projection
  checkpoint past the last event), in events/s; then how long the reports' group (the
  finance reports and the segments, which wait for the member read models under load)
  took to catch up;
- CPU per event during the end to end phase, by process role (consumer, projections,
  PostgreSQL, broker): where the budget of the machine's cores goes;
- latency: then, with the same processes running and the backlog drained, booking
  events produced onto the topic at a steady rate, from the produce call to the moment
  the balance read model includes them (p50, p99); and the same again just after the
  consumer was restarted, with no member state cached (the worst case after a deploy).

It starts its own Kafka broker (scripts/kafka.sh) and embedded PostgreSQL unless
LEDGER_BENCH_KAFKA_BOOTSTRAP / LEDGER_BENCH_DATABASE_URL point at running ones (the
bench creates and drops its own topic and database there). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.embedded import EmbeddedPostgres  # noqa: E402
from ledger.store import migrate  # noqa: E402
from ledger.store.database import ensure_database  # noqa: E402
from tests.kafka_broker import KafkaBroker, ensure_topic, free_port_pair  # noqa: E402

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
PRODUCTS = ("flight", "hotel", "package", "rail", "car")
PRODUCE_CHUNK = 5_000
POLL_S = 0.005
E2E_TARGET = 20_000
P99_TARGET_S = 1.0


def events(n: int, members: int, run: str, first: int = 0) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(f"{run}-{first}")
    for i in range(first, first + n):
        member = f"M-{run}-{rng.randrange(members)}"
        yield member.encode(), json.dumps({
            "event_id": f"{run}-{i}", "type": "booking.completed", "member_id": member, "booking_id": f"BK-{run}-{i}",
            "product": PRODUCTS[i % 5], "amount": f"{rng.randrange(1_000, 60_000) / 100:.2f}", "currency": "EUR",
            "occurred_at": (T0 + timedelta(seconds=i)).isoformat(),
        }).encode()


def producer(bootstrap: str):  # type: ignore[no-untyped-def]
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                            max_batch_size=262_144, request_timeout_ms=30_000)


async def produce_all(bootstrap: str, topic: str, n: int, members: int, run: str) -> float:
    p = producer(bootstrap)
    await p.start()
    started = time.perf_counter()
    try:
        pending = []
        for key, value in events(n, members, run):
            pending.append(await p.send(topic, key=key, value=value))
            if len(pending) >= PRODUCE_CHUNK:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await p.stop()
    return time.perf_counter() - started


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=10_000,
                                fetch_max_bytes=8_388_608, max_partition_fetch_bytes=4_194_304)
    await consumer.start()
    got = 0
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        started = time.perf_counter()
        while got < n:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                got += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def raw_copy(url: str, n: int, members: int, run: str) -> float:
    """COPY of N rows shaped like the events table's (jsonb data and metadata, hash)."""
    rows = []
    for i, (key, value) in enumerate(events(n, members, run)):
        rows.append((key.decode(), i + 1, "PointsEarned", 1, value.decode(), '{"source": "kafka"}',
                     T0 + timedelta(seconds=i), os.urandom(32)))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TEMP TABLE copy_probe (stream_id text, stream_version int, type text,"
                           " schema_version smallint, data jsonb, metadata jsonb, occurred_at timestamptz, hash bytea)")
        started = time.perf_counter()
        await conn.copy_records_to_table("copy_probe", records=rows)
        return time.perf_counter() - started
    finally:
        await conn.close()


def consumer_process(url: str, bootstrap: str, topic: str, group: str, data_dir: Path, batch: int,
                     log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_DATA_DIR": str(data_dir),
           "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LEDGER_KAFKA_TOPIC": topic,
           "LEDGER_KAFKA_DLQ_TOPIC": f"{topic}.dlq", "LEDGER_KAFKA_GROUP_ID": group,
           "LEDGER_KAFKA_BATCH_MESSAGES_MAX": str(batch), "LEDGER_KAFKA_BATCH_MS_MAX": "50",
           "LEDGER_KAFKA_LAG_LOG_INTERVAL_S": "10"}
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "ledger.cli", "consume"], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def projections_process(url: str, data_dir: Path, log_path: Path, group: str | None = None) -> subprocess.Popen[bytes]:
    """`ledger projections run --follow`: the read models in a process of their own, as
    when scaling out, so neither the consumer nor this bench's producer slows them; with
    `group`, only that projection group's runner (`--group`)."""
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_DATA_DIR": str(data_dir),
           "LEDGER_PROJECTION_IDLE_MS": "5", "LEDGER_PROJECTION_PAGE_SIZE": "5000"}
    command = [sys.executable, "-m", "ledger.cli", "projections", "run", "--follow"]
    if group is not None:
        command += ["--group", group]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


class Pipeline:
    """`ledger consume` process(es) and a `ledger projections run --follow` process on one
    topic, as deployed when scaling out; this bench process only produces and polls."""

    def __init__(self, url: str, bootstrap: str, topic: str, batch: int, data_dir: Path, consumers: int,
                 reports_process: bool = False, members_only: bool = False) -> None:
        self.url, self.bootstrap, self.topic, self.batch = url, bootstrap, topic, batch
        self.data_dir, self.consumers = data_dir, consumers
        self.reports_process = reports_process
        self.members_only = members_only
        self.reporter: subprocess.Popen[bytes] | None = None
        self.group = f"ledger-{uuid.uuid4().hex[:6]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.projector: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_consumers(self) -> None:
        self.starts += 1
        self.procs = [consumer_process(self.url, self.bootstrap, self.topic, self.group, self.data_dir, self.batch,
                                       self.data_dir / f"consumer-{self.starts}-{i}.log")
                      for i in range(self.consumers)]

    def stop_consumers(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(60)
        self.procs = []

    def start(self) -> None:
        self.start_consumers()
        if self.members_only:  # the reports' group not run at all: what it costs the rest
            self.projector = projections_process(self.url, self.data_dir, self.data_dir / "projections.log", "members")
        elif self.reports_process:  # the reports' group in a process of its own
            self.projector = projections_process(self.url, self.data_dir, self.data_dir / "projections.log", "members")
            self.reporter = projections_process(self.url, self.data_dir, self.data_dir / "reports.log", "reports")
        else:
            self.projector = projections_process(self.url, self.data_dir, self.data_dir / "projections.log")

    def stop(self) -> None:
        self.stop_consumers()
        for proc in (self.projector, self.reporter):
            if proc is not None:
                proc.terminate()
                proc.wait(60)

    def check(self) -> None:
        for proc in [*self.procs, self.projector, *([self.reporter] if self.reports_process else [])]:
            assert proc is not None and proc.poll() is None, f"a pipeline process exited; logs in {self.data_dir}"


class CpuMeter:
    """CPU time of the pipeline's parts (this machine's processes, by role), so the end
    to end figure comes with where its CPU went: the budget per event.

    Only this run's server and broker count (`postmaster`, `broker`: their process ids,
    children included) when known: on a machine shared with other servers and brokers,
    counting every `postgres` and Kafka process put theirs in this run's figures."""

    def __init__(self, pipeline: Pipeline, postmaster: int | None = None, broker: int | None = None) -> None:
        self.pipeline = pipeline
        self.postmaster, self.broker = postmaster, broker
        self.started: dict[int, tuple[str, float]] = {}
        self.t0 = 0.0

    def _ours(self, proc: psutil.Process, root: int | None) -> bool:
        """Whether `proc` is `root` or a child of it (True when `root` is not known)."""
        return root is None or proc.pid == root or proc.ppid() == root

    def _sample(self) -> dict[int, tuple[str, float]]:
        consumers = {p.pid for p in self.pipeline.procs}
        projector = self.pipeline.projector.pid if self.pipeline.projector is not None else None
        reporter = self.pipeline.reporter.pid if self.pipeline.reporter is not None else None
        out = {}
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                pid, cmdline = proc.info["pid"], " ".join(proc.info["cmdline"] or [])
                role = ("consumer" if pid in consumers else "projections" if pid == projector
                        else "reports" if pid == reporter
                        else "PostgreSQL" if proc.info["name"] == "postgres" and self._ours(proc, self.postmaster)
                        else "broker" if "kafka.Kafka" in cmdline and self._ours(proc, self.broker)
                        else "this bench" if pid == os.getpid() else None)
                if role is not None:
                    t = proc.cpu_times()
                    out[pid] = (role, t.user + t.system)
            except psutil.Error:
                continue
        return out

    def start(self) -> None:
        self.started, self.t0 = self._sample(), time.perf_counter()

    def report(self, events: int) -> str:
        ended, seconds = self._sample(), time.perf_counter() - self.t0
        used: dict[str, float] = {}
        for pid, (role, cpu) in ended.items():
            used[role] = used.get(role, 0.0) + cpu - self.started.get(pid, (role, 0.0))[1]
        total = sum(used.values())
        parts = ", ".join(f"{role} {used[role] / events * 1e6:.0f} µs" for role in
                          ("consumer", "projections", "reports", "PostgreSQL", "broker", "this bench") if role in used)
        return (f"    CPU per event: {parts}; total {total / events * 1e6:.0f} µs, {total / seconds:.2f} of"
                f" {psutil.cpu_count()} cores busy (the target allows {psutil.cpu_count() / E2E_TARGET * 1e6:.0f} µs"
                " at full use)")


_MEMBERS_AT = "SELECT position FROM projection_checkpoints WHERE name = 'read_models'"
_REPORTS_AT = "SELECT position FROM projection_checkpoints WHERE name = 'reports'"
_CONSUMED = "SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets WHERE topic = $1"


async def postmaster_pid(pool: asyncpg.Pool) -> int | None:
    """The server's postmaster, from its data directory's `postmaster.pid` (None when
    the server is not on this machine or not readable)."""
    try:
        data_dir = await pool.fetchval("SHOW data_directory")
        return int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError, asyncpg.PostgresError):
        return None


async def end_to_end(pool: asyncpg.Pool, pipeline: Pipeline, n: int, broker: int | None = None) -> tuple[float, int]:
    """From the first stored event to every balance queryable (the projection
    checkpoint at the n-th event): the process start and group join are not ingestion."""
    while not await pool.fetchval("SELECT exists (SELECT 1 FROM events)"):
        pipeline.check()
        await asyncio.sleep(POLL_S)
    started = time.perf_counter()
    meter = CpuMeter(pipeline, await postmaster_pid(pool), broker)
    meter.start()
    # Every message consumed (the offsets the consumer stores with its writes: the topic
    # is fresh), then the member read models at the head: a booking may append more than
    # one event (an upgrade after its earn), so position n is not the last one.
    head = None
    while True:
        if head is None and int(await pool.fetchval(_CONSUMED, pipeline.topic)) >= n:
            head = int(await pool.fetchval("SELECT max(position) FROM events"))
        if head is not None and await pool.fetchval(_MEMBERS_AT) >= head:
            break
        pipeline.check()
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    print(meter.report(n), flush=True)
    # The reports' group (where the code has one) runs behind under load, then catches up.
    while (not pipeline.members_only and (reported := await pool.fetchval(_REPORTS_AT)) is not None
           and reported < head):
        pipeline.check()
        await asyncio.sleep(0.1)
    if pipeline.members_only:
        print("  (the reports' group was not run: --members-only)", flush=True)
    elif reported is not None:
        print(f"  reports caught up {time.perf_counter() - started:.1f} s after the first event"
              f" ({time.perf_counter() - started - elapsed:.1f} s after the member read models)", flush=True)
    return elapsed, int(await pool.fetchval("SELECT count(*) FROM events"))


async def latency(pool: asyncpg.Pool, pipeline: Pipeline, rate: int, seconds: float, members: int, run: str,
                  first: int) -> list[float]:
    """Booking events produced at `rate` per second onto the pipeline's topic, each timed
    from its produce call to the projection checkpoint passing its event."""
    messages = list(events(int(rate * seconds), members, run, first=first))  # not generated on the clock
    # This process's own full collections (over the messages) would hold up the producer
    # and the poller, and show as latency of the ledger's.
    gc.collect()
    gc.freeze()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    total = len(messages)
    p = producer(pipeline.bootstrap)
    await p.start()

    async def poll() -> None:
        last = int(await pool.fetchval(_MEMBERS_AT))
        while len(seen) < total:
            projected = int(await pool.fetchval(_MEMBERS_AT))
            if projected > last:
                now = time.perf_counter()
                for row in await pool.fetch(
                        "SELECT metadata->>'causation_id' AS id FROM events WHERE position > $1 AND position <= $2",
                        last, projected):
                    seen.setdefault(row["id"], now)
                last = projected
            await asyncio.sleep(POLL_S)

    poller = asyncio.create_task(poll())
    try:
        started = time.perf_counter()
        futures = []
        for i, (key, value) in enumerate(messages):
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
            sent[f"{run}-{first + i}"] = time.perf_counter()
            futures.append(await p.send(pipeline.topic, key=key, value=value))
        await asyncio.gather(*futures)
        await asyncio.wait_for(poller, 120)
    finally:
        poller.cancel()
        await p.stop()
    windows: dict[int, list[float]] = {}
    for k, t in sent.items():
        windows.setdefault(int((t - started) // 5), []).append(seen[k] - t)
    print("    p99 by 5 s of sending: " + ", ".join(f"{(max(v) if len(v) < 100 else pct(v, 0.99)) * 1000:.0f} ms"
                                              for _, v in sorted(windows.items())), flush=True)
    return [seen[k] - t for k, t in sent.items()]


async def settle(pool: asyncpg.Pool) -> None:
    """Vacuum and analyse what the previous phase wrote and flush its dirty pages, so
    that a latency phase does not measure the backlog's aftermath."""
    await pool.execute("VACUUM ANALYZE")
    try:
        await pool.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        print("  (CHECKPOINT refused: not a superuser)", flush=True)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def _print_latency(label: str, lat: list[float]) -> None:
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    verdict = "meets" if p99 < P99_TARGET_S else "MISSES"
    print(f"  {label}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
          f" ({verdict} the p99 < 1 s target)", flush=True)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5_000, help="LEDGER_KAFKA_BATCH_MESSAGES_MAX for the consumer")
    ap.add_argument("--consumers", type=int, default=1, help="`ledger consume` processes in the group")
    ap.add_argument("--members-only", action="store_true",
                    help="run only the member projection group (`--group members`): what the reports' group costs")
    ap.add_argument("--reports-process", action="store_true",
                    help="the reports' projection group in a process of its own (`--group reports`)")
    ap.add_argument("--rate", type=int, default=5_000, help="steady produce rate for the latency phase")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the latency phase")
    ap.add_argument("--no-restart", action="store_true", help="leave out the latency phase after a consumer restart")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    broker = server = None
    database = f"ledger_kafka_bench_{uuid.uuid4().hex[:6]}"
    server_url = os.environ.get("LEDGER_BENCH_DATABASE_URL")
    run = uuid.uuid4().hex[:6]
    topic = f"bench-{run}"
    finished = False
    try:  # whatever fails, from the broker's start on, stops what was started
        bootstrap = os.environ.get("LEDGER_BENCH_KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = KafkaBroker(free_port_pair(), work)
            broker.external = None
            broker.start()
            bootstrap = broker.bootstrap
        if not server_url:
            server = EmbeddedPostgres(work / "pg")
            server_url = server.start()
        await ensure_database(server_url, database)
        url = f"{server_url.rpartition('/')[0]}/{database}"
        await migrate(url)
        await ensure_topic(bootstrap, topic, args.partitions)
        await ensure_topic(bootstrap, f"{topic}.dlq", 1)
        n = args.events
        print(f"producing {n:,} booking events for {args.members:,} members into {args.partitions} partitions...",
              flush=True)
        produce_s = await produce_all(bootstrap, topic, n, args.members, run)
        print(f"  produce            {n / produce_s:>10,.0f} events/s  ({produce_s:.1f} s)", flush=True)
        consume_s = await raw_consume(bootstrap, topic, n)
        print(f"  raw aiokafka read  {n / consume_s:>10,.0f} events/s  ({consume_s:.1f} s)", flush=True)
        copy_s = await raw_copy(url, n, args.members, run)
        print(f"  raw COPY           {n / copy_s:>10,.0f} rows/s    ({copy_s:.1f} s)", flush=True)
        pipeline = Pipeline(url, bootstrap, topic, args.batch, work, args.consumers, args.reports_process,
                            args.members_only)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        pipeline.start()
        try:
            e2e_s, stored = await end_to_end(pool, pipeline, n, broker.pid if broker is not None else None)
            assert stored >= n, f"{stored} events stored for {n} produced"
            if stored > n:
                print(f"  ({stored - n:,} events besides the bookings' earns: tier upgrades)", flush=True)
            verdict = "meets" if n / e2e_s >= E2E_TARGET else "MISSES"
            print(f"  end to end         {n / e2e_s:>10,.0f} events/s  ({e2e_s:.1f} s, {args.consumers} consumer"
                  f" process(es); {verdict} the {E2E_TARGET:,}/s target)", flush=True)
            # Steady state: the same, running consumer, its backlog drained, now fed at a
            # steady rate: what the app sees in production. The backlog's aftermath
            # (autovacuum, the checkpoint of its writes) is settled first.
            await settle(pool)
            lat = await latency(pool, pipeline, args.rate, args.seconds, args.members, run, first=n)
            _print_latency(f"produce->queryable at {args.rate:,}/s for {args.seconds:.0f} s", lat)
            # A consumer restarted cold (no member state cached) meets the same load: the
            # worst case after a deploy or a crash, until its cache is warm again.
            if not args.no_restart:
                pipeline.stop_consumers()
                pipeline.start_consumers()
                await settle(pool)
                await asyncio.sleep(5)  # let it join the group
                lat = await latency(pool, pipeline, args.rate, args.seconds, args.members, run,
                                    first=n + int(args.rate * args.seconds))
                _print_latency("the same just after a consumer restart (cold cache)", lat)
        finally:
            pipeline.stop()
            await pool.close()
        finished = True
    finally:
        if server_url and (server is None or server.is_running()):
            try:
                conn = await asyncpg.connect(server_url)
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await conn.close()
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"could not drop {database}: {exc}", file=sys.stderr)
        try:
            if broker is not None:
                broker.stop()
        finally:
            if server is not None:
                server.stop()
        # The broker's log and the server's data and WAL take several GB at 1M events:
        # kept only after a failure, with the processes' logs, to look into.
        if finished:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and data kept in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
