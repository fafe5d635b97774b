"""Activities on the booking topic (P3), against a real broker and a real PostgreSQL: an
activity message (its `type` an activity type) earns as over HTTP, a redelivery is a
duplicate, and a bad one goes to the dead-letter topic with the reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from ledger.bootstrap import build
from ledger.domain import DEFAULT_RULES_DICT, ProgramRules
from ledger.domain.events import ActivityPointsEarned
from ledger.ingest.consumer import BookingConsumer

from .kafka_load import create_topics, end_offsets, kafka_settings, produce, read_topic, wait_consumed

pytestmark = pytest.mark.kafka

RULES = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "k.1", "activities": {
    "social.shared": {"points": 50}, "review.submitted": {"points": 30},
    "referral.completed": {"points": 500, "referred_points": 200}}})
AT = "2026-11-25T09:30:00+08:00"


def _message(member: str, body: dict, key: str | None = None) -> tuple[bytes | None, bytes]:
    return (key if key is not None else member).encode(), json.dumps({"member_id": member, **body}).encode()


async def test_activities_on_the_topic_earn_and_bad_ones_go_to_the_dead_letter_topic(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=1)  # one partition: the referral after the booking
    share = {"type": "social.shared", "activity_id": "s1", "occurred_at": AT, "channel": "douyin", "booking_id": "B1"}
    good = [
        _message("K-2", {"event_id": "e1", "type": "booking.completed", "booking_id": "B2", "product": "hotel",
                         "amount": "100.00", "currency": "EUR", "occurred_at": AT}),
        _message("K-1", share),
        _message("K-1", {"type": "review.submitted", "activity_id": "r1", "occurred_at": AT}),
        _message("K-1", {"type": "referral.completed", "activity_id": "ref1", "occurred_at": AT,
                         "referred_member_id": "K-2"}),
        _message("K-1", share),  # redelivered: a duplicate
    ]
    bad = [
        (_message("K-1", {"type": "social.shared", "activity_id": "s2", "occurred_at": AT}),
         "schema: channel: Value error, is required for social.shared"),
        (_message("K-1", {"type": "social.liked", "activity_id": "s3", "occurred_at": AT}), "schema: "),
        (_message("K-1", {**share, "activity_id": "s4"}, key="K-9"), "key: messages must be keyed by member_id"),
        (_message("K-3", {"type": "referral.completed", "activity_id": "ref2", "occurred_at": AT,
                          "referred_member_id": "K-2"}), "Movement conflict"),
    ]
    await produce(kafka_bootstrap, topic, good[:4] + [m for m, _ in bad] + good[4:])

    settings = kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path)
    container = await build(settings, run_migrations=False, url=db_url)
    container.ledger.rules = RULES
    stop = asyncio.Event()
    consumer = BookingConsumer(container.ledger, container.pool, settings)
    task = asyncio.create_task(consumer.run(stop))
    try:
        await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60)
        assert consumer.totals["rejected"] == len(bad) and consumer.totals["duplicates"] == 1
        earned = sorted((s.stream_id, s.event.activity_type, s.event.role, s.event.points)
                        for s in await container.store.read_all(0, 1_000) if isinstance(s.event, ActivityPointsEarned))
        assert earned == [("K-1", "referral.completed", "referrer", 500), ("K-1", "review.submitted", "member", 30),
                          ("K-1", "social.shared", "member", 50), ("K-2", "referral.completed", "referred", 200)]
        rows = await container.pool.fetch('SELECT value, reason FROM rejected_messages ORDER BY "offset"')
        assert [r["reason"][:len(reason)] for r, (_, reason) in zip(rows, bad, strict=True)] == [r for _, r in bad]
        assert "referred already" in rows[3]["reason"]
        dlq = await read_topic(kafka_bootstrap, f"{topic}.dlq", len(bad))
        assert sorted(dict(record.headers)["reason"].decode() for record in dlq) == sorted(r["reason"] for r in rows)
        await container.runner.run_until_caught_up()
        balances = dict(await container.pool.fetch("SELECT member_id, available FROM balances"))
        assert balances["K-1"] == 50 + 30 + 500
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await container.close()
