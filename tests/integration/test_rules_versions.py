"""A rules version published while `ledger consume` works through a Kafka load: the
consumer (another process) picks it up within LEDGER_RULES_REFRESH_S, every booking
earns under the version in force at its occurred_at, every balance is exact, and a
rebuild of the read models equals what the live runner wrote."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from ledger.bootstrap import build
from ledger.domain import PointsEarned
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.rulesets import RuleSet
from projections.runner import rebuild

from .kafka_load import (
    ConsumerProcess,
    check_exact,
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

EVENTS = 6_000
MEMBERS = 300
RATE_PER_S = 1_000  # the events' occurred_at moves with the wall clock at this rate
REFRESH_S = 1
LEAD_S = 3  # the version starts this long after it is published: more than the refresh takes


def _events(start: datetime, run: str) -> list[dict]:
    """Completed bookings dated one millisecond apart from `start`, as they are produced."""
    rng = random.Random(run)
    return [{
        "event_id": f"{run}-{i}", "type": "booking.completed", "member_id": f"M-{run}-{rng.randrange(MEMBERS)}",
        "booking_id": f"BK-{run}-{i}", "product": rng.choice(["flight", "hotel", "rail"]),
        "amount": f"{rng.randrange(1_000, 60_000) / 100:.2f}", "currency": "EUR",
        "occurred_at": (start + timedelta(milliseconds=i * 1000 // RATE_PER_S)).isoformat(),
    } for i in range(EVENTS)]


async def _table(pool: asyncpg.Pool, sql: str) -> list[tuple]:
    return sorted(tuple(r) for r in await pool.fetch(sql))


async def test_a_version_published_during_a_kafka_load_is_used_from_its_start(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=4)
    container = await build(kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path), run_migrations=False,
                            url=db_url)
    proc = ConsumerProcess(kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path, rules_refresh_s=REFRESH_S),
                           tmp_path / "consumer.log")
    try:
        proc.start()
        start = datetime.now(UTC) + timedelta(seconds=1)
        events = _events(start, run)
        producing = asyncio.create_task(produce(kafka_bootstrap, topic, [encode(e) for e in events],
                                                rate_per_s=RATE_PER_S, chunk=100))
        # Once the consumer has loaded its rules and written some of the load (a slow start
        # on a busy machine would otherwise load the new version with the first ones).
        for _ in range(600):
            if await container.pool.fetchval("SELECT count(*) FROM events") >= 100:
                break
            await asyncio.sleep(0.1)
        # Published by this process, as an admin's API process would, while the consumer runs.
        effective_from = datetime.now(UTC) + timedelta(seconds=LEAD_S)
        doc = RuleSet.model_validate({
            **DEFAULT_RULES_DICT, "version": "load.2", "effective_from": effective_from.isoformat(),
            "first_booking_bonus": 50, "earn_rates": {"flight": {"EUR": "30"}, "hotel": {"EUR": "40"},
                                                      "rail": {"EUR": "20"}}}).document()
        published = time.monotonic()
        await container.programme.publish_rules(doc, effective_from, "test", datetime.now(UTC))
        await producing
        assert time.monotonic() - published > LEAD_S, "the load ended before the version started"
        await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 120, [proc])
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        if proc.alive():
            proc.kill()
    try:
        book = await container.programme.book()
        container.swap_book(book)
        earned = [s.event for s in await container.store.read_all(0, 50_000)
                  if isinstance(s.event, PointsEarned) and s.stream_id.startswith(f"M-{run}-")]
        assert len(earned) == EVENTS
        versions = [e.rules_version for e in earned]
        assert {"2026.1", "load.2"} <= set(versions), set(versions)
        wrong = [(e.booking_id, e.occurred_at, e.rules_version) for e in earned
                 if e.rules_version != book.at(e.occurred_at).version]
        assert not wrong, f"{len(wrong)} events earned under another version than the one in force: {wrong[:5]}"
        assert (proc.log_path.read_text().count("programme rules loaded")) >= 1, proc.log_tail()
        await check_exact(container.pool, events, expected_states(events, book), container.runner)

        tables = ("SELECT member_id, available, lifetime_earned FROM balances",
                  "SELECT member_id, booking_id, earned_at, points FROM tier_qualifying")
        live = [await _table(container.pool, sql) for sql in tables]
        await rebuild(container.pool, container.store, page_size=997)
        assert [await _table(container.pool, sql) for sql in tables] == live
    finally:
        await container.close()


async def test_a_cny_booking_earns_over_kafka_and_a_currency_without_a_rate_is_dead_lettered(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=1)
    booking = {"type": "booking.completed", "member_id": f"M-{run}", "product": "hotel", "amount": "1560.00",
               "occurred_at": "2026-04-01T10:00:00Z"}
    events = [{**booking, "event_id": f"{run}-1", "booking_id": "B1", "currency": "CNY"},
              {**booking, "event_id": f"{run}-2", "booking_id": "B2", "currency": "XAF"}]  # ISO 4217, no rate
    await produce(kafka_bootstrap, topic, [encode(e) for e in events])
    proc = ConsumerProcess(kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path), tmp_path / "consumer.log")
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        proc.start()
        await wait_consumed(pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60, [proc])
        assert proc.terminate() == 0, proc.log_tail()
        rows = await pool.fetch("SELECT type, schema_version, data FROM events WHERE stream_id = $1", f"M-{run}")
        assert [(r["type"], r["schema_version"]) for r in rows] == [("PointsEarned", 3)]
        earned = orjson.loads(rows[0]["data"])
        assert (earned["fx_rate"], earned["converted_amount"], earned["breakdown"][0]) == (
            "7.8", "200.00", ["base:hotel:EUR", 2000])
        (reason,) = [r["reason"] for r in await pool.fetch("SELECT reason FROM rejected_messages WHERE topic = $1",
                                                           topic)]
        assert reason.startswith("Currency not earned: Currency XAF earns no points for hotel"), reason
    finally:
        if proc.alive():
            proc.kill()
        await pool.close()
