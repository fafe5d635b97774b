"""HTTP load on loopback: GET balance for 10,000 members, and mixed writes.

Starts `ledger serve` (embedded PostgreSQL) in its own process, seeds members through
the batch path, then drives the API from a second process with an open-loop load
generator (requests are scheduled at a fixed rate and latency is measured from the
scheduled time, so a slow server cannot hide its queueing). Also measures the closed-loop
maximum, the server's limit on this machine in the same run.

    .venv/bin/python bench/http_load.py [--members 10000] [--rate 1000] [--seconds 20] [--workers N]

Each run also prints the CPU time the server's processes (`ledger serve` and the HTTP
worker processes it starts) and PostgreSQL's spent per request, read from /proc: steadier
than the rates on a machine shared with other work. `--code DIR` runs another checkout's
`src` (seed and server) with this bench, for a paired comparison in one sitting.
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


def start_server(port: int, env: dict[str, str], token: str | None = None,
                 workers: int = 1, projections_process: bool = False) -> tuple[subprocess.Popen[str], str]:
    """`ledger serve` on `port`, once it answers, and the admin key it printed (`token`
    when it printed none: a server restarted on the same data prints it only once)."""
    extra = ["--workers", str(workers)] if workers > 1 else []
    if projections_process:
        extra.append("--projections-process")
    server = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--port", str(port), *extra],
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


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, user + system CPU seconds) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _tree(stats: dict[int, tuple[str, int, float]], roots: set[int]) -> set[int]:
    tree = set(roots)
    for pid in sorted(stats):  # a child's pid is above its parent's, but for pid wrap-around
        if stats[pid][1] in tree:
            tree.add(pid)
    return tree


def cpu_s(server_pid: int, data_dir: Path) -> tuple[float, float]:
    """CPU seconds so far of the server's process tree, and of this bench's PostgreSQL
    (the embedded server runs in a session of its own, not under the server; other
    PostgreSQL servers on the machine are not counted)."""
    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _stat(int(d))) is not None}
    postmasters = set()
    for pid, (name, _, _) in stats.items():
        if name == "postgres":
            try:
                if str(data_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    postmasters.add(pid)
            except OSError:
                pass
    server = sum(stats[pid][2] for pid in _tree(stats, {server_pid}) if pid in stats)
    postgres = sum(stats[pid][2] for pid in _tree(stats, postmasters) if pid in stats)
    return server, postgres


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


def run_load(kind: str, port: int, token: str, members: int, rate: float, seconds: float,
             server_pid: int | None = None, data_dir: Path | None = None) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    p = ctx.Process(target=load_process, args=(kind, port, token, members, rate, seconds, out))
    before = cpu_s(server_pid, data_dir) if server_pid and data_dir else None
    p.start()
    result = out.get(timeout=seconds * 10 + 120)
    if before is not None:
        after = cpu_s(server_pid, data_dir)  # type: ignore[arg-type]
        result["server_us"] = (after[0] - before[0]) / result["requests"] * 1e6
        result["postgres_us"] = (after[1] - before[1]) / result["requests"] * 1e6
    p.join(30)
    return result


async def seed(data_dir: Path, members: int, code: Path) -> None:
    """Members with a few completed bookings each, through the ledger's batch path."""
    sys.path.insert(0, str(code / "src"))
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
    parser.add_argument("--workers", type=int, default=1, help="`ledger serve --workers`")
    parser.add_argument("--projections-process", action="store_true", help="`ledger serve --projections-process`")
    parser.add_argument("--runs", default="balance-closed,balance,mixed,mixed-closed",
                        help="which runs, in order: balance-closed, balance, mixed, mixed-closed")
    parser.add_argument("--profile", default=None, help="a py-spy binary: record the server during --profile-run"
                                                        " into /tmp/http-load-<run>.txt (collapsed stacks)")
    parser.add_argument("--profile-run", default="mixed-closed")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose src/ is benched")
    args = parser.parse_args()

    code = args.code.resolve()
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-http-bench-"))
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir), "LEDGER_DB_POOL_SIZE_MAX": "20"}
    if code != ROOT:
        env["PYTHONPATH"] = str(code / "src")
    t = time.perf_counter()
    asyncio.run(seed(data_dir, args.members, code))
    print(f"seeded {args.members} members x 3 bookings in {time.perf_counter() - t:.1f}s ({code})")
    server, token = start_server(args.port, env, workers=args.workers,
                                 projections_process=args.projections_process)
    results: dict[str, dict] = {}
    try:
        for _ in range(600):  # both projection groups caught up on the seed (the old code has one)
            out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{args.port}/readyz"], capture_output=True, text=True)
            if '"projection_lag_events":0' in out.stdout and ('"reports_lag_events":0' in out.stdout
                                                               or "reports_lag_events" not in out.stdout):
                break
            time.sleep(0.5)
        run_load("balance", args.port, token, args.members, args.rate, 3)  # warm-up
        runs = {
            "balance-closed": ("balance, closed loop (server limit)", 0, args.seconds / 2),
            "balance": (f"balance, open loop at {args.rate:.0f}/s", args.rate, args.seconds),
            "mixed": (f"mixed writes, open loop at {args.write_rate:.0f}/s", args.write_rate, args.seconds),
            "mixed-closed": ("mixed writes, closed loop (server limit)", 0, args.seconds / 2),
        }
        for kind in args.runs.split(","):
            name, rate, seconds = runs[kind]
            spy = None
            if args.profile and kind == args.profile_run:
                spy = subprocess.Popen([args.profile, "record", "-p", str(server.pid), "--nonblocking", "-r", "200",
                                        "-f", "raw", "-o", str(Path(f"/tmp/http-load-{kind}.txt").resolve()),
                                        "-d", str(int(seconds))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results[name] = run_load(kind, args.port, token, args.members, rate, seconds, server.pid, data_dir)
            if spy is not None:
                spy.wait(60)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)  # the service stops its embedded server before it exits
    # Only after a clean finish: after a failure the data is kept to look into.
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n{'run':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'srv µs':>7} {'pg µs':>6}  statuses")
    for name, r in results.items():
        print(f"{name:<44} {r['rate']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['server_us']:>7.0f}"
              f" {r['postgres_us']:>6.0f}  {r.get('statuses', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
