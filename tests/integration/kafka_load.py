"""Shared by the Kafka tests: booking-event loads, an independent oracle for the
balances they must produce, a producer, consumer processes and the final checks."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import asyncpg

from ledger.domain import DEFAULT_RULES, LedgerError, MemberState, Rules, decide, evolve, fold, in_force
from ledger.ingest.schema import BookingEvent
from ledger.outcomes import refusal_reason
from ledger.settings import Settings
from ledger.store import EventStore

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)  # outside every promotion window
PRODUCTS = ("flight", "hotel", "package", "rail", "car")
ROOT = Path(__file__).resolve().parents[2]

Message = tuple[bytes | None, bytes | None]


def booking_events(n: int, members: int, *, seed: int, prefix: str = "", movements: float = 0.0) -> list[dict[str, Any]]:
    """`n` booking events spread over `members`, in time order: completed bookings, and
    with `movements` > 0, for the members of even number, that share of partial refunds,
    amendments, full refunds after them, and refunds of more than is left (refused by the
    ledger), of the member's earlier bookings (see `_movement`). The others only earn."""
    rng = random.Random(seed)
    run = prefix or uuid.uuid4().hex[:8]
    left: dict[str, dict[str, tuple[dict[str, Any], Decimal]]] = defaultdict(dict)  # member -> booking -> now
    events: list[dict[str, Any]] = []
    for i in range(n):
        number = rng.randrange(members)
        member = f"M-{run}-{number}"
        at = (T0 + timedelta(seconds=i)).isoformat()
        if movements and number % 2 == 0 and left[member] and rng.random() < movements:
            events.append(_movement(rng, f"{run}-{i}", at, left[member]))
            continue
        event = {
            "event_id": f"{run}-{i}",
            "type": "booking.completed",
            "member_id": member,
            "booking_id": f"BK-{run}-{i}",
            "product": rng.choice(PRODUCTS),
            "amount": f"{rng.randrange(1_000, 60_000) / 100:.2f}",
            "currency": "EUR",
            "occurred_at": at,
        }
        if movements and number % 2 == 0:
            left[member][event["booking_id"]] = (event, Decimal(event["amount"]))
        events.append(event)
    return events


CENT = Decimal("0.01")


def _movement(rng: random.Random, event_id: str, at: str, bookings: dict[str, tuple[dict[str, Any], Decimal]]
              ) -> dict[str, Any]:
    """A movement of one of the member's bookings with something left: a partial refund
    (a fifth, a third, a half or all of what is left), an amendment to another amount,
    a full refund (the booking is done), or a refund of a cent more than is left, which
    the ledger refuses and rejects (it changes nothing)."""
    booking_id = rng.choice(list(bookings))  # in the order booked: the same for a seed
    booking, now = bookings[booking_id]
    event = {**booking, "event_id": event_id, "occurred_at": at}
    kind = rng.random()
    if kind < 0.45:
        refund = max((now * rng.choice((Decimal("0.2"), Decimal("0.34"), Decimal("0.5"), Decimal(1)))).quantize(
            CENT, rounding=ROUND_DOWN), CENT)
        event.update(type="booking.refunded", refund_amount=str(refund))
        now -= refund
    elif kind < 0.85:
        amount = now
        while amount == now:
            amount = Decimal(rng.randrange(1_000, 60_000)) / 100
        event.update(type="booking.amended", amount=f"{amount:.2f}")
        now = amount
    elif kind < 0.95:
        event.update(type="booking.refunded")
        now = Decimal(0)
    else:
        event.update(type="booking.refunded", refund_amount=str(now + CENT))
    if now:
        bookings[booking_id] = (booking, now)
    else:
        del bookings[booking_id]
    return event


def encode(event: dict[str, Any]) -> Message:
    return event["member_id"].encode(), json.dumps(event).encode()


@dataclass(frozen=True)
class Expected:
    """What the ledger must hold after a load, folded with the pure domain in the order
    produced (Kafka keeps the order of one key), without the ledger: each member's
    state, and the events the domain refuses (their event id and refusal)."""

    states: dict[str, MemberState]
    refused: dict[str, str]

    def balances(self) -> dict[str, int]:
        """Each member's points: what is left on their active lots."""
        return {member: sum(lot.remaining for lot in state.lots.values() if lot.status == "active")
                for member, state in self.states.items()}


