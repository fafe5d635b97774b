"""Write latency against a member's history: a member with 10,000 events (bookings,
redemptions, transfers, holds and their captures) beside members with 10, over HTTP,
side by side in one run.

Starts `ledger serve` (embedded PostgreSQL) in its own process on a fresh data
directory, seeds the members through the ledger's batch path, then sends earns
(booking.completed), redemptions and transfers (to a third member) one at a time from a second process, alternating
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
import json
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

LONG, SHORT, PEER = "M-LONG", "M-SHORT", "M-PEER"


def rules_file(data_dir: Path) -> Path:
    """The built-in rules with transfer limits no history of the bench reaches (the
    built-in ones allow 12 transfers a year)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.domain.rules import DEFAULT_RULES_DICT

    unlimited = 10**9
    path = data_dir.parent / f"{data_dir.name}-rules.json"
    path.write_text(json.dumps({**DEFAULT_RULES_DICT, "transfers": {
        "points_min": 1, "sent_points_per_year": unlimited, "sent_count_per_year": unlimited,
        "received_points_per_year": unlimited, "received_count_per_year": unlimited}}))
    return path


async def seed(data_dir: Path, events: int) -> None:
    """`events` events for LONG and 10 for SHORT, all inside the points' validity: of
    every ten commands, six completed bookings, a redemption, a transfer to PEER, and a
    hold captured in part (three events: held, captured, the rest released)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.bootstrap import build
    from ledger.domain import CaptureHold, CompleteBooking, PlaceHold, RedeemPoints, TransferPoints
    from ledger.handlers import CommandRequest
    from ledger.settings import Settings

    container = await build(Settings(data_dir=data_dir, rules_file=rules_file(data_dir)))
    now = datetime.now(UTC)
    start = now - timedelta(days=600)
    ledger = container.ledger
    try:
        await ledger.handle_batch([CommandRequest(CompleteBooking(PEER, start, "seed-peer", "hotel", Decimal("10"),
                                                                  "EUR"))])
        for member, count in ((LONG, events), (SHORT, 10)):
            # Eleven events per ten commands: a capture in part is two.
            commands = count * 10 // 11
            step = (now - start) / commands
            batch = []
            for i in range(commands):
                at = start + step * i
                match i % 10:
                    case 6:
                        batch.append(CommandRequest(RedeemPoints(member, at, f"seed-rd-{member}-{i}", 100, "R",
                                                                 "voucher")))
                    case 7:
                        batch.append(CommandRequest(TransferPoints(member, at, f"seed-tr-{member}-{i}", PEER, 100,
                                                                   "seed")))
                    case 8:
                        batch.append(CommandRequest(PlaceHold(member, at, f"seed-h-{member}-{i}", 200, "R", "seat",
                                                              at + timedelta(minutes=15))))
                    case 9:
                        held_at = start + step * (i - 1)  # captured a minute after it was placed
                        batch.append(CommandRequest(CaptureHold(member, held_at + timedelta(minutes=1),
                                                                f"seed-h-{member}-{i - 1}",
                                                                f"seed-hrd-{member}-{i}", 150)))
                    case _:
                        batch.append(CommandRequest(CompleteBooking(member, at, f"seed-{member}-{i}", "hotel",
                                                                    Decimal("120.00"), "EUR")))
                if len(batch) == 500 or i == commands - 1:
                    for outcome in await ledger.handle_batch(batch):
                        assert outcome.status == "applied", outcome
                    batch = []
        versions = {m: s.version for m, (s, _) in (await ledger.load([LONG, SHORT])).items()}
        print(f"seeded events: {versions}")
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

    def transfer(member: str, i: int) -> bytes:
        return post("/v1/transfers", token, {"from_member_id": member, "to_member_id": PEER, "points": 100,
                                             "reason": "bench"}, key=f"hb-tr-{member}-{i}")

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
                await timed(f"transfer, {member}", transfer(member, i))
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
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir), "LEDGER_RULES_FILE": str(rules_file(data_dir))}
    t = time.perf_counter()
    asyncio.run(seed(data_dir, args.events))
    print(f"seeded {LONG} with about {args.events} events and {SHORT} with 10 in {time.perf_counter() - t:.1f}s")
    # The first start folds each member's history on its first write; the second starts
    # from whatever snapshot the first saved.
    times = serve_and_measure(args.port, env, args.requests, "cold earn, 1st restart", None)
    token = times.pop("token")
    times.update(serve_and_measure(args.port, env, 0, "cold earn, 2nd restart", token))
    shutil.rmtree(data_dir, ignore_errors=True)
    rules_file(data_dir).unlink()
    print(f"\n{'write':<24} {'p50 ms':>8} {'p99 ms':>8}   {'p50 ms':>8} {'p99 ms':>8}   {'ratio p50':>9} {'p99':>6}")
    print(f"{'':<24} {LONG + ' (' + str(args.events) + ')':>17}   {SHORT + ' (10)':>17}")
    for kind in ("cold earn, 1st restart", "cold earn, 2nd restart", "earn", "redeem", "transfer"):
        long, short = times[f"{kind}, {LONG}"], times[f"{kind}, {SHORT}"]
        lp50, lp99 = percentile(long, 50) * 1e3, percentile(long, 99) * 1e3
        sp50, sp99 = percentile(short, 50) * 1e3, percentile(short, 99) * 1e3
        print(f"{kind:<24} {lp50:>8.2f} {lp99:>8.2f}   {sp50:>8.2f} {sp99:>8.2f}   {lp50 / sp50:>9.1f} {lp99 / sp99:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
