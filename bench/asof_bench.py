"""As-of reads over HTTP for a member with 1,000 events (earns, redemptions, expiries):
p50 and p99 of the balance as of an instant, beside the plain balance route (from the
read models) in the same run, so that the as-of figure reads as a ratio of what this
machine does for the cheapest read.

Starts `ledger serve` (embedded PostgreSQL) in its own process on a fresh data directory,
seeds the member through the ledger's batch path over four years (so that lots reach
their dates and the expiry commands take them), then, from a second process, one request
at a time on one connection, sends in turn: the plain balance, the balance as of a random
instant of the member's history, the balance as of the latest instant (every event
folded), and a statement over a random year.

    .venv/bin/python bench/asof_bench.py [--events 1000] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from http_load import Conn, get, percentile, start_server  # noqa: E402

MEMBER = "M-ASOF"
YEARS = 4


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def seed(data_dir: Path, events: int, start: datetime, end: datetime) -> int:
    """About `events` events from `start` to `end`: of every ten commands, seven
    completed bookings, two redemptions and an expiry run (which expires what has
    reached its date, 24 months on). Returns the member's event count."""
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.bootstrap import build
    from ledger.domain import CompleteBooking, ExpirePoints, RedeemPoints
    from ledger.handlers import CommandRequest
    from ledger.settings import Settings

    container = await build(Settings(data_dir=data_dir))
    ledger = container.ledger
    try:
        version, i = 0, 0
        step = (end - start) / events
        while version < events:
            batch = []
            for _ in range(min(100, events - version)):
                at = start + step * i
                match i % 10:
                    case 3 | 7:
                        command = RedeemPoints(MEMBER, at, f"rd-{i}", 150, "R", "voucher")
                    case 9:
                        command = ExpirePoints(MEMBER, at, 1_000)
                    case _:
                        command = CompleteBooking(MEMBER, at, f"bk-{i}", "hotel", Decimal("120.00"), "EUR")
                batch.append(CommandRequest(command))
                i += 1
            await ledger.handle_batch(batch)
            (state, _), = (await ledger.load([MEMBER])).values()
            version = state.version
        return version
    finally:
        await container.close()


def measure(port: int, token: str, requests: int, start: datetime, end: datetime, out: mp.Queue) -> None:
    rng = random.Random(1)

    def instant() -> datetime:
        return start + (end - start) * rng.random()

    reads = {
        "balance (read models)": lambda: f"/v1/members/{MEMBER}/balance",
        "balance as_of random": lambda: f"/v1/members/{MEMBER}/balance?as_of={_iso(instant())}",
        "balance as_of latest": lambda: f"/v1/members/{MEMBER}/balance?as_of={_iso(end)}",
        "statement, a year": lambda: (lambda at: f"/v1/members/{MEMBER}/statement?from={_iso(at)}"
                                                 f"&to={_iso(min(at + timedelta(days=365), end))}")(instant()),
    }

    async def run() -> dict[str, list[float]]:
        conn = await Conn.open(port)
        times: dict[str, list[float]] = {name: [] for name in reads}
        for i in range(requests + 20):
            for name, path in reads.items():
                raw = get(path(), token)
                t = time.perf_counter()
                status = await conn.request(raw)
                if i >= 20:  # the first few warm the server's caches and connections
                    times[name].append(time.perf_counter() - t)
                assert status == 200, (name, status)
        return times

    out.put(asyncio.run(run()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--port", type=int, default=18_091)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ledger-asof-bench-"))
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir)}
    end = datetime.now(UTC) - timedelta(days=1)
    start = end - timedelta(days=365 * YEARS)
    t = time.perf_counter()
    events = asyncio.run(seed(data_dir, args.events, start, end))
    print(f"seeded {MEMBER} with {events} events over {YEARS} years in {time.perf_counter() - t:.1f}s")
    server, token = start_server(args.port, env)
    try:
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()
        p = ctx.Process(target=measure, args=(args.port, token, args.requests, start, end, out))
        p.start()
        times = out.get(timeout=900)
        p.join(30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(data_dir, ignore_errors=True)
    base = percentile(times["balance (read models)"], 99)
    print(f"\n{'read':<24} {'p50 ms':>8} {'p99 ms':>8} {'p99 / plain p99':>16}   ({args.requests} each)")
    for name, values in times.items():
        p50, p99 = percentile(values, 50) * 1e3, percentile(values, 99) * 1e3
        print(f"{name:<24} {p50:>8.2f} {p99:>8.2f} {p99 / (base * 1e3):>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
