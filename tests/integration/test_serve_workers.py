"""`ledger serve --workers 2 --projections-process`: two processes answer HTTP on one
port, the projection groups run in a third, woken by the writes of both; the primary restarts a child that dies,
each process's /readyz says which it is and lists its own tasks, and a SIGTERM to the
primary stops every child and the embedded PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .test_serve_interrupt import _postmaster

STEP_S_MAX = 45.0  # each wait below is bounded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> dict[int, str]:
    """The child processes of `pid` and their command lines, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found[int(entry)] = cmdline
    return found


def _get(port: int, path: str, token: str | None = None, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body else None,
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              **({"Content-Type": "application/json"} if body else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(check, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + STEP_S_MAX
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {STEP_S_MAX} s: {what}")


def test_workers_and_projection_process_are_supervised_and_stop_together(tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "serve.log"
    # The projection process polls once in 10 s: each read with `min_position` below
    # answers within the 5 s it may wait only because the writes wake it.
    env = dict(os.environ, LEDGER_DATA_DIR=str(tmp_path / "data"), LEDGER_PORT=str(port),
               LEDGER_PROJECTION_IDLE_MS="10000")
    env.pop("LEDGER_DATABASE_URL", None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--workers", "2",
                                 "--projections-process"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def admin_key() -> str | None:
            assert proc.poll() is None, log.read_text()
            return (m := re.search(r"(lk_\S+)", log.read_text())) and m.group(1)

        token = _until(admin_key, "an admin key")
        _until(lambda: _get(port, "/readyz")[0] == 200, "ready")
        children = _children(proc.pid)
        roles = sorted(re.search(r"ledger\.serve (\w+)", cmd).group(1) for cmd in children.values())  # type: ignore[union-attr]
        assert roles == ["http", "projections"], children

        # Both HTTP processes answer on the one port, each for itself.
        seen: dict[str, dict] = {}
        _until(lambda: (seen.setdefault(*(lambda b: (b["process"], b))(_get(port, "/readyz")[1])) and len(seen) == 2),
               "answers from both HTTP processes")
        assert set(seen) == {"primary", "http-2"}
        assert {"http-2", "projections", "expiry", "hold-expiry"} <= set(seen["primary"]["tasks"])
        assert "projections-reports" not in seen["primary"]["tasks"]  # in the projection process
        assert set(seen["http-2"]["tasks"]) == {"rules-refresh"}  # one process runs each scheduler
        scraped: set[str] = set()

        def scrape() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            scraped.update(re.findall(r'ledger_process_info\{process="([a-z0-9-]+)"\} 1\.0', text))
            return len(scraped) == 2

        _until(scrape, "a scrape of each process, saying which")
        assert scraped == {"primary", "http-2"}

        # A write through whichever process answers, projected by the projection process.
        status, written = _get(port, "/v1/booking-events", token, {
            "event_id": "workers-1", "type": "booking.completed", "member_id": "M-1", "booking_id": "B-1",
            "product": "hotel", "amount": "180.00", "currency": "EUR", "occurred_at": "2026-01-05T10:00:00Z"})
        assert status == 201 and written["points"] > 0, written
        status, balance = _get(port, f"/v1/members/M-1/balance?min_position={written['position']}", token)
        assert status == 200 and balance["available"] == written["points"], balance

        # Concurrent redemptions through both HTTP processes: exactly those that fit apply.
        points = written["points"]
        assert points >= 25, written
        each = points // 5  # five fit, a sixth does not
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda i: _get(port, "/v1/members/M-1/redemptions", token, {
                "points": each, "reward": {"id": "MILES", "kind": "airline_miles"}}, {"Idempotency-Key": f"r-{i}"}),
                range(20)))
        assert sorted(status for status, _ in answers) == [201] * 5 + [409] * 15, answers
        position = max(body["position"] for status, body in answers if status == 201)
        status, balance = _get(port, f"/v1/members/M-1/balance?min_position={position}", token)
        assert status == 200 and balance["available"] == points - 5 * each, balance

        # A child that dies is started again, and the primary's /readyz counts it.
        (http_child,) = [pid for pid, cmd in children.items() if "ledger.serve http" in cmd]
        os.kill(http_child, signal.SIGKILL)

        def restarted() -> bool:
            status, body = _get(port, "/readyz")
            task = body["tasks"].get("http-2") if body["process"] == "primary" else None
            return status == 200 and task is not None and task["restarts"] >= 1 and task["up"]

        _until(restarted, "http-2 restarted")
        assert len(_children(proc.pid)) == 2

        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STEP_S_MAX)
        assert not any(Path(f"/proc/{pid}").exists() for pid in children), children
        assert _postmaster(tmp_path / "data") is None, log.read_text()[-3000:]
        text = log.read_text()
        # The one traceback is the supervisor's report of the child killed above.
        assert text.count("Traceback") == text.count("ledger.serve.ChildExited: the http process") == 1, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        if (pid := _postmaster(tmp_path / "data")) is not None:
            os.kill(pid, signal.SIGINT)


def _sql(data_dir: Path, statement: str) -> None:
    import asyncio

    import asyncpg

    port = int((data_dir / "postgres" / "postgres.port").read_text())

    async def run() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/ledger")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize(("flags", "task"), [([], "projections/projections"),
                                              (["--no-projections-process"], "projections")])
