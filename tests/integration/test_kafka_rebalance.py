"""Two consumer processes in one group on a 4-partition topic, one of them stopped and
started again and again to force rebalances during the load: exact totals."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from ledger.bootstrap import build

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

pytestmark = pytest.mark.kafka

EVENTS = 50_000  # 25 s of load at 2,000/s: longer than the cycles take
CYCLES = 3


async def test_two_consumers_with_rebalances_give_exact_totals(db_url: str, kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=4)
    events = booking_events(EVENTS, 800, seed=7)
    env = kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path, kafka_batch_messages_max=300)
    steady = ConsumerProcess({**env, "LEDGER_KAFKA_BATCH_MS_MAX": "50"}, tmp_path / "steady.log")
    bouncing = ConsumerProcess(env, tmp_path / "bouncing.log")
    producing = asyncio.create_task(produce(kafka_bootstrap, topic, [encode(e) for e in events], rate_per_s=2_000))
    expected = expected_balances(events)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        steady.start()
        deadline = time.monotonic() + 60
        while _assignments(steady) == 0:  # in the group alone first: the other's joining is a rebalance
            assert steady.alive() and time.monotonic() < deadline, steady.log_tail()
            await asyncio.sleep(0.1)
        joined, seen = _assignments(bouncing), _assignments(steady)
        bouncing.start()
        for _ in range(CYCLES):
            before = sum((await consumed(pool, group, topic)).values())
            deadline = time.monotonic() + 60
            # Both have logged the rebalance of the bouncing one's joining (so its signal
            # handler is long installed, and no late line of the steady one's is taken
            # below for the next rebalance), and the load has moved on, before it leaves.
            while (_assignments(bouncing) == joined or _assignments(steady) == seen
                   or sum((await consumed(pool, group, topic)).values()) < min(before + 1_000, EVENTS)):
                assert steady.alive() and bouncing.alive(), steady.log_tail() + bouncing.log_tail()
                assert time.monotonic() < deadline, steady.log_tail() + bouncing.log_tail()
                await asyncio.sleep(0.1)
            assigned = _assignments(steady)
            assert bouncing.terminate() == 0, bouncing.log_tail()  # leaves the group: a rebalance
            # The steady one takes over all four partitions before the other joins again (else
            # the two rebalances can merge into one that changes nothing for the steady one).
            deadline = time.monotonic() + 60
            while _assignments(steady) == assigned:
                assert steady.alive() and time.monotonic() < deadline, steady.log_tail()
                await asyncio.sleep(0.1)
            joined, seen = _assignments(bouncing), _assignments(steady)
            bouncing.start()  # joins again: another rebalance
        await producing
        await wait_consumed(pool, group, topic, await end_offsets(kafka_bootstrap, topic), 180, [steady, bouncing])
        assert steady.terminate() == 0, steady.log_tail()
        assert bouncing.terminate() == 0, bouncing.log_tail()
    finally:
        for proc in (steady, bouncing):
            if proc.alive():
                proc.kill()
        await pool.close()
    # The steady one really saw its partitions change hands.
    assert _assignments(steady) >= CYCLES + 1
    assert sum((await _stored(db_url, group, topic)).values()) == EVENTS

    container = await build(kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path), run_migrations=False,
                            url=db_url)
    try:
        await check_exact(container.pool, events, expected, container.runner)
    finally:
        await container.close()


def _assignments(proc: ConsumerProcess) -> int:
    return proc.log_path.read_text(errors="replace").count("partitions assigned") if proc.log_path.exists() else 0


async def _stored(url: str, group: str, topic: str) -> dict[int, int]:
    conn = await asyncpg.connect(url)
    try:
        return await consumed(conn, group, topic)  # type: ignore[arg-type]
    finally:
        await conn.close()
