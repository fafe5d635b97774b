"""What-if simulation benchmark: the replay of a year of bookings under a draft rule set,
against what the same run measures as this machine's limits for it.

    .venv/bin/python bench/simulation_bench.py [--commands N --members M --page P]

The history: core_bench's bookings (`--commands` booking commands for `--members`
members over a year, about 30% confirmed first and completed one round later, so
about 85% of the commands are earns), appended through the batch path. Then, over the
year's window, in the same run:
- read only: the replay's own page query (`ledger.simulations._EARNS_SQL`) page by page,
  rows decoded by asyncpg and dropped: what reading the window costs;
- price only: a bare `ProgramRules.compute_earn` loop over the same earns' fields,
  already decoded: what the domain's pricing costs;
- the replay (`ledger.simulations.replay`, what the simulation scheduler runs), with the
  draft doubling the hotel rate: earns per second, how its time splits between reading
  and pricing, the longest it held the event loop pricing (and how late a 1 ms ticker
  task woke at most, which counts decoding the pages too), and the growth of this
  process's resident memory while it ran (sampled each page), for two page sizes.

It starts its own embedded PostgreSQL in a temporary directory unless
LEDGER_BENCH_DATABASE_URL points at a server (it creates and drops its own database
there). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core_bench import T0, Workload, fresh_database  # noqa: E402

from ledger.bootstrap import GcPacer, build  # noqa: E402
from ledger.domain.rules import ProgramRules  # noqa: E402
from ledger.embedded import EmbeddedPostgres  # noqa: E402
from ledger.settings import Settings  # noqa: E402
from ledger.simulations import _EARNS_SQL, EARN_TYPES, replay  # noqa: E402

BATCH = 1_000
TARGET_EARNS_S = 100_000


async def _ticker(late_max: list[float]) -> None:
    """What another task of the event loop (an HTTP request) sees: how late a 1 ms sleep
    wakes, at most."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        late_max[0] = max(late_max[0], time.perf_counter() - t - 0.001)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


async def run(args: argparse.Namespace, server_url: str) -> None:
    url = await fresh_database(server_url)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), db_pool_size_max=4,  # type: ignore[call-arg]
                            state_cache_members_max=args.members)
        container = await build(settings, run_migrations=False, url=url)
    try:
        t = time.perf_counter()
        work = Workload(args.commands, args.members)
        pacer = GcPacer()
        for indexes in work.batches(BATCH):
            out = await container.ledger.handle_batch([work.request(i) for i in indexes])
            pacer.after_batch()
            assert out.counts()["applied"] == len(out), "the bench's commands must all apply"
        head = await container.store.head()
        print(f"appended {head:,} events for {args.commands:,} booking commands in {time.perf_counter() - t:,.0f} s",
              flush=True)
        await container.pool.execute("VACUUM ANALYZE events")

        book = container.book
        rules = book.at(T0)
        start, end = T0 - timedelta(days=1), T0 + timedelta(days=366)
        draft = ProgramRules.from_dict({**dict(book.version_at(T0).document), "version": "draft",
                                        "earn_rates": {**{p: {c: str(r) for c, r in rates.items()}
                                                          for p, rates in rules.earn_rates.items()},
                                                       "hotel": {c: str(r * 2) for c, r in
                                                                 rules.earn_rates["hotel"].items()}}})
        earns = await container.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'PointsEarned' AND occurred_at >= $1 AND occurred_at < $2",
            start, end)
        process = psutil.Process()

        async with container.pool.acquire() as conn:
            # Read only.
            t = time.perf_counter()
            rows_read, after, sample = 0, 0, []
            while after < head:
                upto = min(after + args.page, head)
                rows = await conn.fetch(_EARNS_SQL, after, upto, start, end, draft.expiry_months, EARN_TYPES)
                rows_read += len(rows)
                if len(sample) < 200_000:
                    sample.extend((r[4], Decimal(r[5]), r[6], r[8], r[1]) for r in rows[:2_000])
                after = upto
            read_s = time.perf_counter() - t
            assert rows_read == earns
            # Price only: compute_earn over already decoded fields (EUR/GBP/USD have rates of their own).
            tiers = {t.name for t in rules.tiers}
            t = time.perf_counter()
            for product, amount, currency, tier, at in sample:
                rules.compute_earn(product=product, amount=amount, currency=currency,
                                   tier=tier if tier in tiers else "member", first_booking=False, at=at)
            price_us = (time.perf_counter() - t) / len(sample) * 1e6

            results = []
            for page in (args.page, args.page * 4):
                baseline = process.memory_info().rss
                peak = [baseline]

                async def on_page(position: int, events_read: int) -> None:
                    peak[0] = max(peak[0], process.memory_info().rss)

                lag = [0.0]
                ticking = asyncio.create_task(_ticker(lag))
                result = await replay(conn, draft, book, start, end, head, page, on_page)
                ticking.cancel()
                results.append((page, result, peak[0] - baseline, lag[0]))

        print(f"\n{head:,} events, {earns:,} booking earns in the window; page {args.page:,} positions")
        print(f"machine limit, read only: {rows_read / read_s:,.0f} earns/s ({read_s:,.1f} s)")
        print(f"machine limit, compute_earn only: {1e6 / price_us:,.0f} earns/s ({price_us:.2f} µs each)")
        for page, result, grown, lag in results:
            r = result["replay"]
            hotel = {row["product"]: row for row in result["by_product"]}["hotel"]
            print(f"replay, page {page:,}: {r['earns_per_s']:,} earns/s ({r['seconds']:,.1f} s: read {r['read_s']:,.1f}"
                  f" s, price {r['price_s']:,.1f} s, rest {r['seconds'] - r['read_s'] - r['price_s']:,.1f} s);"
                  f" loop held at most {r['loop_block_ms_max']} ms pricing, a 1 ms ticker late by at most {lag * 1000:,.1f}"
                  f" ms; RSS grew {_mib(grown)};"
                  f" hotel points {hotel['actual']:,} -> {hotel['simulated']:,}")
            assert result["earns"] == earns
        print(f"peak RSS of the process (history appended in it too): {_mib(process.memory_info().rss)};"
              f" target {TARGET_EARNS_S:,} earns/s")
    finally:
        await container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=1_200_000, help="booking commands (about 85%% earn)")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=5_000, help="positions a page")
    args = parser.parse_args()
    assert 1 <= args.members <= args.commands and 10 <= args.page <= 50_000
    if url := os.environ.get("LEDGER_BENCH_DATABASE_URL"):
        asyncio.run(run(args, url))
        return
    with tempfile.TemporaryDirectory(prefix="ledger-simulation-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = server.start()
        try:
            asyncio.run(run(args, url))
        finally:
            server.stop(mode="immediate")


if __name__ == "__main__":
    sys.exit(main())