def test_a_page_the_projection_process_keeps_refusing_shows_in_the_primary_s_readiness(
        tmp_path: Path, flags: list[str], task: str) -> None:
    """The projection process's own tasks (the default) show in the primary's /readyz and
    /metrics as `projections/<task>`: a runner there that keeps failing a page (a
    constraint its rows break, as a projection bug would) makes the primary not ready,
    with the error, until the page passes; as it does with the runner on the API's own
    loop (`--no-projections-process`)."""
    port, log, data_dir = _free_port(), tmp_path / "serve.log", tmp_path / "data"
    env = dict(os.environ, LEDGER_DATA_DIR=str(data_dir), LEDGER_PORT=str(port))
    env.pop("LEDGER_DATABASE_URL", None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", *flags], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def admin_key() -> str | None:
            assert proc.poll() is None, log.read_text()
            return (m := re.search(r"(lk_\S+)", log.read_text())) and m.group(1)

        token = _until(admin_key, "an admin key")
        _until(lambda: (lambda r: r[0] == 200 and task in r[1]["tasks"])(_get(port, "/readyz")),
               "ready, with the projection runner's task")
        if not flags:
            assert "projections-reports" not in _get(port, "/readyz")[1]["tasks"]  # in the projection process
        else:
            assert not [c for c in _children(proc.pid).values() if "ledger.serve" in c], "no process of its own"
        _sql(data_dir, "ALTER TABLE balances ADD CONSTRAINT refuse_every_row CHECK (member_id = '') NOT VALID")
        status, written = _get(port, "/v1/booking-events", token, {
            "event_id": "refused-1", "type": "booking.completed", "member_id": "M-1", "booking_id": "B-1",
            "product": "hotel", "amount": "180.00", "currency": "EUR", "occurred_at": "2026-01-05T10:00:00Z"})
        assert status == 201, written

        def refused() -> dict | None:
            status, body = _get(port, "/readyz")
            runner = body["tasks"][task]
            return body if status == 503 and runner["failures"] >= 1 and not runner["up"] else None

        body = _until(refused, "the refused page in the primary's /readyz")
        assert "CheckViolationError" in body["tasks"][task]["last_error"], body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert f'ledger_task_failures_total{{task="{task}"}}' in response.read().decode()
        _sql(data_dir, "ALTER TABLE balances DROP CONSTRAINT refuse_every_row")
        _until(lambda: (lambda r: r[0] == 200 and r[1]["projection_lag_events"] == 0)(_get(port, "/readyz")),
               "ready again, the page projected")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STEP_S_MAX)
    finally:
        if proc.poll() is None:
            proc.kill()
        if (pid := _postmaster(data_dir)) is not None:
            os.kill(pid, signal.SIGINT)
