"""The Kafka consumer against a real broker and a real PostgreSQL: the happy path through
the API, poison messages, and the offset fence that stops a consumer which lost its
partition from writing for it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord

from ledger.api.app import create_app
from ledger.bootstrap import build
from ledger.domain import ConfirmBooking
from ledger.handlers import CommandRequest
from ledger.ingest.consumer import BookingConsumer, Fenced, _Partition, consumer_task
from ledger.ingest.rejected import retry_rejected
from ledger.keys import Role, create_key

from tests.kafka_broker import free_port_pair

from .kafka_load import (
    ROOT,
    T0,
    ConsumerProcess,
    booking_events,
    check_exact,
    create_topics,
    encode,
    end_offsets,
    expected_balances,
    kafka_env,
    kafka_settings,
    produce,
    read_topic,
    wait_consumed,
)

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"bookings-{run}", f"ledger-{run}"


# Events of the bookings themselves: a booking that qualifies its member for a tier
# above appends a `TierChanged` after its own event.
BOOKING_EVENTS_SQL = "SELECT count(*) FROM events WHERE type <> 'TierChanged'"


async def test_events_on_the_topic_become_balances_readable_through_the_api(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    topic, group = _names()
    await create_topics(kafka_bootstrap, topic, partitions=4)
    events = booking_events(400, 25, seed=1)
    member = events[0]["member_id"]
    # A pending earn that completes later, and one that is cancelled.
    for i, kind in enumerate(["booking.confirmed", "booking.completed", "booking.confirmed", "booking.cancelled"]):
        events.append({**events[0], "event_id": f"{events[0]['event_id']}-x{i}", "type": kind,
                       "booking_id": f"BK-x{i // 2}", "occurred_at": (T0 + timedelta(days=2, minutes=i)).isoformat()})
    await produce(kafka_bootstrap, topic, [encode(e) for e in events])
    expected = expected_balances(events)

    settings = kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path)
    container = await build(settings, run_migrations=False, url=db_url)
    try:
        _, token = await create_key(container.pool, "app", Role.app)
        app = create_app(settings, container=container, extra_tasks=[consumer_task])
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ledger",
                headers={"Authorization": f"Bearer {token}"}) as client:
            await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60)
            head = await container.store.head()
            for member_id, points in expected.items():
                response = await client.get(f"/v1/members/{member_id}/balance", params={"min_position": head})
                assert response.status_code == 200, response.text
                assert response.json()["available"] == points, member_id
            assert (await client.get(f"/v1/members/{member}/history")).json()["events"][0]["metadata"]["source"] \
                == "kafka"
            ready = (await client.get("/readyz")).json()
            kafka = ready["kafka"]
            assert kafka["state"] == "running" and kafka["topic"] == topic
            assert sorted(kafka["partitions"]) == ["0", "1", "2", "3"]
            assert kafka["lag_total"] == 0 and kafka["messages"] == len(events) and kafka["rejected"] == 0
            scraped = _samples((await client.get("/metrics")).text)
            for partition in "0123":
                assert scraped[("ledger_kafka_consumer_lag", ("group", group), ("partition", partition),
                                ("topic", topic))] == 0
            applied = scraped[("ledger_kafka_messages_total", ("group", group), ("outcome", "applied"),
                               ("topic", topic))]
            assert applied == kafka["applied"] > 0
            assert scraped[("ledger_kafka_consumer_state", ("group", group), ("state", "running"), ("topic", topic))] == 1
    finally:
        await container.close()


def _samples(text: str) -> dict[tuple, float]:
    """Prometheus text as {(sample name, *sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_ledger_consume_serves_its_lag_and_counts_as_prometheus_metrics(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    topic, group = _names()
    await create_topics(kafka_bootstrap, topic, partitions=2)
    events = booking_events(150, 10, seed=7)
    member = events[0]["member_id"].encode()
    messages = [encode(e) for e in events] + [(member, b"{not json"), (member, b'{"hello": "world"}')]
    await produce(kafka_bootstrap, topic, messages)
    port = free_port_pair()
    proc = ConsumerProcess(kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path, consumer_metrics_port=port),
                           tmp_path / "consumer.log")
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        proc.start()
        await wait_consumed(pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60, [proc])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):  # the lag comes from the last fetch's high watermark
                scraped = _samples((await client.get("/metrics")).text)
                lags = {k: v for k, v in scraped.items() if k[0] == "ledger_kafka_consumer_lag"}
                if len(lags) == 2 and not any(lags.values()):
                    break
                await asyncio.sleep(0.1)
        assert lags == {("ledger_kafka_consumer_lag", ("group", group), ("partition", p), ("topic", topic)): 0
                        for p in "01"}, (lags, proc.log_tail())
        outcome = {o: scraped[("ledger_kafka_messages_total", ("group", group), ("outcome", o), ("topic", topic))]
                   for o in ("applied", "duplicates", "rejected")}
        assert outcome == {"applied": len(events), "duplicates": 0, "rejected": 2}
        assert scraped[("ledger_kafka_batches_total", ("group", group), ("topic", topic))] >= 1
        assert scraped[("ledger_kafka_fenced_batches_total", ("group", group), ("topic", topic))] == 0
        assert scraped[("ledger_kafka_consumer_state", ("group", group), ("state", "running"), ("topic", topic))] == 1
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        if proc.alive():
            proc.kill()
        await pool.close()


def test_ledger_consume_says_which_setting_names_a_metrics_port_in_use(db_url: str, kafka_bootstrap: str,
                                                                       tmp_path: Path) -> None:
    topic, group = _names()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path, consumer_metrics_port=port)}
        done = subprocess.run([sys.executable, "-m", "ledger.cli", "consume"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"cannot serve consumer metrics on 127.0.0.1:{port} (LEDGER_HOST, LEDGER_CONSUMER_METRICS_PORT)" \
        in done.stderr, done.stderr


def _bad_messages(good: list[dict]) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected reason prefix): one of each way a message can be bad."""
    first, second = good[0], good[1]
    member = first["member_id"].encode()

    def ev(**changes: object) -> bytes:
        return json.dumps({**first, "event_id": f"bad-{uuid.uuid4().hex[:6]}", **changes}).encode()

    def bad_id(field: str, value: str) -> tuple[bytes, bytes, str]:
        # Keyed by the id itself when it is the member's, so the id grammar, not the key
        # check, is what refuses it.
        key = value.encode() if field == "member_id" else member
        return key, ev(**{field: value}), f"schema: {field}: Value error, must be 1 to "

    ids = [bad_id("member_id", value) for value in (
        "A/B", ".", "..", "M\u20111001", "M-\u200b1001", "\uff2d-1001", "Jos\u00e9", "Jose\u0301", "M-1001\u202e")]
    ids += [bad_id("booking_id", "BK 1"), bad_id("event_id", "\u2067bk-1\u2069")]
    return [
        *ids,
        (member, b"{not json", "not JSON"),
        (member, b'{"hello": "world"}', "schema"),
        (member, ev(loyalty_tier="gold"), "schema"),  # unknown field
        (member, ev(amount="99999999.00"), "schema"),  # out of range
        (member, ev(amount="-5.00"), "schema"),
        (member, ev(currency="QQQ"), "schema"),  # not ISO 4217
        (member, ev(occurred_at="2026-04-01T08:00:00"), "schema"),  # no offset
        (member, ev(occurred_at="2026-04-01 08:00:00Z"), "schema: occurred_at"),  # a space for the T
        (member, ev(occurred_at=1775030400), "schema: occurred_at"),  # a bare number
        (member, b"x" * 70_000, "oversized"),
        (b"someone-else", ev(), "key"),
        (None, ev(), "key"),
        (member, None, "empty"),
        (member, ev(type="booking.refunded", refund_amount="0.00"), "schema: refund_amount: Value error, must be more"),
        (member, ev(refund_amount="5.00"), "schema: refund_amount: Value error, is for booking.refunded only"),
        (member, ev(type="booking.amended", amount="5.001"), "schema: amount"),
        (member, ev(currency="XAF", booking_id="BK-in-francs"), "Currency not earned: Currency XAF"),  # no rate at all
        (member, ev(type="booking.cancelled", booking_id="BK-never-seen"), "Booking not found"),
        (second["member_id"].encode(), json.dumps({**second, "event_id": "bad-again"}).encode(),
         "Booking state conflict"),  # completes a booking a second time
        (second["member_id"].encode(), json.dumps({**second, "event_id": "bad-refund", "type": "booking.refunded",
                                                   "refund_amount": "9999999.00"}).encode(),
         f"Booking state conflict: A refund of 9999999.00 is more than the {second['amount']} left"),
        (second["member_id"].encode(), json.dumps({**second, "amount": "1.00"}).encode(),
         "Idempotency key reused"),  # the same event id with another body
    ]


async def test_poison_messages_go_to_the_dead_letter_topic_and_table_and_good_ones_apply(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    topic, group = _names()
    await create_topics(kafka_bootstrap, topic, partitions=4)
    good = booking_events(300, 10, seed=2)
    bad = _bad_messages(good)
    messages: list[tuple[bytes | None, bytes | None]] = [encode(e) for e in good]
    # Bad ones go after the good ones they refer to, spread through the rest.
    for i, (key, value, _) in enumerate(bad):
        messages.insert(10 + i * 19, (key, value))
    messages.append(encode(good[5]))  # a plain redelivery: a duplicate, not a bad message
    await produce(kafka_bootstrap, topic, messages)

    settings = kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path, kafka_batch_messages_max=50)
    container = await build(settings, run_migrations=False, url=db_url)
    stop = asyncio.Event()
    consumer = BookingConsumer(container.ledger, container.pool, settings)
    task = asyncio.create_task(consumer.run(stop))
    try:
        await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60)
        await check_exact(container.pool, good, expected_balances(good), container.runner)
        assert consumer.totals["rejected"] == len(bad) and consumer.totals["duplicates"] == 1

        rows = await container.pool.fetch('SELECT * FROM rejected_messages ORDER BY "offset", partition')
        assert len(rows) == len(bad)
        by_value = {bytes(r["value"]): r for r in rows}
        for key, value, reason in bad:
            row = by_value[value or b""]
            assert row["reason"].startswith(reason), (reason, row["reason"])
            assert row["key"] == (None if key is None else key.decode()) and row["topic"] == topic

        dlq = await read_topic(kafka_bootstrap, f"{topic}.dlq", len(bad))
        assert len(dlq) == len(bad)
        for record in dlq:
            headers = {k: v.decode() for k, v in record.headers}
            row = by_value[record.value or b""]
            assert headers["reason"] == row["reason"]
            assert (headers["original-topic"], int(headers["original-partition"]), int(headers["original-offset"])) \
                == (topic, row["partition"], row["offset"])
        await _wait_published(container.pool, len(bad))

        # The auditor's route, a page at a time; other roles may not read it.
        tokens = {role: (await create_key(container.pool, role.value, role))[1] for role in (Role.auditor, Role.app)}
        app = create_app(settings, container=container, background=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ledger") as client:
            seen, cursor = [], None
            for _ in range(10):
                response = await client.get("/v1/rejected-messages", params={"limit": 4, **({"cursor": cursor} if
                                            cursor else {})}, headers={"Authorization": f"Bearer {tokens[Role.auditor]}"})
                assert response.status_code == 200, response.text
                seen += response.json()["messages"]
                cursor = response.json()["next_cursor"]
                if cursor is None:
                    break
            assert sorted(m["id"] for m in seen) == sorted(r["id"] for r in rows)
            assert all(m["dlq_published_at"] for m in seen)
            forbidden = await client.get("/v1/rejected-messages",
                                         headers={"Authorization": f"Bearer {tokens[Role.app]}"})
            assert forbidden.status_code == 403

        # After a fix (the missing booking arrives over HTTP), a retry applies the cancel.
        cancel = next(r for r in rows if r["reason"].startswith("Booking not found"))
        member = cancel["key"]
        await container.ledger.handle(CommandRequest(
            ConfirmBooking(member, T0, "BK-never-seen", "hotel", Decimal("100.00"), "EUR"),
            idempotency_key="http-fix", request_hash="http-fix"))
        outcome = await retry_rejected(container.ledger, container.pool, bytes_max=settings.kafka_message_bytes_max,
                                       ids=[cancel["id"]])
        assert (outcome.applied, outcome.rejected) == (1, 0)
        assert await container.pool.fetchval("SELECT retried_at IS NOT NULL FROM rejected_messages WHERE id = $1",
                                             cancel["id"])
        again = await retry_rejected(container.ledger, container.pool, bytes_max=settings.kafka_message_bytes_max,
                                     ids=[cancel["id"]])
        assert (again.applied, again.rejected) == (0, 0)  # already retried: nothing to do

        # The command line shows the same rows and retries the rest (all still bad).
        env = {**os.environ, **kafka_env(container.url, kafka_bootstrap, topic, group, tmp_path)}
        listed = subprocess.run([sys.executable, "-m", "ledger.cli", "rejected", "list", "--limit", "100"], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == len(bad)
        retried = subprocess.run([sys.executable, "-m", "ledger.cli", "rejected", "retry", "--all"], env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert retried.returncode == 1 and f"0 applied, {len(bad) - 1} still rejected" in retried.stdout, \
            retried.stdout + retried.stderr
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await container.close()


async def _wait_published(pool, count: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(100):
        if await pool.fetchval("SELECT count(*) FROM rejected_messages WHERE dlq_published_at IS NOT NULL") == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("rejected messages not marked as published")


def _records(topic: str, events: list[dict], first_offset: int, partition: int = 0) -> list[ConsumerRecord]:
    out = []
    for i, event in enumerate(events):
        key, value = encode(event)
        out.append(ConsumerRecord(topic, partition, first_offset + i, 0, 0, key, value, None, len(key), len(value), []))
    return out


async def test_a_consumer_that_lost_its_partition_cannot_write_for_it(db_url: str, tmp_path: Path) -> None:
    """Two group members that both believe they hold partition 0: the fenced one's
    batch is rolled back whole (events, offsets and rejections)."""
    from aiokafka import TopicPartition

    topic, group = _names()
    settings = kafka_settings(db_url, "127.0.0.1:1", topic, group, tmp_path)
    container = await build(settings, run_migrations=False, url=db_url)
    try:
        a = BookingConsumer(container.ledger, container.pool, settings)
        b = BookingConsumer(container.ledger, container.pool, settings)
        tp = TopicPartition(topic, 0)
        events = booking_events(60, 5, seed=3)
        first, second, third = events[:20], events[20:40], events[40:]
        a._parts = {0: _Partition(0, stored=False)}
        b._parts = {0: _Partition(0, stored=False)}
        assert (await a.apply_batch({tp: _records(topic, first, 0)})).applied == 20
        with pytest.raises(Fenced):  # b never saw a stored offset; a inserted one meanwhile
            await b.apply_batch({tp: _records(topic, first, 0)})

        # b is told partition 0 is at 0 (stale); a moves on; b's batch of new events is refused.
        b._parts = {0: _Partition(0, stored=True)}
        assert (await a.apply_batch({tp: _records(topic, second, 20)})).applied == 20
        bad = _records(topic, third[:1], 40)[0]
        poisoned = [*_records(topic, third, 41)[:5], ConsumerRecord(topic, 0, 46, 0, 0, bad.key, b"{oops", None, 1, 5, [])]
        with pytest.raises(Fenced):
            await b.apply_batch({tp: poisoned})
        assert await container.pool.fetchval(BOOKING_EVENTS_SQL) == 40
        assert await container.pool.fetchval("SELECT count(*) FROM rejected_messages") == 0
        assert await container.pool.fetchval("SELECT next_offset FROM kafka_offsets") == 40

        # Both at 40 and both sure they own it, at the same moment: exactly one wins.
        a._parts = {0: _Partition(40, stored=True)}
        b._parts = {0: _Partition(40, stored=True)}
        outcomes = await asyncio.gather(a.apply_batch({tp: _records(topic, third, 40)}),
                                        b.apply_batch({tp: _records(topic, third, 40)}), return_exceptions=True)
        assert sorted(type(o).__name__ for o in outcomes) == ["BatchOutcome", "Fenced"], outcomes
        assert await container.pool.fetchval(BOOKING_EVENTS_SQL) == 60
        assert await container.pool.fetchval("SELECT next_offset FROM kafka_offsets") == 60
        await check_exact(container.pool, events, expected_balances(events), container.runner)
    finally:
        await container.close()


async def test_two_lanes_apply_at_once_and_a_fenced_lane_takes_back_only_its_own_partitions(
        db_url: str, tmp_path: Path) -> None:
    """Two lanes, partitions 0 and 2 in one and 1 and 3 in the other, each applying its
    batch in a transaction of its own, at the same moment, on one ledger. When another
    consumer moved partition 1 meanwhile, its lane rolls back whole (the events and
    offsets of partitions 1 and 3) and the other lane's stay; once the lane has read the
    stored offsets again, every event is in exactly once."""
    from aiokafka import TopicPartition

    topic, group = _names()
    settings = kafka_settings(db_url, "127.0.0.1:1", topic, group, tmp_path, kafka_apply_lanes=2)
    container = await build(settings, run_migrations=False, url=db_url)
    try:
        events = booking_events(80, 8, seed=5)
        parts = {p: [e for e in events if int(e["member_id"].rsplit("-", 1)[1]) % 4 == p] for p in range(4)}
        assert all(parts.values())
        lanes = [{TopicPartition(topic, p): _records(topic, parts[p], 0, p) for p in range(lane, 4, 2)} for lane in (0, 1)]
        a = BookingConsumer(container.ledger, container.pool, settings)
        a._parts = {p: _Partition(0, stored=False) for p in range(4)}
        # Another consumer took partition 1 and stored an offset for it first.
        await container.pool.execute(
            "INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 1, 0)",
            group, topic)
        outcomes = await asyncio.gather(a._apply_locked(0, lanes[0]), a._apply_locked(1, lanes[1]),
                                        return_exceptions=True)
        assert isinstance(outcomes[1], Fenced), outcomes
        assert outcomes[0].applied == len(parts[0]) + len(parts[2]), outcomes  # type: ignore[union-attr]
        offsets = dict(await container.pool.fetch("SELECT partition, next_offset FROM kafka_offsets"))
        assert offsets == {0: len(parts[0]), 1: 0, 2: len(parts[2])}
        in_store = {r[0] for r in await container.pool.fetch("SELECT DISTINCT stream_id FROM events")}
        assert in_store == {e["member_id"] for p in (0, 2) for e in parts[p]}
        # The lane's reload: partitions 1 and 3 from what is stored.
        a._parts[1], a._parts[3] = _Partition(0, True), _Partition(0, False)
        outcome = await a._apply_locked(1, lanes[1])
        assert (outcome.messages, outcome.applied) == (len(parts[1]) + len(parts[3]),) * 2
        await check_exact(container.pool, events, expected_balances(events), container.runner)
    finally:
        await container.close()


async def test_a_rejection_committed_by_another_lane_while_dead_letters_are_published_is_not_forgotten(
        db_url: str, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lane 0 publishes the dead letters while lane 1 commits a batch with a rejection:
    the publish must leave the rejection due, or it waits for the next rejection to go
    out (the poison-message test's dead-letter topic came up short now and then)."""
    import ledger.ingest.consumer as consumer_module

    topic, group = _names()
    await create_topics(kafka_bootstrap, topic, partitions=1)
    settings = kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path)
    container = await build(settings, run_migrations=False, url=db_url)
    consumer = BookingConsumer(container.ledger, container.pool, settings)
    producer = consumer._producer()
    await producer.start()
    try:
        publish = consumer_module.publish_pending

        async def while_another_lane_commits(*args: object) -> int:
            consumer._dlq_due = True  # what apply_batch sets once a batch with a rejection committed
            return await publish(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(consumer_module, "publish_pending", while_another_lane_commits)
        consumer._dlq_due = True
        await consumer._publish_dlq(producer)
        assert consumer._dlq_due  # the next pass publishes it
        monkeypatch.setattr(consumer_module, "publish_pending", publish)
        await consumer._publish_dlq(producer)
        assert not consumer._dlq_due
    finally:
        await producer.stop()
        await container.close()
