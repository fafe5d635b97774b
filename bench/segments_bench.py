"""Customer value segments at scale: the time of `GET /v1/segments`' query and of a
member's segment, over a read model of N members with their bookings.

    .venv/bin/python bench/segments_bench.py [--members 100000 --bookings-mean 6 --years 3]

The read model's rows are written directly (COPY), as the projections would leave them:
each member with a first event in the last `years` years and about `bookings-mean`
bookings since then, a tenth in another currency and a twentieth cancelled (amount 0).
It starts its own embedded PostgreSQL in a temporary directory unless
LEDGER_BENCH_DATABASE_URL points at a server (the bench creates and drops its own
database there). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from ledger.domain import DEFAULT_RULES
from ledger.embedded import EmbeddedPostgres
from ledger.store import migrate
from projections.segment_queries import member_segment, segments_overview, top_edge

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


def _rows(members: int, bookings_mean: float, years: int, seed: int) -> tuple[list[tuple], list[tuple]]:
    rnd = random.Random(seed)
    span_s = years * 365 * 86_400
    member_rows, booking_rows = [], []
    for m in range(members):
        member = f"M-{m:07d}"
        first = NOW - timedelta(seconds=rnd.randrange(span_s))
        member_rows.append((member, first))
        for b in range(max(1, round(rnd.expovariate(1 / bookings_mean)))):
            at = first + timedelta(seconds=rnd.randrange(max(1, int((NOW - first).total_seconds()))))
            amount = Decimal(rnd.randint(3_000, 400_000)) / 100 if rnd.random() > 0.05 else Decimal(0)
            booking_rows.append((member, f"B{b}", at, "EUR" if rnd.random() > 0.1 else "USD", amount))
    return member_rows, booking_rows


async def _timed(n: int, call) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(url: str, args: argparse.Namespace) -> None:
    await migrate(url)
    member_rows, booking_rows = _rows(args.members, args.bookings_mean, args.years, args.seed)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("segment_members", records=member_rows)
        await conn.copy_records_to_table("segment_bookings", records=booking_rows)
        await conn.execute("VACUUM ANALYZE segment_members")
        await conn.execute("VACUUM ANALYZE segment_bookings")
    rules = DEFAULT_RULES.segments
    overview = await segments_overview(pool, NOW, rules)
    print(f"{args.members} members, {len(booking_rows)} bookings; segments: "
          + ", ".join(f"{t.segment.value} {t.members}" for t in overview.segments)
          + f"; top {overview.top_members} bring {overview.top_value / overview.value:.0%} of the value")
    whole = await _timed(args.repeat, lambda: segments_overview(pool, NOW, rules))
    ids = [member_rows[random.Random(args.seed).randrange(len(member_rows))][0] for _ in range(args.repeat)]
    edge = await _timed(args.repeat, lambda: top_edge(pool, NOW, rules))
    top = await top_edge(pool, NOW, rules)
    it = iter(ids * 10)
    one = await _timed(args.repeat * 10, lambda: member_segment(pool, next(it), NOW, rules, top))
    for name, times in (("GET /v1/segments query", whole), ("the top share's edge (kept a while)", edge),
                        ("a member's segment, the edge kept", one)):
        print(f"{name}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms ({len(times)} runs)")
    await pool.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--bookings-mean", type=float, default=6.0)
    p.add_argument("--years", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if server := os.environ.get("LEDGER_BENCH_DATABASE_URL"):
        base = server.rpartition("/")[0]
        conn = await asyncpg.connect(server)
        await conn.execute("DROP DATABASE IF EXISTS segments_bench")
        await conn.execute("CREATE DATABASE segments_bench")
        await conn.close()
        try:
            await run(f"{base}/segments_bench", args)
        finally:
            conn = await asyncpg.connect(server)
            await conn.execute("DROP DATABASE IF EXISTS segments_bench WITH (FORCE)")
            await conn.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = await asyncio.to_thread(server.start)
        try:
            await run(url, args)
        finally:
            server.stop(mode="immediate")


if __name__ == "__main__":
    asyncio.run(main())
