"""Ctrl-C on `ledger serve` in a terminal: the signal reaches the whole foreground
process group, at start-up or while serving; either way the server stops quietly and
takes its embedded PostgreSQL with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = dict(os.environ, LEDGER_DATA_DIR=str(data_dir), LEDGER_PORT=str(port))
    env.pop("LEDGER_DATABASE_URL", None)
    # A process group of its own, as a shell gives a foreground job, so that killpg
    # sends the signal the way a terminal's Ctrl-C does.
    return subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"ledger serve ignored SIGINT:\n{err}") from None
    return proc.returncode, err


def _postmaster(data_dir: Path) -> int | None:
    pid_file = data_dir / "postgres" / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    return pid


def _postgres_running(data_dir: Path) -> bool:
    return _postmaster(data_dir) is not None


def test_ctrl_c_at_start_up_and_while_serving_stops_quietly(tmp_path: Path) -> None:
    try:
        _start_interrupt_and_restart(tmp_path)
    finally:
        # A failing run must not leave its database server behind (SIGINT: fast shutdown).
        if (pid := _postmaster(tmp_path)) is not None:
            os.kill(pid, signal.SIGINT)


def _start_interrupt_and_restart(tmp_path: Path) -> None:
    port = _free_port()
    # 1. Ctrl-C while the embedded database is being created (initdb runs about a second).
    proc = _start(tmp_path, port)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "postgres" / "pgdata").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        status, err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status in (0, 130) and "Traceback" not in err, err
    assert not _postgres_running(tmp_path), err

    # 2. The same data directory starts again (nothing was left half made); Ctrl-C once it answers.
    proc = _start(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ledger serve did not answer /healthz"
            time.sleep(0.1)
        status, err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status in (0, 130) and "Traceback" not in err, err
    assert not _postgres_running(tmp_path), err
    assert "embedded PostgreSQL stopped" in err


def test_a_second_ctrl_c_cuts_the_drain_short_and_still_stops_everything_quietly(tmp_path: Path) -> None:
    # uvicorn answers a second Ctrl-C by no longer waiting for requests in flight, and by
    # skipping the application's shutdown: the background tasks ran on over a closed pool
    # and the process ended with a traceback (and, with a Kafka consumer, 20 s later).
    port = _free_port()
    proc = _start(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ledger serve did not answer /healthz"
            time.sleep(0.1)
        # A request in flight (its body never finishes) keeps the first Ctrl-C's drain waiting.
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /v1/booking-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.5)
            started = time.monotonic()
            status, err = _interrupt(proc)
        assert time.monotonic() - started < 10, err
    finally:
        if proc.poll() is None:
            proc.kill()
        if (pid := _postmaster(tmp_path)) is not None:
            os.kill(pid, signal.SIGINT)
    assert status == 130 and "Traceback" not in err, err
    assert "embedded PostgreSQL stopped" in err and "Application shutdown complete" in err, err
    assert '"status": 500' not in err, err  # the cut request is logged as a client gone, not a failure
    assert not _postgres_running(tmp_path), err
