"""Crash safety: `ledger consume` killed with SIGKILL at random moments during a load of
100,000 booking events (for half the members, a third of theirs partial refunds,
amendments and full refunds of earlier bookings, and refunds of more than is left, which
the ledger refuses), and
restarted each time; at the end every balance is exact, the store holds each applied
event exactly once, and each refused one is rejected exactly once."""

from __future__ import annotations

import asyncio
import random
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
    expected_states,
    kafka_env,
    kafka_settings,
    produce,
    wait_consumed,
)

pytestmark = pytest.mark.kafka

EVENTS = 100_000
MEMBERS = 2_000
KILLS = 6
MOVEMENTS = 0.35  # of the events of half the members: refunds and amendments of earlier bookings


async def _progress(pool: asyncpg.Pool, group: str, topic: str) -> int:
    return sum((await consumed(pool, group, topic)).values())


async def test_sigkill_at_random_moments_loses_nothing_and_doubles_nothing(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=4)
    events = booking_events(EVENTS, MEMBERS, seed=4, movements=MOVEMENTS)
    producing = asyncio.create_task(produce(kafka_bootstrap, topic, [encode(e) for e in events], rate_per_s=8_000))
    expected = expected_states(events)
    assert len(expected.refused) > 100, len(expected.refused)  # the rejected path is crossed too

    rng = random.Random(run)
    # Snapshots every second: each restart starts from those a killed run left, plus the events after them.
    proc = ConsumerProcess(kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path, kafka_snapshot_interval_s=1),
                           tmp_path / "consumer.log")
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    kill_points = []
    snapshots: list[int] = []
    try:
        proc.start()
        for _ in range(KILLS):
            # Kill only once this run is consuming, somewhere in the middle of its work.
            before = await _progress(pool, group, topic)
            deadline = time.monotonic() + 60
            while await _progress(pool, group, topic) == before:
                assert proc.alive(), proc.log_tail()
                assert time.monotonic() < deadline, proc.log_tail()
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            kill_points.append(await _progress(pool, group, topic))
            # No run so far stopped gracefully: these were saved while consuming.
            snapshots.append(await pool.fetchval("SELECT count(*) FROM member_snapshots WHERE member_id = ANY($1)",
                                                 list(expected.states)))
            proc.start()
        await producing
        await wait_consumed(pool, group, topic, await end_offsets(kafka_bootstrap, topic), 180, [proc])
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        if proc.alive():
            proc.kill()
        await pool.close()
    assert len(kill_points) == KILLS and kill_points[-1] < EVENTS, kill_points  # killed mid-load every time
    assert snapshots[-1] > 0, snapshots

    container = await build(kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path), run_migrations=False,
                            url=db_url)
    try:
        await check_exact(container.pool, events, expected, container.runner)
    finally:
        await container.close()
