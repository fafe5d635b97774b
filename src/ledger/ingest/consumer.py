"""The Kafka consumer: booking events from a topic into the ledger, exactly once in effect.

Why it holds together:
- PostgreSQL, not Kafka, owns the consumed offsets. Each batch appends its events,
  moves `kafka_offsets` and records its rejected messages in one transaction, so
  after a crash anywhere the batch is either all there or not at all, and the
  consumer resumes from the stored offsets (it seeks to them on every assignment).
- The offset write is fenced: it only moves a partition's offset forward from the
  value this consumer last saw stored. A consumer that lost the partition in a
  rebalance, and whose replacement has moved on, finds the value changed and rolls
  the whole batch back. Idempotency keys (`booking-event:<event_id>`) stay as a second
  line of defence.
- Offsets are committed to Kafka too, after the database commit, only so that the
  usual lag tools work; they are never read back.
- Bad messages go to `rejected_messages` (with the offsets) and then to the
  dead-letter topic (see ingest/rejected.py); the consumer goes on.
- Everything is bounded: a batch has at most N messages, B bytes and T ms of waiting;
  fetches are bounded in bytes; a batch is applied before the next one is fetched,
  which is the backpressure.
- The partitions are shared out among `kafka_apply_lanes` lanes (partition modulo
  lanes), each a loop of its own: fetch a batch of its partitions, apply it in its own
  transaction, again. A partition is only ever in one lane, so its batches go in order
  and the fence above holds as it is; the lanes only overlap in time, one deciding
  while another's transaction is in the database (one lane: the consumer waited for a
  third of the time it applied, `bench/kafka_bench.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from ledger.bootstrap import Container, GcPacer
from ledger.handlers import CommandRequest, KafkaSource, Ledger
from ledger.settings import Settings
from ledger.store.database import DATABASE_ERRORS
from ledger.store.unit_of_work import Fenced, OffsetFence, RejectedMessage
from ledger.supervisor import Backoff

from .rejected import SOURCE, kafka_request, parse_message, publish_pending
from .topics import wait_for_topics

log = logging.getLogger(__name__)

__all__ = ["BatchOutcome", "BookingConsumer", "Fenced", "consumer_task"]

IDLE_POLL_MS = 200  # how long one empty poll waits: also how fast a stop is noticed
BACKOFF_S_MIN = 0.1
BACKOFF_S_MAX = 5.0
KAFKA_CALL_TIMEOUT_S = 10.0  # start, commit, offset look-ups: each is bounded on its own
SHUTDOWN_BATCH_S_MAX = 20.0  # a batch under way at shutdown gets this long to finish
DLQ_RETRY_S = 5.0
SNAPSHOT_MEMBERS_PER_ROUND = 5_000  # about 50 ms of writes between two batches
PRODUCER_LINGER_MS = 5


@dataclass(slots=True)
class _Partition:
    next_offset: int  # the stored offset (or the log start when nothing is stored yet)
    stored: bool  # whether a kafka_offsets row exists, i.e. update it or insert it


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    messages: int
    applied: int
    duplicates: int
    rejected: int


def _backoff() -> Backoff:
    return Backoff(BACKOFF_S_MIN, BACKOFF_S_MAX)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BookingConsumer, consumer: AIOKafkaConsumer) -> None:
        self.owner, self.consumer = owner, consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.owner.assigned(self.consumer, assigned)


class BookingConsumer:
    """One member of the consumer group. `run(stop)` until `stop` is set."""

    def __init__(self, ledger: Ledger, pool: asyncpg.Pool, settings: Settings, *,
                 bootstrap_servers: str | None = None, client_id: str = "ledger-consumer") -> None:
        bootstrap = bootstrap_servers or settings.kafka_bootstrap_servers
        assert bootstrap, "the consumer needs LEDGER_KAFKA_BOOTSTRAP_SERVERS"
        self.ledger, self.pool, self.settings = ledger, pool, settings
        self.bootstrap, self.client_id = bootstrap, client_id
        self.topic, self.group = settings.kafka_topic, settings.kafka_group_id
        self._parts: dict[int, _Partition] = {}
        # A lane's, held while it applies a batch; a rebalance takes them all, so a
        # partition is never handed over in the middle of one of our transactions.
        self._locks = [asyncio.Lock() for _ in range(settings.kafka_apply_lanes)]
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_due = True
        self._dlq_next_try = 0.0
        self._lag_logged_at = time.monotonic()
        self._snapshot_due = time.monotonic() + settings.kafka_snapshot_interval_s
        self.state = "starting"
        self._gc = GcPacer()
        self.totals = {"messages": 0, "applied": 0, "duplicates": 0, "rejected": 0, "batches": 0, "fenced": 0}

    # -- the group ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _all_lanes(self) -> AsyncIterator[None]:
        """Every lane's lock, in order (no batch under way while held)."""
        async with contextlib.AsyncExitStack() as stack:
            for lock in self._locks:
                await stack.enter_async_context(lock)
            yield

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._all_lanes():
            for tp in revoked:
                self._parts.pop(tp.partition, None)
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def assigned(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Seek every new partition to the offset stored in PostgreSQL."""
        async with self._all_lanes():
            mine = [tp for tp in assigned if tp.topic == self.topic]
            stored = await self._stored_offsets([tp.partition for tp in mine])
            missing = [tp for tp in mine if tp.partition not in stored]
            starts = await consumer.beginning_offsets(missing) if missing else {}
            for tp in mine:
                if tp.partition in stored:
                    self._parts[tp.partition] = _Partition(stored[tp.partition], True)
                else:
                    self._parts[tp.partition] = _Partition(starts[tp], False)
                consumer.seek(tp, self._parts[tp.partition].next_offset)
            log.info("partitions assigned: %s", {p: self._parts[p].next_offset for p in sorted(self._parts)})

    async def _stored_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        # PostgreSQL may be restarting just now; the rebalance waits for this, so it
        # retries within the poll interval rather than joining with unknown offsets.
        deadline = time.monotonic() + self.settings.kafka_max_poll_interval_ms / 2000
        backoff = _backoff()
        while True:
            try:
                rows = await self.pool.fetch(
                    "SELECT partition, next_offset FROM kafka_offsets WHERE consumer_group = $1 AND topic = $2"
                    " AND partition = ANY($3::int[])", self.group, self.topic, list(partitions))
                return {r["partition"]: r["next_offset"] for r in rows}
            except DATABASE_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("reading stored offsets failed (%s); retrying", exc)
                await asyncio.sleep(backoff.next())

    # -- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = _backoff()
        while not stop.is_set():
            try:
                await self._session(stop, backoff)
            except Exception as exc:  # the broker or the database is away: start over
                self.state = "retrying"
                log.warning("consumer session ended (%s: %s); starting again", type(exc).__name__, exc)
                await _sleep_or_stop(stop, backoff.next())
        self.state = "stopped"

    def _kafka_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=s.kafka_batch_messages_max,
            fetch_max_bytes=s.kafka_fetch_bytes_max,
            # At least one message larger than the limit still comes through, so an
            # oversized message is rejected rather than stalling its partition.
            max_partition_fetch_bytes=min(s.kafka_fetch_bytes_max, max(s.kafka_message_bytes_max * 4, 1_048_576)),
            fetch_max_wait_ms=min(s.kafka_batch_ms_max, 500),
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_session_timeout_ms // 3,
            max_poll_interval_ms=s.kafka_max_poll_interval_ms,
            rebalance_timeout_ms=s.kafka_max_poll_interval_ms,
            request_timeout_ms=max(s.kafka_request_timeout_ms, s.kafka_session_timeout_ms + 1_000),
            retry_backoff_ms=100,
            metadata_max_age_ms=60_000,
            consumer_timeout_ms=IDLE_POLL_MS,
        )

    def _producer(self) -> AIOKafkaProducer:
        s = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-dlq",
            acks="all",
            enable_idempotence=True,
            linger_ms=PRODUCER_LINGER_MS,
            request_timeout_ms=s.kafka_request_timeout_ms,
            max_request_size=max(1_048_576, s.kafka_fetch_bytes_max),
            max_batch_size=65_536,
        )

    async def _session(self, stop: asyncio.Event, backoff: Backoff) -> None:
        consumer, producer = self._kafka_consumer(), self._producer()
        self._consumer = consumer
        try:
            async with asyncio.timeout(KAFKA_CALL_TIMEOUT_S):
                await producer.start()
                await consumer.start()
            consumer.subscribe([self.topic], listener=_Listener(self, consumer))
            self.state = "running"
            backoff.reset()
            try:
                async with asyncio.TaskGroup() as lanes:  # one lane failing ends the session
                    for lane in range(len(self._locks)):
                        lanes.create_task(self._lane(consumer, producer, stop, lane))
            except ExceptionGroup as group:
                raise group.exceptions[0] from None
        finally:
            self.state = "stopping"
            # Waits for the batches still under way (bounded), then leaves the group.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_BATCH_S_MAX):
                    async with self._all_lanes():
                        pass
            with contextlib.suppress(Exception):
                await self._commit_kafka(consumer)
            self._consumer = None
            self._parts.clear()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(KAFKA_CALL_TIMEOUT_S):
                    await consumer.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(KAFKA_CALL_TIMEOUT_S):
                    await producer.stop()

    async def _lane(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event,
                    lane: int) -> None:
        """Fetch and apply batches of this lane's partitions until `stop`. The first lane
        also saves snapshots, publishes the dead letters and logs the lag."""
        lanes, backoff = len(self._locks), _backoff()
        while not stop.is_set():
            mine = [tp for tp in consumer.assignment() if tp.topic == self.topic and tp.partition % lanes == lane]
            if mine:
                batch = await self._collect(consumer, stop, mine)
            else:
                batch = {}
                await _sleep_or_stop(stop, IDLE_POLL_MS / 1000)
            if stop.is_set():
                break  # abandoned before it was applied: nothing of it is stored
            if batch:
                try:
                    # Shielded: a stop during the transaction lets it finish.
                    with self._gc.paused():
                        outcome = await asyncio.shield(self._apply_locked(lane, batch))
                except Fenced as exc:
                    self.totals["fenced"] += 1
                    log.warning("%s", exc)
                    await self._rewind(consumer, batch, reload=True)
                    continue
                except Exception as exc:
                    log.warning("batch failed (%s: %s); it will be read again", type(exc).__name__, exc)
                    await self._rewind(consumer, batch)
                    await _sleep_or_stop(stop, backoff.next())
                    continue
                backoff.reset()
                if outcome.messages:
                    self._gc.after_batch()
                    await self._commit_kafka(consumer)
            if lane == 0:
                await self._save_snapshots()
                await self._publish_dlq(producer)
                self._log_lag()

    async def _collect(self, consumer: AIOKafkaConsumer, stop: asyncio.Event,
                       partitions: Sequence[TopicPartition]) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to N messages (and B bytes) of `partitions`, waiting at most T ms after the
        first one."""
        s = self.settings
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        count = size = 0
        deadline: float | None = None
        while count < s.kafka_batch_messages_max and size < s.kafka_batch_bytes_max and not stop.is_set():
            if deadline is None:
                wait_ms = IDLE_POLL_MS
            else:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms <= 0:
                    break
            got = await consumer.getmany(*partitions, timeout_ms=wait_ms,
                                         max_records=s.kafka_batch_messages_max - count)
            if not got:
                if deadline is None:
                    break  # idle: let the caller look at stop, the DLQ and the lag
                continue
            if deadline is None:
                deadline = time.monotonic() + s.kafka_batch_ms_max / 1000
            for tp, records in got.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
                size += sum(r.serialized_value_size for r in records)
        return batch

    async def _apply_locked(self, lane: int, batch: dict[TopicPartition, list[ConsumerRecord]]) -> BatchOutcome:
        async with self._locks[lane]:
            return await self.apply_batch(batch)

    async def apply_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> BatchOutcome:
        """Apply one batch: events, offsets and rejections in one transaction.

        Only records of partitions this consumer holds, at or past the stored offset,
        are applied (earlier ones are already in). Raises Fenced, and writes nothing,
        if another consumer moved any of the partitions' offsets meanwhile."""
        s = self.settings
        records: list[ConsumerRecord] = []
        start: dict[int, _Partition] = {}
        end: dict[int, int] = {}
        for tp, recs in batch.items():
            part = self._parts.get(tp.partition) if tp.topic == self.topic else None
            fresh = [r for r in recs if part is not None and r.offset >= part.next_offset]
            if part is None or not fresh:
                continue
            start[tp.partition] = part
            end[tp.partition] = fresh[-1].offset + 1
            records.extend(fresh)
        if not records:
            return BatchOutcome(0, 0, 0, 0)

        requests: list[CommandRequest] = []
        rejections: list[RejectedMessage] = []
        for r in records:
            value = r.value or b""
            parsed = parse_message(r.key, r.value, s.kafka_message_bytes_max)
            if isinstance(parsed, str):
                rejections.append(RejectedMessage(r.topic, r.partition, r.offset, r.key, value, parsed, SOURCE))
            else:
                requests.append(kafka_request(parsed, KafkaSource(r.topic, r.partition, r.offset, r.key, value)))
        # The fence moves each partition on from the offset this consumer saw stored (or
        # inserts it where it saw none): see the module's docstring.
        fence = OffsetFence(self.group, self.topic, tuple(
            (p, part.next_offset if part.stored else None, end[p]) for p, part in start.items()))
        outcomes = await self.ledger.handle_batch(requests, offset_fence=fence, rejections=rejections)
        for partition, offset in end.items():
            start[partition].next_offset, start[partition].stored = offset, True

        statuses = outcomes.counts()  # not the outcomes themselves: none is built (see BatchOutcomes)
        outcome = BatchOutcome(
            messages=len(records), applied=statuses["applied"], duplicates=statuses["duplicate"],
            rejected=len(rejections) + statuses["rejected"],
        )
        self.totals["batches"] += 1
        for name in ("messages", "applied", "duplicates", "rejected"):
            self.totals[name] += getattr(outcome, name)
        if outcome.rejected:
            self._dlq_due, self._dlq_next_try = True, 0.0
        return outcome

    async def _rewind(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]], *,
                      reload: bool = False) -> None:
        """After a failed batch, fetch its partitions again from the stored offsets
        (read afresh when `reload`: someone else moved them)."""
        async with self._all_lanes():
            held = [tp for tp in batch if tp.partition in self._parts and tp in consumer.assignment()]
            if reload and held:
                with contextlib.suppress(Exception):
                    stored = await self._stored_offsets([tp.partition for tp in held])
                    for tp in held:
                        if tp.partition in stored:
                            self._parts[tp.partition] = _Partition(stored[tp.partition], True)
            for tp in held:
                consumer.seek(tp, self._parts[tp.partition].next_offset)

    async def _commit_kafka(self, consumer: AIOKafkaConsumer) -> None:
        """Tell Kafka too, for lag tools only: a failure here costs nothing."""
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(part.next_offset, "")
                   for p, part in self._parts.items() if part.stored}
        if not offsets:
            return
        try:
            async with asyncio.timeout(KAFKA_CALL_TIMEOUT_S):
                await consumer.commit(offsets)
        except Exception as exc:
            log.info("offset commit to Kafka skipped (%s)", type(exc).__name__)

    async def _save_snapshots(self) -> None:
        """Now and then, save the states of the members whose state moved since, a
        bounded round at a time between batches, so that a consumer that was killed
        (no graceful stop, no final save) restarts warm. Best effort: the events stay
        the record, and a snapshot is only where a fold starts."""
        now = time.monotonic()
        if now < self._snapshot_due:
            return
        try:
            await self.ledger.save_snapshots(SNAPSHOT_MEMBERS_PER_ROUND)
        except Exception as exc:  # best effort: never the end of the session
            log.warning("saving member state snapshots failed (%s: %s); trying again later", type(exc).__name__, exc)
            self._snapshot_due = now + self.settings.kafka_snapshot_interval_s
            return
        if not self.ledger.cache.unsaved():  # else another round after the next batch
            self._snapshot_due = now + self.settings.kafka_snapshot_interval_s

    async def _publish_dlq(self, producer: AIOKafkaProducer) -> None:
        if not self._dlq_due or time.monotonic() < self._dlq_next_try:
            return
        # Cleared before, not after: another lane's batch that commits a rejection while
        # this publishes sets it again, and the next pass publishes that one.
        self._dlq_due = False
        try:
            published = await publish_pending(self.pool, producer, self.settings.kafka_dlq_topic, self.topic)
            if published:
                log.info("%d rejected messages published to %s", published, self.settings.kafka_dlq_topic)
        except Exception as exc:
            self._dlq_due = True
            self._dlq_next_try = time.monotonic() + DLQ_RETRY_S
            log.warning("publishing to the dead-letter topic failed (%s); retrying in %.0f s", exc, DLQ_RETRY_S)

    # -- lag ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per-partition position and lag, for /readyz, the metrics and the log. Safe to
        call from another thread (the metrics server's): it reads a copy of the
        partitions, and a partition the group is handing over just now has no lag."""
        consumer = self._consumer
        partitions = {}
        for p, part in sorted(list(self._parts.items())):
            high = None
            if consumer is not None:
                with contextlib.suppress(AssertionError, KeyError, AttributeError):  # not (or no longer) assigned
                    high = consumer.highwater(TopicPartition(self.topic, p))
            partitions[str(p)] = {"next_offset": part.next_offset, "highwater": high,
                                  "lag": None if high is None else max(high - part.next_offset, 0)}
        known = [v["lag"] for v in partitions.values() if v["lag"] is not None]
        return {"state": self.state, "topic": self.topic, "group": self.group, "partitions": partitions,
                "lag_total": sum(known) if known else None, **self.totals}

    def _log_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_logged_at < self.settings.kafka_lag_log_interval_s:
            return
        self._lag_logged_at = now
        status = self.status()
        lags = ", ".join(f"p{p}={v['lag']}" for p, v in status["partitions"].items())
        log.info("kafka lag %s: %s (total %s; %d messages, %d rejected so far)", self.topic, lags or "no partitions",
                 status["lag_total"], self.totals["messages"], self.totals["rejected"])


async def consumer_task(container: Container, stop: asyncio.Event) -> None:
    """Consume until `stop` is set; what `ledger serve` and `ledger consume` run."""
    consumer = BookingConsumer(container.ledger, container.pool, container.settings)
    container.extras["kafka_status"] = consumer.status
    if not await wait_for_topics(container.settings, stop):  # stopped before the topics were there
        consumer.state = "stopped"
        return
    log.info("consuming %s as group %s from %s", consumer.topic, consumer.group, consumer.bootstrap)
    await consumer.run(stop)
    log.info("consumer stopped after %d messages", consumer.totals["messages"])
    # The next consumer of these partitions starts from these states, not from every
    # member's whole history. Best effort: without them it only starts slower.
    try:
        saved = await container.ledger.save_snapshots()
        log.info("saved %d member state snapshots", saved)
    except DATABASE_ERRORS as exc:
        log.warning("member state snapshots not saved: %s", exc)
