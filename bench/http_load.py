"""HTTP load on loopback: GET balance for 10,000 members, and mixed writes.

Starts `ledger serve` (embedded PostgreSQL) in its own process, seeds members through
the batch path, then drives the API from a second process with an open-loop load
generator (requests are scheduled at a fixed rate and latency is measured from the
scheduled time, so a slow server cannot hide its queueing). Also measures the closed-loop
maximum, the server's limit on this machine in the same run.

    .venv/bin/python bench/http_load.py [--members 10000] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# --- a minimal HTTP/1.1 keep-alive client: cheaper per request than any library ---

class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await self.reader.readexactly(length)
        return status


def get(path: str, token: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


def post(path: str, token: str, body: dict, key: str | None = None) -> bytes:
    data = json.dumps(body).encode()
    extra = f"Idempotency-Key: {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def start_server(port: int, env: dict[str, str], token: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """`ledger serve` on `port`, once it answers, and the admin key it printed (`token`
    when it printed none: a server restarted on the same data prints it only once)."""
    server = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if m := re.search(r"(lk_\S+)", line):
            token = m.group(1)
        if "Uvicorn running" in line:
            break
    # Read what the server goes on writing (one access-log line per request) and drop it:
    # a pipe nobody reads fills up and blocks the server in the middle of a request.
    threading.Thread(target=server.stdout.read, daemon=True).start()
    if not token:
        server.kill()
        raise AssertionError("no admin key printed")
    return server, token


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def open_loop(port: int, make, rate: float, seconds: float, conns_max: int = 128) -> dict:
    """Send make(i) at `rate` per second for `seconds`; latency from the scheduled time."""
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    opened, latencies, statuses, pending = 0, [], {}, set()

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < conns_max:
            opened += 1
            conn = await Conn.open(port)
        else:
            conn = await idle.get()
        try:
            status = await conn.request(make(i))
        except (OSError, asyncio.IncompleteReadError):
            status, conn = 599, await Conn.open(port)
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    return {"requests": total, "elapsed_s": elapsed, "rate": total / elapsed, "statuses": statuses,
            "p50_ms": percentile(latencies, 50) * 1e3, "p90_ms": percentile(latencies, 90) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "max_ms": max(latencies) * 1e3}


async def closed_loop(port: int, make, connections: int, seconds: float) -> dict:
    """As fast as the server answers, `connections` at a time: the server's limit."""
    deadline = time.perf_counter() + seconds
    count, latencies = 0, []

    async def worker(w: int) -> None:
        nonlocal count
        conn = await Conn.open(port)
        i = w
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await conn.request(make(i))
            latencies.append(time.perf_counter() - t)
            count += 1
            i += connections

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    elapsed = time.perf_counter() - start
    return {"requests": count, "rate": count / elapsed, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3}


def load_process(kind: str, port: int, token: str, members: int, rate: float, seconds: float, out: mp.Queue) -> None:
    """Runs in a second process, so the generator does not share the server's core time slices in-process."""
    rnd = random.Random(7)
    ids = [f"M-{rnd.randrange(members):06d}" for _ in range(int(rate * seconds) + 100_000)]
    now = datetime.now(UTC)

    def balance(i: int) -> bytes:
        return get(f"/v1/members/{ids[i % len(ids)]}/balance", token)

    def mixed(i: int) -> bytes:
        member = ids[i % len(ids)]
        r = i % 10
        if r < 5:  # a booking completed
            return post("/v1/booking-events", token, {
                "event_id": f"bench-{os.getpid()}-{i}", "type": "booking.completed", "member_id": member,
                "booking_id": f"bench-{os.getpid()}-{i}", "product": "hotel", "amount": "180.00",
                "currency": "EUR", "occurred_at": (now - timedelta(minutes=1)).isoformat()})
        if r < 8:
            return post(f"/v1/members/{member}/redemptions", token,
                        {"points": 50, "reward": {"id": "MILES-50", "kind": "airline_miles"}}, key=f"rd-{os.getpid()}-{i}")
        return post(f"/v1/members/{member}/adjustments", token, {"points": 25, "reason": "bench goodwill"},
                    key=f"adj-{os.getpid()}-{i}")

    make = balance if kind.startswith("balance") else mixed
    if kind.endswith("closed"):
        result = asyncio.run(closed_loop(port, make, 32, seconds))
    else:
        result = asyncio.run(open_loop(port, make, rate, seconds))
    out.put(result)


def run_load(kind: str, port: int, token: str, members: int, rate: float, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    p = ctx.Process(target=load_process, args=(kind, port, token, members, rate, seconds, out))
    p.start()
    result = out.get(timeout=seconds * 10 + 120)
    p.join(30)
    return result


async def seed(data_dir: Path, members: int) -> None:
    """Members with a few completed bookings each, through the ledger's batch path."""
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.bootstrap import build
    from ledger.domain import CompleteBooking
    from ledger.handlers import CommandRequest
    from ledger.settings import Settings

    container = await build(Settings(data_dir=data_dir))
    now = datetime.now(UTC)
    try:
        batch = []
        for m in range(members):
            for b in range(3):
                at = now - timedelta(days=30 * (b + 1))
                batch.append(CommandRequest(CompleteBooking(f"M-{m:06d}", at, f"seed-{m}-{b}", "flight",
                                                            Decimal("150.00"), "EUR")))
            if len(batch) >= 3000:
                await container.ledger.handle_batch(batch)
                batch = []
        if batch:
            await container.ledger.handle_batch(batch)
    finally:
        await container.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1_000)
    parser.add_argument("--write-rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=18_080)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ledger-http-bench-"))
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir), "LEDGER_DB_POOL_SIZE_MAX": "20"}
    t = time.perf_counter()
    asyncio.run(seed(data_dir, args.members))
    print(f"seeded {args.members} members x 3 bookings in {time.perf_counter() - t:.1f}s")
    server, token = start_server(args.port, env)
    try:
        for _ in range(600):  # projections caught up on the seed
            out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{args.port}/readyz"], capture_output=True, text=True)
            if '"projection_lag_events":0' in out.stdout:
                break
            time.sleep(0.5)
        run_load("balance", args.port, token, args.members, args.rate, 3)  # warm-up
        results = {
            "balance, closed loop (server limit)": run_load("balance-closed", args.port, token, args.members, 0,
                                                          args.seconds / 2),
            f"balance, open loop at {args.rate:.0f}/s": run_load("balance", args.port, token, args.members,
                                                                 args.rate, args.seconds),
            f"mixed writes, open loop at {args.write_rate:.0f}/s": run_load("mixed", args.port, token, args.members,
                                                                            args.write_rate, args.seconds),
            "mixed writes, closed loop (server limit)": run_load("mixed-closed", args.port, token, args.members, 0,
                                                                 args.seconds / 2),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)  # the service stops its embedded server before it exits
    # Only after a clean finish: after a failure the data is kept to look into.
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n{'run':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name, r in results.items():
        print(f"{name:<44} {r['rate']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  {r.get('statuses', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
