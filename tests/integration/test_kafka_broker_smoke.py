"""Proves the local Kafka setup works end to end on a fresh machine:
jars fetched, KRaft broker started, topic created, keyed produce, group consume.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

try:
    from tests.kafka_broker import KafkaBroker, ensure_topic, free_port_pair
except ImportError:  # repo root not on sys.path (plain `pytest` run)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kafka_broker import KafkaBroker, ensure_topic, free_port_pair

N = 100


async def _roundtrip(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, topic, partitions=4)
    await ensure_topic(bootstrap, topic, partitions=4)  # idempotent

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        # send() enqueues and returns a future resolved once the batch is acked.
        futures = [
            await producer.send(topic, key=f"member-{i % 10}".encode(), value=str(i).encode())
            for i in range(N)
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metas} <= set(range(4))
    assert len({m.partition for m in metas}) > 1, "10 keys should spread over partitions"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got = []
    try:
        async with asyncio.timeout(60):
            while len(got) < N:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.extend(records)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted(int(r.value) for r in got) == list(range(N))
    # Same key -> same partition, and per-key order is preserved.
    by_key = defaultdict(list)
    for r in got:
        by_key[r.key].append((r.partition, int(r.value)))
    for key, items in by_key.items():
        assert len({p for p, _ in items}) == 1, key
        values = [v for _, v in items]
        assert values == sorted(values), key


@pytest.mark.kafka
def test_broker_produce_consume(tmp_path: Path) -> None:
    broker = KafkaBroker(free_port_pair(), tmp_path)
    broker.start()
    try:
        asyncio.run(_roundtrip(broker.bootstrap))
    finally:
        broker.stop()
    if not broker.external:
        assert broker.pid is None
