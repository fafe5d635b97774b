"""Messages the ledger cannot take: why, where they are kept, and how they come back.

A rejected message is written to `rejected_messages` in the same transaction as the
consumed offsets, so it can never be skipped without a trace. The table is also the
dead-letter topic's outbox: rows are published after the commit and marked as such,
and anything a crash left unpublished goes out on the next start (at least once; the
original topic, partition and offset in the headers identify a repeat).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from ledger.domain.earn_rules import ACTIVITY_TYPES
from ledger.handlers import CommandRequest, KafkaSource, Ledger
from ledger.outcomes import REASON_CHARS_MAX, Rejected, refusal_reason

from .activities import ActivityMessage
from .schema import BookingEvent

log = logging.getLogger(__name__)

SOURCE = "kafka"
ERRORS_SHOWN_MAX = 5
PAGE_ROWS_MAX = 500
PUBLISH_PAGES_MAX = 20
PUBLISH_TIMEOUT_S = 30.0
def _clip(text: str) -> str:
    return text if len(text) <= REASON_CHARS_MAX else text[: REASON_CHARS_MAX - 1] + "…"


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return _clip(f"not JSON: {errors[0]['msg']}")
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(value)'}: {e['msg']}" for e in errors[:ERRORS_SHOWN_MAX]]
    more = f" (and {len(errors) - ERRORS_SHOWN_MAX} more)" if len(errors) > ERRORS_SHOWN_MAX else ""
    return _clip("schema: " + "; ".join(parts) + more)


def parse_message(key: bytes | None, value: bytes | None, bytes_max: int) -> BookingEvent | ActivityMessage | str:
    """The booking event or the activity (P3) in a message, or why there is none. The
    message's `type` tells them apart: `booking.*` or an activity type. Booking events
    are tried first, as nearly every message is one."""
    if value is None:
        return "empty: the message has no value"
    if len(value) > bytes_max:
        return f"oversized: {len(value)} bytes, the limit is {bytes_max}"
    event: BookingEvent | ActivityMessage
    try:
        event = BookingEvent.model_validate_json(value)
    except ValidationError as exc:
        if not _is_activity(value):
            return _describe(exc)
        try:
            event = ActivityMessage.model_validate_json(value)
        except ValidationError as activity_exc:
            return _describe(activity_exc)
    # One partition owns a member only if every message about it carries its id as key.
    if key is None or key != event.member_id.encode():
        shown = "no key" if key is None else f"key {key[:80].decode(errors='replace')!r}"
        return _clip(f"key: messages must be keyed by member_id {event.member_id!r}, this one has {shown}")
    return event


def _is_activity(value: bytes) -> bool:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") in ACTIVITY_TYPES


def kafka_request(event: BookingEvent | ActivityMessage, source: KafkaSource, **metadata: Any) -> CommandRequest:
    """The command request of a booking event or an activity read from Kafka: a refusal
    of it becomes a rejected message in the batch's own transaction (see `KafkaSource`)."""
    if isinstance(event, ActivityMessage):
        return event.to_request(event.member_id, SOURCE, message=source, kafka_topic=source.topic,
                                kafka_partition=source.partition, kafka_offset=source.offset, **metadata)
    return event.to_request(SOURCE, message=source, kafka_topic=source.topic, kafka_partition=source.partition,
                            kafka_offset=source.offset, **metadata)


def dlq_headers(row: asyncpg.Record) -> list[tuple[str, bytes]]:
    return [
        ("reason", row["reason"].encode()),
        ("original-topic", (row["topic"] or "").encode()),
        ("original-partition", str(row["partition"]).encode()),
        ("original-offset", str(row["offset"]).encode()),
        ("rejected-at", row["rejected_at"].isoformat().encode()),
        ("rejected-id", str(row["id"]).encode()),
    ]


