"""A real single-node Kafka broker for the test suite.

Thin wrapper around ``scripts/kafka.sh`` (which fetches the broker jars from
Maven Central once and runs ``kafka.Kafka`` in KRaft mode on 127.0.0.1).

    broker = KafkaBroker(port, tmp_dir)
    broker.start()                    # fresh, empty broker
    await ensure_topic(broker.bootstrap, "ledger.events", partitions=4)
    broker.kill(); broker.restart()   # crash + recovery, data kept
    broker.stop()

If ``LEDGER_TEST_KAFKA_BOOTSTRAP`` is set, no broker is started and that
address is used as is; ``kill()``/``restart()`` then raise, since the broker
is not ours to control.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kafka.sh"
EXTERNAL_ENV = "LEDGER_TEST_KAFKA_BOOTSTRAP"


def free_port_pair() -> int:
    """Return a port p such that p and p+1 (controller) look free on 127.0.0.1.

    Drawn below the kernel's ephemeral range: a port the kernel hands out itself (a
    bind to port 0) is also what it gives the outgoing connections of every client in
    the run (PostgreSQL's, Kafka's), and one of them took p+1 between this check and the
    broker's start (`kafka.sh: port ... is already taken`)."""
    low = _ephemeral_low()
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(max(1024, low - 12_000), low - 2)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise RuntimeError("no free pair of ports found")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux), else the IANA one's."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class KafkaBroker:
    def __init__(self, port: int, state_dir: Path) -> None:
        self.port = port
        self.external = os.environ.get(EXTERNAL_ENV) or None
        # One sub-directory per port so several brokers can share state_dir.
        self.state_dir = Path(state_dir) / f"kafka-{port}"
        self._wiped = False

    @property
    def bootstrap(self) -> str:
        return self.external or f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.state_dir / "kafka.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _run(self, *args: str, timeout: float) -> str:
        env = dict(os.environ, LEDGER_KAFKA_STATE_DIR=str(self.state_dir))
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args, str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"kafka.sh {args[0]} {self.port} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def start(self) -> None:
        """Start the broker; the first start of this object wipes old state."""
        if self.external:
            return
        if not self._wiped:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir.mkdir(parents=True)
            self._wiped = True
            # A test session that dies without teardown must not leave a JVM behind.
            atexit.register(self._stop_quietly)
        # Generous timeout: the very first call may download the jars (~45 MB).
        self._run("start", timeout=600)
        _run_sync(wait_ready(self.bootstrap, timeout=30))

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, SIGKILL after 30 s). Idempotent."""
        if self.external:
            return
        if self.state_dir.exists():
            self._run("stop", timeout=60)

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def kill(self) -> None:
        """SIGKILL the broker (simulated crash) and wait until it is gone."""
        self._require_own("kill")
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker pid {pid} survived SIGKILL")
            time.sleep(0.05)
        (self.state_dir / "kafka.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop (if running) and start again, keeping topics and offsets."""
        self._require_own("restart")
        self.stop()
        self.start()

    def _require_own(self, what: str) -> None:
        if self.external:
            raise RuntimeError(f"cannot {what} an external broker ({EXTERNAL_ENV})")

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_sync(coro):
    """asyncio.run, also when called from inside a running loop (async fixture)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _alive(pid: int) -> bool:
    # A killed child of a non-reaping parent lingers as a zombie: count it dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_ready(bootstrap: str, timeout: float = 30) -> None:
    """Wait until the broker answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def ensure_topic(
    bootstrap: str, name: str, partitions: int, replication_factor: int = 1
) -> None:
    """Create topic ``name`` unless it exists; return once all partitions have a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    topic_already_exists = 36
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if name not in await admin.list_topics():
            resp = await admin.create_topics([NewTopic(name, partitions, replication_factor)])
            for _topic, code, message in resp.topic_errors:
                if code not in (0, topic_already_exists):
                    raise for_code(code)(f"creating topic {name}: {message}")
        # Creation is acknowledged by the controller before the broker has
        # loaded the new partitions; wait so the first produce does not race it.
        deadline = time.monotonic() + 30
        while True:
            (meta,) = await admin.describe_topics([name])
            parts = meta["partitions"]
            if meta["error_code"] == 0 and parts and all(p["leader"] >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leaders after 30 s: {meta}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