def expected_states(events: Iterable[dict[str, Any]], rules: Rules = DEFAULT_RULES) -> Expected:
    states: dict[str, MemberState] = {}
    refused: dict[str, str] = {}
    for raw in events:
        command = BookingEvent.model_validate(raw).to_command()
        state = states.get(command.member_id) or MemberState(command.member_id)
        try:
            decided = decide(state, command, in_force(rules, command.occurred_at))
        except LedgerError as exc:
            refused[raw["event_id"]] = refusal_reason(exc)
            continue
        assert decided, f"{raw['event_id']} would append nothing, so the store could not show it once"
        for event in decided:
            state = evolve(state, event)
        states[command.member_id] = state
    return Expected(states, refused)


def expected_balances(events: Iterable[dict[str, Any]], rules: Rules = DEFAULT_RULES) -> dict[str, int]:
    """Each member's points, as `expected_states` folds them."""
    return expected_states(events, rules).balances()


async def produce(bootstrap: str, topic: str, messages: Sequence[Message], *, rate_per_s: float | None = None,
                  chunk: int = 1_000) -> None:
    """Send every message (keyed, so one member stays on one partition), optionally
    paced; returns once the broker has acknowledged all of them."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
                                max_batch_size=262_144, request_timeout_ms=30_000, max_request_size=2_097_152)
    await producer.start()
    try:
        started = time.monotonic()
        for i in range(0, len(messages), chunk):
            futures = [await producer.send(topic, key=k, value=v) for k, v in messages[i:i + chunk]]
            await asyncio.gather(*futures)
            if rate_per_s:
                ahead = started + (i + chunk) / rate_per_s - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def create_topics(bootstrap: str, topic: str, partitions: int) -> None:
    try:
        from tests.kafka_broker import ensure_topic
    except ImportError:  # repo root not on sys.path
        from kafka_broker import ensure_topic

    await ensure_topic(bootstrap, topic, partitions)
    await ensure_topic(bootstrap, f"{topic}.dlq", 1)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first look-up of a new topic
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> list[Any]:
    """The first `count` records of a topic (all partitions), without a group."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