async def publish_pending(pool: asyncpg.Pool, producer: Any, dlq_topic: str, source_topic: str) -> int:
    """Publish rows not yet in the dead-letter topic, oldest first; returns how many."""
    published = 0
    for _ in range(PUBLISH_PAGES_MAX):
        rows = await pool.fetch(
            'SELECT id, topic, partition, "offset", key, value, reason, rejected_at FROM rejected_messages'
            " WHERE dlq_published_at IS NULL AND topic = $1 ORDER BY id LIMIT $2", source_topic, PAGE_ROWS_MAX)
        if not rows:
            break
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            futures = [
                await producer.send(dlq_topic, key=None if r["key"] is None else r["key"].encode(),
                                    value=bytes(r["value"]), headers=dlq_headers(r))
                for r in rows
            ]
            await asyncio.gather(*futures)
        await pool.execute("UPDATE rejected_messages SET dlq_published_at = now() WHERE id = ANY($1::bigint[])",
                           [r["id"] for r in rows])
        published += len(rows)
        if len(rows) < PAGE_ROWS_MAX:
            break
    return published


@dataclass(frozen=True, slots=True)
class RejectedRow:
    id: int
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    key: str | None
    value: bytes
    reason: str
    rejected_at: datetime
    retried_at: datetime | None
    dlq_published_at: datetime | None


async def list_rejected(pool: asyncpg.Pool, *, limit: int, before_id: int | None = None,
                        pending_only: bool = False) -> list[RejectedRow]:
    """Newest first; `before_id` is the cursor of the next page."""
    rows = await pool.fetch(
        'SELECT id, source, topic, partition, "offset", key, value, reason, rejected_at, retried_at, dlq_published_at'
        " FROM rejected_messages WHERE id < $1 AND (NOT $2 OR retried_at IS NULL) ORDER BY id DESC LIMIT $3",
        before_id if before_id is not None else 2**63 - 1, pending_only, min(limit, PAGE_ROWS_MAX))
    return [RejectedRow(**{**dict(r), "value": bytes(r["value"])}) for r in rows]


@dataclass
class RetryOutcome:
    applied: int = 0
    rejected: int = 0


async def retry_rejected(ledger: Ledger, pool: asyncpg.Pool, *, bytes_max: int, ids: Sequence[int] | None = None,
                         pages_max: int = 10_000) -> RetryOutcome:
    """Re-submit rejected messages (all pending ones, or those in `ids`) through the
    ledger, oldest first. A message that now passes is marked retried in the same
    transaction that applies it; one that is still refused keeps its row, with the
    new reason. The event id stays the idempotency key, so a retry never doubles."""
    outcome = RetryOutcome()
    after = 0
    for _ in range(pages_max):
        rows = await pool.fetch(
            'SELECT id, topic, partition, "offset", key, value FROM rejected_messages WHERE retried_at IS NULL'
            " AND id > $1 AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[])) ORDER BY id LIMIT $3",
            after, None if ids is None else list(ids), PAGE_ROWS_MAX)
        if not rows:
            break
        after = rows[-1]["id"]
        reasons: dict[int, str] = {}
        requests: list[CommandRequest] = []
        for r in rows:
            key, value = None if r["key"] is None else r["key"].encode(), bytes(r["value"])
            parsed = parse_message(key, value, bytes_max)
            if isinstance(parsed, str):
                reasons[r["id"]] = parsed
                continue
            # The row is marked retried in the transaction that applies its command.
            source = KafkaSource(r["topic"], r["partition"], r["offset"], key, value, rejection_id=r["id"])
            requests.append(kafka_request(parsed, source, retried_rejection=r["id"]))
        outcomes = await ledger.handle_batch(requests) if requests else []
        for request, result in zip(requests, outcomes, strict=True):
            assert request.source is not None and request.source.rejection_id is not None
            if isinstance(result, Rejected):
                reasons[request.source.rejection_id] = refusal_reason(result.error)
            else:
                outcome.applied += 1
        outcome.rejected += len(reasons)
        if reasons:
            await pool.execute(
                "UPDATE rejected_messages m SET reason = x.r FROM unnest($1::bigint[], $2::text[]) AS x(i, r)"
                " WHERE m.id = x.i", list(reasons), list(reasons.values()))
    return outcome
