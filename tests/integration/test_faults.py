"""Fault injection on the real PostgreSQL: the service heals itself.

`ledger serve` runs as a child process on an embedded PostgreSQL of its own (these
tests kill it, so not the session's shared server), under a write load of booking
events with unique ids. The postmaster is SIGKILLed three times and restarted once
with `pg_ctl restart -m immediate`; the service must start the database again by
itself each time, answer no 500 meanwhile (503s are allowed, and the load retries
them), and hold every write it acknowledged exactly once afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from ledger.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
KILLS = 3
RECOVERY_S_MAX = 30.0  # from a fault to the next acknowledged write
STARTUP_S_MAX = 90.0
WRITES_BETWEEN_FAULTS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Load:
    """Booking events with unique ids from `WORKERS` clients; each event is retried
    on 503 until it is acknowledged, as a booking system would."""

    base_url: str
    token: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acked: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    def event(self) -> dict[str, str]:
        i, self._next = self._next, self._next + 1
        return {"event_id": f"{self.run}-{i}", "type": "booking.completed", "member_id": f"M-{self.run}-{i % 50}",
                "booking_id": f"BK-{self.run}-{i}", "product": "hotel", "amount": "120.00", "currency": "EUR",
                "occurred_at": "2026-04-01T08:00:00+00:00"}

    async def worker(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                body = self.event()
                while True:  # bounded by the test's own deadlines, which set `stop`
                    try:
                        r = await client.post("/v1/booking-events", json=body)
                    except httpx.TransportError as exc:
                        self.failures.append(f"{body['event_id']}: {type(exc).__name__}: {exc}")
                        return
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if r.status_code in (200, 201):
                        self.acked.append(body["event_id"])
                        break
                    if r.status_code == 503 and r.headers.get("content-type") == "application/problem+json" \
                            and r.headers.get("retry-after"):
                        if self.stop.is_set():
                            break  # never acknowledged: it may or may not be in, at most once
                        await asyncio.sleep(0.05)
                        continue
                    self.failures.append(f"{body['event_id']}: {r.status_code} {r.text[:300]}")
                    return

    async def acked_after(self, count: int, timeout_s: float, what: str, server_log: Path) -> float:
        """Wait until `count` more writes are acknowledged; how long it took."""
        start, target = time.monotonic(), len(self.acked) + count
        while len(self.acked) < target:
            assert not self.failures, self.failures[:5]
            assert time.monotonic() - start < timeout_s, \
                f"no recovery within {timeout_s} s after {what}\n{_tail(server_log)}"
            await asyncio.sleep(0.02)
        return time.monotonic() - start


async def _watch_readiness(base_url: str, seen: set[tuple[int, int, str]], stop: asyncio.Event) -> None:
    """What /healthz and /readyz answer through the faults: (healthz, readyz, database)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            health, ready = await client.get("/healthz"), await client.get("/readyz")
            seen.add((health.status_code, ready.status_code, ready.json()["database"]))
            await asyncio.sleep(0.02)


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def _started(proc: subprocess.Popen[bytes], log_path: Path, base_url: str) -> str:
    """The admin token the first start prints, once the service is ready."""
    deadline = time.monotonic() + STARTUP_S_MAX
    token = None
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while True:
            assert proc.poll() is None, _tail(log_path)
            assert time.monotonic() < deadline, f"ledger serve did not start\n{_tail(log_path)}"
            if token is None:
                token = next((line.strip() for line in log_path.read_text(errors="replace").splitlines()
                              if line.strip().startswith("lk_")), None)
            if token is not None:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return token
                except httpx.TransportError:
                    pass
            await asyncio.sleep(0.1)