def kafka_env(db_url: str, bootstrap: str, topic: str, group: str, data_dir: Path, **extra: object) -> dict[str, str]:
    env = {
        "LEDGER_DATABASE_URL": db_url,
        "LEDGER_DATA_DIR": str(data_dir),
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LEDGER_KAFKA_TOPIC": topic,
        "LEDGER_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "LEDGER_KAFKA_GROUP_ID": group,
        "LEDGER_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LEDGER_KAFKA_BATCH_MESSAGES_MAX": "1000",
        "LEDGER_KAFKA_LAG_LOG_INTERVAL_S": "2",
    }
    env.update({f"LEDGER_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def kafka_settings(db_url: str, bootstrap: str, topic: str, group: str, data_dir: Path, **extra: object) -> Settings:
    fields = {k.removeprefix("LEDGER_").lower(): v for k, v in kafka_env(db_url, bootstrap, topic, group, data_dir,
                                                                        **extra).items()}
    return Settings(projection_idle_ms=5, **fields)  # type: ignore[arg-type]


@dataclass
class ConsumerProcess:
    """`ledger consume` in a child process, as it runs in production."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "consume"], env={**os.environ, **self.env}, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait for the graceful exit; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def consumed(pool: asyncpg.Pool, group: str, topic: str) -> dict[int, int]:
    rows = await pool.fetch("SELECT partition, next_offset FROM kafka_offsets WHERE consumer_group = $1 AND topic = $2",
                            group, topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def wait_consumed(pool: asyncpg.Pool, group: str, topic: str, ends: dict[int, int], timeout_s: float,
                        procs: Sequence[ConsumerProcess] = ()) -> None:
    """Until the stored offsets reach the topic's end offsets."""
    deadline = time.monotonic() + timeout_s
    wanted = {p: o for p, o in ends.items() if o > 0}
    while True:
        try:
            got = await consumed(pool, group, topic)
            if all(got.get(p, 0) >= o for p, o in wanted.items()):
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            got = {}
        if time.monotonic() > deadline:
            tails = "\n".join(p.log_tail() for p in procs)
            raise AssertionError(f"not consumed after {timeout_s} s: stored {got}, wanted {wanted}\n{tails}")
        await asyncio.sleep(0.2)


async def check_exact(pool: asyncpg.Pool, events: Sequence[dict[str, Any]], expected: dict[str, int] | Expected,
                      runner: Any) -> None:
    """No duplicate and no missing event in the store, and every balance exact. With an
    `Expected`, also: each refused event rejected exactly once with the domain's reason,
    and every member's stored stream folding to the expected lots."""
    refused = expected.refused if isinstance(expected, Expected) else {}
    # A booking's command appends one event for the booking, and a `TierChanged` after it
    # when it qualifies the member for a tier above: only the first counts here.
    rows = await pool.fetch("SELECT metadata->>'causation_id' AS event_id, count(*) AS n FROM events"
                            " WHERE metadata->>'source' = 'kafka' AND type <> 'TierChanged' GROUP BY 1")
    stored = {r["event_id"]: r["n"] for r in rows}
    doubled = {k: n for k, n in stored.items() if n != 1}
    assert not doubled, f"{len(doubled)} events stored more than once, e.g. {list(doubled.items())[:5]}"
    produced = {e["event_id"] for e in events} - refused.keys()
    missing = produced - stored.keys()
    assert not missing, f"{len(missing)} produced events missing from the store, e.g. {sorted(missing)[:5]}"
    assert stored.keys() == produced
    if refused:
        rows = await pool.fetch("SELECT convert_from(value, 'UTF8')::jsonb->>'event_id' AS event_id, reason"
                                " FROM rejected_messages")
        rejected = [(r["event_id"], r["reason"]) for r in rows]
        assert sorted(rejected) == sorted(refused.items()), f"{len(rejected)} rejected, {len(refused)} refused"
    await runner.run_until_caught_up()
    balances = {r["member_id"]: (r["available"], r["lifetime_earned"])
                for r in await pool.fetch("SELECT member_id, available, lifetime_earned FROM balances")}
    if isinstance(expected, Expected):
        await _check_streams(pool, expected)
        # Held to the balances read model: members whose bookings only earned (the read
        # model's counts of partial refunds and amendments are checked with the projections).
        moved = {e["member_id"] for e in events if e["type"] != "booking.completed"}
        expected = {m: points for m, points in expected.balances().items() if m not in moved}
        balances = {m: b for m, b in balances.items() if m not in moved}
    wrong = {m: (balances.get(m), points) for m, points in expected.items() if balances.get(m) != (points, points)}
    assert not wrong, f"{len(wrong)} balances differ from the oracle, e.g. {list(wrong.items())[:5]}"
    assert balances.keys() == expected.keys()


def _lots(state: MemberState) -> dict[str, tuple[Any, ...]]:
    return {lot.lot_id: (lot.points, lot.remaining, lot.status, lot.amount, lot.breakdown, lot.qualifying)
            for lots in (state.lots, state.closed) for lot in lots.values()}


async def _check_streams(pool: asyncpg.Pool, expected: Expected) -> None:
    """Every member's stored events, folded, give the expected lots, points and version."""
    store, after = EventStore(pool), 0
    streams: dict[str, list[Any]] = defaultdict(list)
    while page := await store.read_all(after, 50_000, lean=True):
        for stored in page:
            streams[stored.stream_id].append(stored.event)
        after = page[-1].position
    assert streams.keys() == expected.states.keys()
    wrong = []
    for member, state in expected.states.items():
        got = fold(member, streams[member])
        if (got.version, got.active, got.pending, _lots(got)) != (state.version, state.active, state.pending,
                                                                 _lots(state)):
            wrong.append(member)
    assert not wrong, f"{len(wrong)} members' stored events do not fold to the oracle's, e.g. {wrong[:5]}"


def per_member(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["member_id"]].append(e)
    return out
