"""The topics on a broker that does not create them on first use (as scripts/kafka.sh
and production brokers run): `ledger kafka init` creates them, `ledger serve` and
`ledger consume` do at start when allowed, and a consumer whose topic is missing says
so once, naming the topic and the command."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ledger.bootstrap import build
from ledger.ingest import topics
from ledger.ingest.consumer import consumer_task
from ledger.settings import Settings

from .kafka_load import ROOT, booking_events, encode, end_offsets, kafka_settings, produce, wait_consumed

pytestmark = pytest.mark.kafka


async def _partitions(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [n for n in names if n in existing]
        described = await admin.describe_topics(present) if present else []
        return {meta["topic"]: len(meta["partitions"]) for meta in described}
    finally:
        await admin.close()


def _kafka_init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", "kafka", "init"], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


async def test_ledger_kafka_init_creates_both_topics_and_is_idempotent(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"bookings-{uuid.uuid4().hex[:8]}"
    names = [topic, f"{topic}.dlq"]
    assert await _partitions(kafka_bootstrap, names) == {}  # neither exists on the broker
    env = {"LEDGER_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "LEDGER_KAFKA_TOPIC": topic,
           "LEDGER_KAFKA_DLQ_TOPIC": f"{topic}.dlq", "LEDGER_KAFKA_TOPIC_PARTITIONS": "3",
           "LEDGER_DATA_DIR": str(tmp_path)}
    first = _kafka_init(env)
    assert first.returncode == 0, first.stderr
    assert [line.split()[0] for line in first.stdout.splitlines()] == ["created", "created"], first.stdout
    assert await _partitions(kafka_bootstrap, names) == {topic: 3, f"{topic}.dlq": 3}
    again = _kafka_init({**env, "LEDGER_KAFKA_TOPIC_PARTITIONS": "5"})
    assert again.returncode == 0, again.stderr
    assert [line.split()[0] for line in again.stdout.splitlines()] == ["exists", "exists"], again.stdout
    assert await _partitions(kafka_bootstrap, names) == {topic: 3, f"{topic}.dlq": 3}  # left as they were
    unset = _kafka_init({k: v for k, v in env.items() if k != "LEDGER_KAFKA_BOOTSTRAP_SERVERS"}
                        | {"LEDGER_KAFKA_BOOTSTRAP_SERVERS": ""})
    assert unset.returncode == 2 and "LEDGER_KAFKA_BOOTSTRAP_SERVERS" in unset.stderr
    assert "Traceback" not in unset.stderr


async def _consume_one(settings: Settings, db_url: str, bootstrap: str, *, before_produce=None) -> None:  # type: ignore[no-untyped-def]
    """Run the consumer as `ledger serve` does, produce one booking once the topics
    exist, and return when it is stored."""
    container = await build(settings, run_migrations=False, url=db_url)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer_task(container, stop))
    try:
        if before_produce is not None:
            await before_produce()
        deadline = time.monotonic() + 30
        while set(await _partitions(bootstrap, topics.topic_names(settings))) != set(topics.topic_names(settings)):
            assert time.monotonic() < deadline and not task.done(), "the topics never appeared"
            await asyncio.sleep(0.1)
        event = booking_events(1, 1, seed=3)[0]
        await produce(bootstrap, settings.kafka_topic, [encode(event)])
        await wait_consumed(container.pool, settings.kafka_group_id, settings.kafka_topic,
                            await end_offsets(bootstrap, settings.kafka_topic), 30)
        assert await container.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1",
                                             event["member_id"]) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await container.close()


async def test_the_consumer_creates_missing_topics_at_start_when_allowed(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    settings = kafka_settings(db_url, kafka_bootstrap, f"bookings-{run}", f"ledger-{run}", tmp_path,
                              kafka_create_topics=True, kafka_topic_partitions=2)
    await _consume_one(settings, db_url, kafka_bootstrap)
    assert await _partitions(kafka_bootstrap, topics.topic_names(settings)) == {
        settings.kafka_topic: 2, settings.kafka_dlq_topic: 2}


async def test_a_missing_topic_is_one_clear_error_and_the_consumer_starts_once_it_exists(
        db_url: str, kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "MISSING_POLL_S", 0.2)  # several looks before the topic appears
    caplog.set_level(logging.INFO, logger="ledger.ingest")
    run = uuid.uuid4().hex[:8]
    settings = kafka_settings(db_url, kafka_bootstrap, f"bookings-{run}", f"ledger-{run}", tmp_path,
                              kafka_create_topics=False)

    async def complained_then_init() -> None:
        deadline = time.monotonic() + 20
        while not [r for r in caplog.records if r.levelno == logging.ERROR]:
            assert time.monotonic() < deadline, "no error about the missing topic"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a few more looks at the broker: still one error
        await topics.ensure_topics(settings)  # what `ledger kafka init` does

    await _consume_one(settings, db_url, kafka_bootstrap, before_produce=complained_then_init)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert settings.kafka_topic in errors[0] and "`ledger kafka init`" in errors[0]


def test_topic_creation_is_on_in_development_and_off_in_production() -> None:
    assert Settings().kafka_create_topics is True
    assert Settings(environment="production", database_url="postgresql://x/y").kafka_create_topics is False
    assert Settings(environment="production", database_url="postgresql://x/y",
                    kafka_create_topics=True).kafka_create_topics is True
