"""Reports benchmark: the liability and activity reports over about 1,000,000 events,
against a `SELECT count(*)` of the events table in the same run (what one pass over the
history costs this machine), so the figures read as a ratio.

    .venv/bin/python bench/reports_bench.py [--bookings N --members M --redeemers R --reads K]

The history: core_bench's bookings (`--bookings`, about 30% pending then completed),
then a redemption by each of `--redeemers` members a year on, then the expiry job a
month past the first lots' dates; a rebuild fills the read models, and the live runner
applies the expiries. Each report is then read `--reads` times through the query module
at instants and spans drawn over the history (p50, p99), plus one cold read first.

It starts its own embedded PostgreSQL in a temporary directory unless
LEDGER_BENCH_DATABASE_URL points at a server (it creates and drops its own database
there). A measurement, not a test: it asserts only what the figures need to mean
something (every command applied, every event projected).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core_bench import T0, Workload, fresh_database, settle  # noqa: E402

from ledger.bootstrap import build  # noqa: E402
from ledger.domain import RedeemPoints  # noqa: E402
from ledger.domain.timeutil import add_months  # noqa: E402
from ledger.embedded import EmbeddedPostgres  # noqa: E402
from ledger.expiry import expire_due  # noqa: E402
from ledger.handlers import CommandRequest  # noqa: E402
from ledger.settings import Settings  # noqa: E402
from projections import report_queries  # noqa: E402
from projections.runner import rebuild  # noqa: E402

BATCH = 1_000


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _timed(call) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    await call()
    return (time.perf_counter() - t) * 1000


async def run(args: argparse.Namespace, server_url: str) -> None:
    url = await fresh_database(server_url)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), db_pool_size_max=4,  # type: ignore[call-arg]
                            state_cache_members_max=args.members)
        container = await build(settings, run_migrations=False, url=url)
    try:
        t = time.perf_counter()
        work = Workload(args.bookings, args.members)
        for indexes in work.batches(BATCH):
            out = await container.ledger.handle_batch([work.request(i) for i in indexes])
            assert all(r.status == "applied" for r in out), "the bench's commands must all apply"
        at = T0 + timedelta(days=400)
        for start in range(0, args.redeemers, BATCH):
            out = await container.ledger.handle_batch([
                CommandRequest(RedeemPoints(f"M-{m:07d}", at + timedelta(seconds=m), f"rd-{m}", 150 + m % 400,
                                            "reward", "hotel_discount"), idempotency_key=f"rd-{m}", request_hash="")
                for m in range(start, min(start + BATCH, args.redeemers))])
            assert all(r.status == "applied" for r in out), "the bench's commands must all apply"
        print(f"appended {await container.store.head():,} events in {time.perf_counter() - t:,.0f} s", flush=True)

        await settle(container.pool)
        t = time.perf_counter()
        head = await rebuild(container.pool, container.store, dsn=container.url)
        print(f"rebuild of {head:,} events: {time.perf_counter() - t:,.1f} s", flush=True)
        expire_at = add_months(T0, container.rules.expiry_months) + timedelta(days=30)
        t = time.perf_counter()
        expired = 0
        while (appended := await expire_due(container.ledger, container.pool, expire_at)) > 0:
            expired += appended
            await container.project()
        await container.project()
        events = await container.store.head()
        print(f"expiry job: {expired:,} events, projected live, in {time.perf_counter() - t:,.1f} s;"
              f" {events:,} events in all", flush=True)
        await settle(container.pool)

        pool, rnd = container.pool, random.Random(1)
        sizes = {t: await pool.fetchval(f"SELECT count(*) FROM {t}")
                 for t in ("liability_days", "liability_moments", "activity_days")}
        print("read model rows: " + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
        span_days = (expire_at - T0).days + 1
        limit = [await _timed(lambda: pool.fetchval("SELECT count(*) FROM events")) for _ in range(5)]

        def instant() -> datetime:
            return T0 + timedelta(seconds=rnd.randrange(span_days * 86_400))

        async def liability() -> None:
            await report_queries.liability(pool, instant())

        async def days() -> None:
            # A year that covers the bookings' (the first 366 days), give or take a fortnight.
            first = (T0 + timedelta(days=rnd.randrange(-15, 15))).date()
            await report_queries.activity(pool, first, first + timedelta(days=366), monthly=False)

        async def months() -> None:
            first = instant().date() - timedelta(days=2_000)
            await report_queries.activity(pool, first, first + timedelta(days=3_660), monthly=True)

        rows = []
        for name, call in (("liability as of an instant", liability), ("activity, 366 days by day", days),
                           ("activity, 10 years by month", months)):
            cold = await _timed(call)
            samples = [await _timed(call) for _ in range(args.reads)]
            p50, p99 = _percentiles(samples)
            rows.append((name, cold, p50, p99))
        c50, _ = _percentiles(limit)
        print(f"\n{events:,} events; machine limit: SELECT count(*) FROM events p50 {c50:,.1f} ms")
        print(f"{'report':32} {'cold ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'p50 / count(*)':>15}")
        for name, cold, p50, p99 in rows:
            print(f"{name:32} {cold:9.1f} {p50:9.1f} {p99:9.1f} {p50 / c50:15.3f}")
    finally:
        await container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=900_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--redeemers", type=int, default=60_000, help="members who redeem once, a year on")
    parser.add_argument("--reads", type=int, default=100, help="timed reads of each report")
    args = parser.parse_args()
    assert 1 <= args.members <= args.bookings and 0 <= args.redeemers <= args.members and 1 <= args.reads <= 10_000
    if url := os.environ.get("LEDGER_BENCH_DATABASE_URL"):
        asyncio.run(run(args, url))
        return
    with tempfile.TemporaryDirectory(prefix="ledger-reports-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = server.start()
        try:
            asyncio.run(run(args, url))
        finally:
            server.stop(mode="immediate")


if __name__ == "__main__":
    sys.exit(main())
