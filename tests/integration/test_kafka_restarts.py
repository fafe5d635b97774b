"""The broker and PostgreSQL restart in the middle of a load: the consumer process
recovers by itself, and the totals are exact."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from ledger.bootstrap import build
from ledger.embedded import EmbeddedPostgres
from ledger.store import migrate
from ledger.store.database import ensure_database

from .kafka_load import (
    ConsumerProcess,
    booking_events,
    check_exact,
    consumed,
    create_topics,
    encode,
    end_offsets,
    expected_balances,
    kafka_env,
    kafka_settings,
    produce,
    wait_consumed,
)

try:
    from tests.kafka_broker import KafkaBroker, free_port_pair
except ImportError:  # repo root not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kafka_broker import KafkaBroker, free_port_pair

pytestmark = pytest.mark.kafka

PHASE_EVENTS = 12_000


async def _wait_progress(url: str, group: str, topic: str, at_least: int, proc: ConsumerProcess) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
            try:
                done = sum((await consumed(conn, group, topic)).values())  # type: ignore[arg-type]
            finally:
                await conn.close()
            if done >= at_least:
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        assert proc.alive(), proc.log_tail()
        assert time.monotonic() < deadline, f"no progress to {at_least}\n{proc.log_tail()}"
        await asyncio.sleep(0.05)


async def test_consumer_recovers_by_itself_from_broker_and_postgres_restarts(tmp_path: Path) -> None:
    # This test restarts both servers, so it runs its own of each rather than the session's.
    broker = KafkaBroker(free_port_pair(), tmp_path / "kafka")
    broker.external = None
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(broker.start)
    proc: ConsumerProcess | None = None
    try:
        await ensure_database(await asyncio.to_thread(server.start), "ledger")
        url = server.url("ledger")
        await migrate(url)
        run = uuid.uuid4().hex[:8]
        topic, group = f"bookings-{run}", f"ledger-{run}"
        await create_topics(broker.bootstrap, topic, partitions=4)
        events = booking_events(3 * PHASE_EVENTS, 600, seed=6)
        phases = [events[i:i + PHASE_EVENTS] for i in range(0, len(events), PHASE_EVENTS)]
        proc = ConsumerProcess(kafka_env(url, broker.bootstrap, topic, group, tmp_path), tmp_path / "consumer.log")
        proc.start()

        await produce(broker.bootstrap, topic, [encode(e) for e in phases[0]])
        await _wait_progress(url, group, topic, 1_000, proc)
        await asyncio.to_thread(broker.restart)  # while the consumer is busy with the first phase

        await produce(broker.bootstrap, topic, [encode(e) for e in phases[1]])
        await _wait_progress(url, group, topic, PHASE_EVENTS + 1_000, proc)
        await asyncio.to_thread(server.restart)  # while it is busy with the second

        await produce(broker.bootstrap, topic, [encode(e) for e in phases[2]])
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert pool is not None
        try:
            await wait_consumed(pool, group, topic, await end_offsets(broker.bootstrap, topic), 180, [proc])
        finally:
            await pool.close()
        assert proc.terminate() == 0, proc.log_tail()
        log = proc.log_path.read_text()
        assert "batch failed" in log or "session ended" in log, "the PostgreSQL restart went unnoticed"

        container = await build(kafka_settings(url, broker.bootstrap, topic, group, tmp_path), run_migrations=False,
                                url=url)
        try:
            await check_exact(container.pool, events, expected_balances(events), container.runner)
        finally:
            await container.close()
    finally:
        if proc is not None and proc.alive():
            proc.kill()
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(server.stop, "immediate")