def _server_processes(pgdata: Path) -> list[int]:
    """Live processes working in `pgdata`: PostgreSQL's postmaster and backends."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == pgdata:
                found.append(int(entry.name))
        except OSError:
            continue  # exited, or a zombie
    return found


def _kill_postmaster(server: EmbeddedPostgres) -> None:
    pid = int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)


async def test_the_service_recovers_from_postgres_kills_and_restarts_with_no_500_and_no_lost_write(
    tmp_path: Path,
) -> None:
    data_dir, port, log_path = tmp_path / "data", _free_port(), tmp_path / "serve.log"
    server = EmbeddedPostgres(data_dir / "postgres")  # the one `ledger serve` starts, to hurt it
    env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir), "LEDGER_EXPIRY_INTERVAL_S": "3600",
           "LEDGER_DB_POOL_SIZE_MAX": "10"}
    env.pop("LEDGER_DATABASE_URL", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    recoveries: list[float] = []
    try:
        load = Load(base_url, await _started(proc, log_path, base_url))
        workers = [asyncio.create_task(load.worker()) for _ in range(WORKERS)]
        readiness: set[tuple[int, int, str]] = set()
        workers.append(asyncio.create_task(_watch_readiness(base_url, readiness, load.stop)))
        try:
            await load.acked_after(WRITES_BETWEEN_FAULTS, RECOVERY_S_MAX, "the start", log_path)
            for i in range(KILLS):
                await asyncio.to_thread(_kill_postmaster, server)
                recoveries.append(await load.acked_after(WRITES_BETWEEN_FAULTS, RECOVERY_S_MAX, f"kill {i + 1}",
                                                         log_path))
            restart = ["pg_ctl", "-D", str(server.pgdata), "-w", "-t", "60", "-l", str(server.pgdata / "server.log"),
                       "-m", "immediate", "restart"]
            try:
                await asyncio.to_thread(server._run, *restart)
            except subprocess.CalledProcessError:
                pass  # the watchdog may have started it first, which is as good
            recoveries.append(await load.acked_after(WRITES_BETWEEN_FAULTS, RECOVERY_S_MAX, "pg_ctl restart",
                                                     log_path))
        finally:
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), 60)
        assert not load.failures, load.failures[:5]
        assert 500 not in load.statuses, load.statuses
        assert load.statuses.get(503), "the faults went unnoticed"
        assert {h for h, _, _ in readiness} == {200}, readiness  # the process stays alive throughout
        assert (200, 200, "ok") in readiness and (200, 503, "restarting") in readiness, readiness

        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            # Ready again within the bound: the projections catch up with the writes of
            # the load, and no background task went down: each waits out the database.
            deadline = time.monotonic() + RECOVERY_S_MAX
            while (ready := await client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert ready.status_code == 200, ready.text
            tasks = ready.json()["tasks"]
            assert all(t["up"] for t in tasks.values()), tasks
            # None failed, but the watchdog, whose start of a killed server may time out once
            # under load and is tried again (that is its job): it is up.
            assert all(t["failures"] == 0 for name, t in tasks.items() if name != "embedded-postgres"), tasks
            metrics = (await client.get("/metrics")).text
            assert 'ledger_task_up{task="embedded-postgres"} 1.0' in metrics

        server.port = int((data_dir / "postgres" / "postgres.port").read_text())
        conn = await asyncpg.connect(server.url("ledger"))
        try:
            rows = await conn.fetch(
                "SELECT idempotency_key, count(*) AS n FROM events WHERE idempotency_key LIKE $1 GROUP BY 1",
                f"booking-event:{load.run}-%")
        finally:
            await conn.close()
        stored = {r["idempotency_key"].removeprefix("booking-event:"): r["n"] for r in rows}
        assert len(load.acked) == len(set(load.acked))
        assert not [e for e in load.acked if e not in stored], "acknowledged writes are missing"
        assert all(n == 1 for n in stored.values()), "a write is stored twice"
        log_text = log_path.read_text(errors="replace")
        assert log_text.count("is not running; starting it") >= KILLS
        print(f"\n{len(load.acked)} writes acknowledged, statuses {load.statuses},"
              f" recovery s {[round(r, 2) for r in recoveries]}")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM), _tail(log_path)  # uvicorn re-raises the signal
        assert not server.is_running(), "ledger serve left its embedded PostgreSQL running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if server.is_running():
            await asyncio.to_thread(server.stop, "immediate")


async def test_a_stale_postmaster_pid_does_not_stop_a_start(tmp_path: Path) -> None:
    """After an unclean stop, `postmaster.pid` names a dead pid, or a pid that another
    process has by now: either way the server starts again."""
    server = EmbeddedPostgres(tmp_path)
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(server.start)
        for stale in ("dead", "another process"):
            pid_file = server.pgdata / "postmaster.pid"
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while _server_processes(server.pgdata):  # its backends exit when they notice
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            if stale == "another process":
                sleeper = subprocess.Popen(["sleep", "60"])
                lines = pid_file.read_text().splitlines(keepends=True)
                pid_file.write_text(f"{sleeper.pid}\n" + "".join(lines[1:]))
            assert not server.is_running(), stale
            url = await asyncio.to_thread(server.start)
            assert server.is_running(), stale
            conn = await asyncpg.connect(url, timeout=10)
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
        assert sleeper is not None and sleeper.poll() is None, "the process that had the pid was hurt"
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        await asyncio.to_thread(server.stop, "immediate")
