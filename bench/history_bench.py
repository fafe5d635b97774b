"""Write latency against a member's history: a member with 10,000 events beside members
with 10, over HTTP, side by side in one run.

Starts `ledger serve` (embedded PostgreSQL) in its own process on a fresh data
directory, seeds the members through the ledger's batch path, then sends earns
(booking.completed) and redemptions one at a time from a second process, alternating
between the long member and a short one, and prints p50 and p99 of each. A first write
after a restart folds the member's whole history (or starts from a snapshot): that cold
write is measured too, once per member, after the first start (no snapshot: the seed
saved none) and after a second (from what the first saved). The ratio long/short is what to read: the
machine's speed varies from day to day, the ratio much less.

    .venv/bin/python bench/history_bench.py [--events 10000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
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

from http_load import Conn, percentile, post, start_server  # noqa: E402

LONG, SHORT = "M-LONG", "M-SHORT"


async def seed(data_dir: Path, events: int) -> None:
    """`events` events for LONG and 10 for SHORT: four completed bookings to one
    redemption, all inside the points' validity."""
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.bootstrap import build
    from ledger.domain import CompleteBooking, RedeemPoints
    from ledger.handlers import CommandRequest
    from ledger.settings import Settings

    container = await build(Settings(data_dir=data_dir))
    now = datetime.now(UTC)
    start = now - timedelta(days=600)
    try:
        for member, count in ((LONG, events), (SHORT, 10)):
            step = (now - start) / count
            batch = []
            for i in range(count):
                at = start + step * i
                if i % 5 == 4:
                    batch.append(CommandRequest(RedeemPoints(member, at, f"seed-rd-{member}-{i}", 100, "R", "voucher")))
                else:
                    batch.append(CommandRequest(CompleteBooking(member, at, f"seed-{member}-{i}", "hotel",
                                                                Decimal("120.00"), "EUR")))
                if len(batch) == 500:
                    await container.ledger.handle_batch(batch)
                    batch = []
            if batch:
                await container.ledger.handle_batch(batch)
    finally:
        await container.close()


def measure(port: int, token: str, requests: int, cold: str, out: mp.Queue) -> None:
    """In a second process: cold writes first (named `cold`), then alternating warm ones."""
    now = datetime.now(UTC)

    def earn(member: str, i: int | str) -> bytes:
        return post("/v1/booking-events", token, {
            "event_id": f"hb-{member}-{i}", "type": "booking.completed", "member_id": member,
            "booking_id": f"hb-{member}-{i}", "product": "hotel", "amount": "180.00", "currency": "EUR",
            "occurred_at": (now - timedelta(minutes=1)).isoformat()})

    def redeem(member: str, i: int) -> bytes:
        return post(f"/v1/members/{member}/redemptions", token,
                    {"points": 10, "reward": {"id": "MILES-10", "kind": "airline_miles"}}, key=f"hb-rd-{member}-{i}")

    async def run() -> dict[str, list[float]]:
        conn = await Conn.open(port)
        times: dict[str, list[float]] = {}

        async def timed(name: str, raw: bytes) -> None:
            t = time.perf_counter()
            status = await conn.request(raw)
            times.setdefault(name, []).append(time.perf_counter() - t)
            assert status in (200, 201), (name, status)

        for member in (LONG, SHORT):  # the first write of each after the restart
            await timed(f"{cold}, {member}", earn(member, cold.replace(",", "").replace(" ", "-")))
        for i in range(requests):
            for member in (LONG, SHORT):
                await timed(f"earn, {member}", earn(member, i))
                await timed(f"redeem, {member}", redeem(member, i))
        return times

    out.put(asyncio.run(run()))


def serve_and_measure(port: int, env: dict[str, str], requests: int, cold: str, token: str | None) -> dict:
    """Start `ledger serve`, measure from a second process, stop the server (SIGTERM)."""
    server, token = start_server(port, env, token)
    try:
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()
        p = ctx.Process(target=measure, args=(port, token, requests, cold, out))
        p.start()
        times = out.get(timeout=600)
        p.join(30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return {**times, "token": token}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=18_090)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ledger-history-bench-"))
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir)}
    t = time.perf_counter()
    asyncio.run(seed(data_dir, args.events))
    print(f"seeded {LONG} with {args.events} events and {SHORT} with 10 in {time.perf_counter() - t:.1f}s")
    # The first start folds each member's history on its first write; the second starts
    # from whatever snapshot the first saved.
    times = serve_and_measure(args.port, env, args.requests, "cold earn, 1st restart", None)
    token = times.pop("token")
    times.update(serve_and_measure(args.port, env, 0, "cold earn, 2nd restart", token))
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n{'write':<24} {'p50 ms':>8} {'p99 ms':>8}   {'p50 ms':>8} {'p99 ms':>8}   {'ratio p50':>9} {'p99':>6}")
    print(f"{'':<24} {LONG + ' (' + str(args.events) + ')':>17}   {SHORT + ' (10)':>17}")
    for kind in ("cold earn, 1st restart", "cold earn, 2nd restart", "earn", "redeem"):
        long, short = times[f"{kind}, {LONG}"], times[f"{kind}, {SHORT}"]
        lp50, lp99 = percentile(long, 50) * 1e3, percentile(long, 99) * 1e3
        sp50, sp99 = percentile(short, 50) * 1e3, percentile(short, 99) * 1e3
        print(f"{kind:<24} {lp50:>8.2f} {lp99:>8.2f}   {sp50:>8.2f} {sp99:>8.2f}   {lp50 / sp50:>9.1f} {lp99 / sp99:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
