"""The event store: insert and select only, in PostgreSQL.

Tables are in migrations/versions/0001_initial.py. The events table refuses UPDATE,
DELETE and TRUNCATE by trigger, so nothing here (or anywhere) can rewrite history.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ledger.domain import ConcurrencyConflict, Event, from_data, to_data
from ledger.domain.events import stored_data
from ledger.domain.events import PAIR_FIELDS
from ledger.domain.events import EVENT_TYPES

from .unit_of_work import (
    CommitFailure,
    IdempotencyRace,
    OffsetFence,
    OffsetsFenced,
    RejectedMessage,
    StreamAppend,
    StreamConflict,
    UnitOfWork,
)

GENESIS_HASH = bytes(32)
_sha256 = hashlib.sha256
_dumps = orjson.dumps
READ_PAGE_MAX = 50_000
APPEND_EVENTS_MAX = 20_000
SNAPSHOT_CHUNK = 5_000
APPEND_LOCK_ID = 0x1ED6E1  # the advisory lock appenders take turns on (see `append`)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    stream_id: str
    stream_version: int
    event: Event
    metadata: dict[str, Any]
    recorded_at: datetime
    hash: bytes
    # The schema version the event was stored at, when read from the store (0: its class's
    # own): what `verify_chain` hashes an upcast event as.
    schema_version: int = 0


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 and no escaping beyond what JSON requires: the
    same bytes as `json.dumps(data, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False).encode()` for event data (strings, ints, bools, None, lists and
    str-keyed dicts), which tests/unit/test_canonical_json.py checks, because the hash
    chain of every stored event was computed over that text."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def canonical(data: dict[str, Any]) -> str:
    return canonical_bytes(data).decode()


def _make_body_encoder(cls: type[Event]) -> Callable[[Event], bytes]:
    """`canonical_bytes(to_data(event))` for one class, as one generated function: a
    dict display with the keys already in sorted order, so orjson need not sort them;
    the (lot, points) pairs left as tuples, which it writes as the same arrays as
    to_data's lists of them; and the datetimes written by orjson, a fifth of the cost of
    `isoformat`. orjson writes the same text as `isoformat` except for an offset with
    seconds (`+05:30:15`, some historic zones), which it cuts to the minute: an event
    with such a time, or any value the fast path does not expect, takes the reference
    path, which also raises what it always raised."""
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.name)
    times = [f"event.{f.name}" for f in fields if "datetime" in str(f.type)]
    pairs = [f"event.{f.name}" for f in fields if f.name in PAIR_FIELDS]
    checks = " and ".join([
        *(f"((_v := {t}) is None or (type(_v) is datetime and (_v.tzinfo is UTC or (_o := _v.utcoffset()) is None"
          " or not (_o.seconds % 60 or _o.microseconds))))" for t in times),
        # to_data makes a list of each pair: the same array as a tuple's, for tuples.
        *(f"(type(_p := {p}) is tuple and all([type(_x) is tuple for _x in _p]))" for p in pairs),
    ]) or "True"
    items = ", ".join(f"{f.name!r}: event.{f.name}" for f in fields)
    source = (
        "def body(event):\n"
        f"    if {checks}:\n"
        "        try:\n"
        f"            return dumps({{{items}}})\n"
        "        except JSONEncodeError:\n"
        "            pass\n"
        "    return canonical_bytes(to_data(event))\n"
    )
    namespace: dict[str, Any] = {"datetime": datetime, "UTC": UTC, "dumps": orjson.dumps,
                                 "JSONEncodeError": orjson.JSONEncodeError, "canonical_bytes": canonical_bytes,
                                 "to_data": to_data}
    exec(source, namespace)  # noqa: S102 - generated from the field names only
    return namespace["body"]


_BODY_ENCODERS: dict[type, Callable[[Event], bytes]] = {cls: _make_body_encoder(cls) for cls in EVENT_TYPES.values()}


def event_body(event: Event) -> bytes:
    """The canonical JSON of an event's data, the text its hash covers: the same bytes
    as `canonical_bytes(to_data(event))` (a property test holds them to it), in a
    half the time, since the store encodes every event it appends."""
    return _BODY_ENCODERS[event.__class__](event)


def chain_hash(
    prev: bytes, stream_id: str, version: int, type_name: str, schema_version: int, body: str | bytes
) -> bytes:
    """Each event's hash covers its content and the previous event's hash, so altering
    or removing any event breaks every hash after it in the stream."""
    digest = _sha256(prev)
    digest.update(f"\x00{stream_id}\x00{version}\x00{type_name}\x00{schema_version}\x00".encode())
    digest.update(body if isinstance(body, bytes) else body.encode())
    return digest.digest()


def verify_chain(events: Iterable[StoredEvent]) -> int | None:
    """The stream version of the first event whose hash does not verify, or None."""
    prev = GENESIS_HASH
    for stored in events:
        version = stored.schema_version or stored.event.version
        body = canonical_bytes(to_data(stored.event) if version == stored.event.version
                               else stored_data(stored.event, version))
        expected = chain_hash(prev, stored.stream_id, stored.stream_version, stored.event.type, version, body)
        if expected != stored.hash:
            return stored.stream_version
        prev = stored.hash
    return None


_COLUMNS = "position, stream_id, stream_version, type, schema_version, data, metadata, recorded_at, hash"
_SELECT = f"SELECT {_COLUMNS} FROM events"
# Projections need neither the metadata nor the hash: not decoding them (nor shipping
# them from the server) is a good part of the cost of a page.
LEAN_COLUMNS = "position, stream_id, stream_version, type, schema_version, data, recorded_at"
_NO_METADATA: dict[str, Any] = {}
_APPEND_COLUMNS = ("stream_id", "stream_version", "type", "schema_version", "data", "metadata", "occurred_at", "hash",
                   "idempotency_key")


def _row_to_event(row: asyncpg.Record) -> StoredEvent:
    position, stream_id, stream_version, type_name, schema_version, data, metadata, recorded_at, hash_ = row
    return StoredEvent(
        position, stream_id, stream_version, from_data(type_name, schema_version, orjson.loads(data)),
        orjson.loads(metadata), recorded_at, bytes(hash_), schema_version,
    )


_STATE_COLUMNS = "position, stream_id, stream_version, type, schema_version, data, recorded_at, hash"


def _state_row_to_event(row: asyncpg.Record) -> StoredEvent:
    position, stream_id, stream_version, type_name, schema_version, data, recorded_at, hash_ = row
    return StoredEvent(
        position, stream_id, stream_version, from_data(type_name, schema_version, orjson.loads(data)),
        _NO_METADATA, recorded_at, bytes(hash_), schema_version,
    )


def lean_row_to_event(row: asyncpg.Record) -> StoredEvent:
    """A row of `LEAN_COLUMNS` as a stored event without metadata (an empty dict) or hash."""
    position, stream_id, stream_version, type_name, schema_version, data, recorded_at = row
    return StoredEvent(
        position, stream_id, stream_version, from_data(type_name, schema_version, orjson.loads(data)),
        _NO_METADATA, recorded_at, b"", schema_version,
    )


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._legacy_commands: bool | None = None

    async def has_legacy_commands(self) -> bool:
        """Whether `commands` holds idempotency records written before they moved onto
        the events (migration 0003). Nothing writes there any more, so the answer is
        read once: it can only ever go from true to false by a restore."""
        if self._legacy_commands is None:
            self._legacy_commands = bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM commands)"))
        return self._legacy_commands

    async def read_stream(self, stream_id: str, after_version: int = 0, limit: int = READ_PAGE_MAX) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3",
            stream_id, after_version, min(limit, READ_PAGE_MAX),
        )
        return [_row_to_event(r) for r in rows]

    async def read_streams_after(self, versions: dict[str, int]) -> list[StoredEvent]:
        """The events of many streams after the version given for each, in stream order,
        without their metadata (an empty dict): what loading member states needs."""
        if not versions:
            return []
        # One index probe per stream. As a plain join the planner prefers a merge join
        # that walks the whole (stream_id, stream_version) index, which grows with
        # the table (25 ms per batch at 50,000 events, 10x that at 1M); OFFSET 0
        # keeps it from flattening the lateral subquery into that join.
        rows = await self.pool.fetch(
            f"SELECT {_STATE_COLUMNS} FROM unnest($1::text[], $2::int[]) AS c(sid, v) CROSS JOIN LATERAL"
            " (SELECT * FROM events e WHERE e.stream_id = c.sid AND e.stream_version > c.v OFFSET 0) e"
            " ORDER BY e.stream_id, e.stream_version",
            list(versions), list(versions.values()),
        )
        return [_state_row_to_event(r) for r in rows]

    async def read_all(
        self, after_position: int, limit: int, conn: asyncpg.Connection | None = None, *, lean: bool = False
    ) -> list[StoredEvent]:
        """Events after a global position, in position order. `lean` leaves out the
        metadata (an empty dict) and the hash (empty bytes), for readers such as the
        projections that use neither.

        A reader polling this never skips an event that commits late, because appends
        take turns on an advisory lock until they commit (see `append`): positions become
        visible in the order they were handed out.
        """
        columns, convert = (LEAN_COLUMNS, lean_row_to_event) if lean else (_COLUMNS, _row_to_event)
        rows = await (conn or self.pool).fetch(
            f"SELECT {columns} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            after_position, min(limit, READ_PAGE_MAX),
        )
        return [convert(r) for r in rows]

    async def read_positions(self, positions: Sequence[int]) -> dict[int, StoredEvent]:
        """The events at `positions` (without metadata), by position: how a duplicate
        command's result is rebuilt from its slim idempotency record."""
        if not positions:
            return {}
        assert len(positions) <= READ_PAGE_MAX
        rows = await self.pool.fetch(
            f"SELECT {_STATE_COLUMNS} FROM events WHERE position = ANY($1::bigint[])", list(positions),
        )
        return {r[0]: _state_row_to_event(r) for r in rows}

    async def read_snapshots(self, member_ids: Sequence[str], snapshot_format: int) -> dict[str, tuple[int, bytes, dict]]:
        """member -> (version, hash of that event, state data) of the members with a
        snapshot in `snapshot_format`. Only a snapshot whose event is in the store with
        the hash it recorded counts (not one left from a database restored to earlier)."""
        rows = await self.pool.fetch(
            "SELECT s.member_id, s.version, s.last_hash, s.state FROM member_snapshots s"
            " JOIN events e ON e.stream_id = s.member_id AND e.stream_version = s.version AND e.hash = s.last_hash"
            " WHERE s.member_id = ANY($1::text[]) AND s.format = $2",
            list(member_ids), snapshot_format,
        )
        return {r[0]: (r[1], bytes(r[2]), orjson.loads(r[3])) for r in rows}

    async def write_snapshots(self, snapshots: Sequence[tuple[str, int, bytes, str]], snapshot_format: int) -> None:
        """Save (member, version, last hash, state JSON) snapshots; one already saved at
        a later version stays."""
        for start in range(0, len(snapshots), SNAPSHOT_CHUNK):
            chunk = snapshots[start:start + SNAPSHOT_CHUNK]
            await self.pool.execute(
                "INSERT INTO member_snapshots AS s (member_id, version, last_hash, format, state)"
                " SELECT m, v, h, $5, d FROM unnest($1::text[], $2::int[], $3::bytea[], $4::text[]) AS x(m, v, h, d)"
                " ON CONFLICT (member_id) DO UPDATE SET version = EXCLUDED.version, last_hash = EXCLUDED.last_hash,"
                " format = EXCLUDED.format, state = EXCLUDED.state, taken_at = now()"
                " WHERE s.version < EXCLUDED.version OR s.format <> EXCLUDED.format",
                *zip(*chunk, strict=True), snapshot_format,
            )

    async def head(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))


    async def find_commands(self, keys: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The idempotency records of the keys already used: key -> (request hash, record),
        the record being `{"member_id", "positions", **summary}`. Keys are found on the
        first event their command appended (see `StreamAppend`), or in `commands` for
        records written before they moved onto the events (migration 0003).

        A command's events were appended next to each other in one COPY, which hands out
        consecutive positions under the append lock (see `_write_events`, which checks
        it): a record with N events stands for the N positions from its event's on,
        whichever streams they are in. Records written before commands could span
        streams hold the same: their events were consecutive in their COPY too."""
        if not keys:
            return {}
        rows = await self.pool.fetch(
            "SELECT k, e.stream_id, e.position, e.metadata->'command', c.request_hash, c.result"
            " FROM unnest($1::text[]) AS k LEFT JOIN events e ON e.idempotency_key = k"
            " LEFT JOIN commands c ON c.idempotency_key = k"
            " WHERE e.position IS NOT NULL OR c.idempotency_key IS NOT NULL",
            list(keys),
        )
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, stream_id, position, command, legacy_hash, legacy_result in rows:
            if position is None:
                found[key] = (legacy_hash, orjson.loads(legacy_result))
                continue
            command = orjson.loads(command)
            count = command.pop("events")
            positions = list(range(position, position + count))
            found[key] = (command.pop("request_hash"), {"member_id": stream_id, "positions": positions, **command})
        return found

    async def append(self, appends: Sequence[StreamAppend]) -> None:
        """Append events alone (tests, tools): `commit` of a unit of work that holds only
        them, its failure raised as a ConcurrencyConflict."""
        failure = await self.commit(UnitOfWork(list(appends)))
        if failure is not None:
            raise ConcurrencyConflict(failure.message)

    async def redirects(self, member_ids: Sequence[str]) -> dict[str, str]:
        """Members (M2): member -> the member it was merged into, of those given that were."""
        rows = await self.pool.fetch("SELECT member_id, merged_into FROM member_redirects WHERE member_id = ANY($1)",
                                     list(member_ids))
        return {r["member_id"]: r["merged_into"] for r in rows}

    async def commit(self, uow: UnitOfWork) -> CommitFailure | None:
        """Write a unit of work in one transaction: the events of every append (filling
        in their positions and hashes), then the offset fence, then the rejected
        messages and the retried ones. A keyed append records its key on its first
        event, with its record in that event's metadata.

        Returns None when all of it committed, or the reason none of it did: a stream
        moved past an expected version (StreamConflict), another transaction took an
        idempotency key first (IdempotencyRace), or a fenced offset moved
        (OffsetsFenced). Database faults are raised."""
        records = _event_records(uow.appends)
        assert len(records) <= APPEND_EVENTS_MAX, "batches are bounded by their callers"
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                failure = await self._write(conn, uow, records)
            except BaseException:
                await transaction.rollback()
                raise
            if failure is not None:
                await transaction.rollback()
                for append in uow.appends:  # nothing of them was written
                    append.positions, append.hashes = [], []
                return failure
            await transaction.commit()
        return None

    async def _write(self, conn: asyncpg.Connection, uow: UnitOfWork, records: list[tuple]) -> CommitFailure | None:
        if records:
            failure = await _write_events(conn, uow.appends, records)
            if failure is not None:
                return failure
        if uow.offset_fence is not None and not await _move_offsets(conn, uow.offset_fence):
            fence = uow.offset_fence
            return OffsetsFenced(
                f"offsets of {fence.topic} partitions {sorted(p for p, _, _ in fence.partitions)} moved under this"
                " consumer; the batch is rolled back (another group member owns them now)")
        await _insert_rejections(conn, uow.rejections)
        if uow.redirects:
            await conn.execute(
                "INSERT INTO member_redirects (member_id, merged_into, merged_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])", *zip(*uow.redirects, strict=True))
        if uow.retried_rejections:
            await conn.execute("UPDATE rejected_messages SET retried_at = now() WHERE id = ANY($1::bigint[])",
                               uow.retried_rejections)
        return None


def _event_records(appends: Sequence[StreamAppend]) -> list[tuple]:
    """The rows of every append, in the order of _APPEND_COLUMNS, hash-chained per stream;
    fills in each append's hashes."""
    records: list[tuple] = []
    last_hash: dict[str, tuple[int, bytes]] = {}
    for req in appends:
        stream_id = req.stream_id
        version, prev = last_hash.get(stream_id, (req.expected_version, req.prev_hash))
        assert version == req.expected_version, "appends to one stream in a batch must follow each other"
        key = req.idempotency_key
        # Not canonical (sorted): jsonb keeps its own key order, and no hash covers it.
        meta = _dumps(req.metadata if key is None else {**req.metadata, "command": req.record}).decode()
        hashes = []
        for event in req.events:
            version += 1
            body = event_body(event)
            prev = chain_hash(prev, stream_id, version, event.type, event.version, body)
            records.append((stream_id, version, event.type, event.version, body.decode(), meta, event.occurred_at,
                            prev, key))
            hashes.append(prev)
            if key is not None and len(req.events) > 1:  # the key and its record: first event only
                key, meta = None, _dumps(req.metadata).decode()
        req.hashes = hashes
        last_hash[stream_id] = (version, prev)
    return records


async def _write_events(conn: asyncpg.Connection, appends: Sequence[StreamAppend],
                        records: list[tuple]) -> CommitFailure | None:
    # Why lock: positions come from an identity column when each row is
    # inserted, but transactions commit in their own order, so without this a
    # reader polling `position > last_seen` could pass over a position whose
    # transaction commits late, and never see it. Appenders take turns on this
    # transaction-scoped advisory lock from here to commit, so positions commit
    # in the order they are handed out; readers are not held up. It is taken as
    # late as possible, and the batch path amortises it over hundreds of events.
    # An advisory lock rather than `LOCK TABLE ... IN EXCLUSIVE MODE`: that mode
    # conflicts with the lock autovacuum takes to vacuum or analyse the table,
    # so every append waited out each autovacuum pass on `events` (a second
    # until the deadlock timeout cancelled it, and for the whole pass of an
    # anti-wraparound vacuum, which is not cancelled).
    # The one lock also makes appends to several streams (a command across
    # members) safe from deadlocks: a transaction takes no row lock on a stream
    # before it holds this lock, so two transactions writing the same streams in
    # opposite orders are simply serialised; no per-stream locks, and no lock
    # order by sorted stream id, are needed while appends take turns here.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_ID)
    try:
        await conn.copy_records_to_table("events", columns=_APPEND_COLUMNS, records=records)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_idempotency_key":
            return IdempotencyRace("A request with the same idempotency key was recorded concurrently.")
        return StreamConflict("The member's account changed while this request was processed; please retry.")
    # COPY hands out positions row by row in the order of the records, and no
    # other appender inserts until this one commits: this batch's positions
    # are the consecutive values ending at the sequence's current one. The
    # first and last rows are checked, so that a row inserted by anything
    # other than this store in between cannot go unnoticed.
    ends = await conn.fetch(
        "WITH c AS (SELECT currval(pg_get_serial_sequence('events', 'position')) AS last)"
        " SELECT c.last, e.stream_id, e.stream_version FROM c"
        " LEFT JOIN events e ON e.position IN (c.last - $1 + 1, c.last) ORDER BY e.position",
        len(records),
    )
    expected = [records[0][:2], records[-1][:2]] if len(records) > 1 else [records[0][:2]]
    if [(r[1], r[2]) for r in ends] != expected:
        return StreamConflict("Events were inserted outside the event store during this append.")
    position = ends[0][0] - len(records)
    for req in appends:
        req.positions = list(range(position + 1, position + 1 + len(req.events)))
        position += len(req.events)
    return None


async def _move_offsets(conn: asyncpg.Connection, fence: OffsetFence) -> bool:
    """The fence: each offset moves from the value the consumer saw stored, or not at
    all (a first offset is inserted only where none is stored). False: some did not
    move, and the caller rolls the transaction back."""
    update = [(p, seen, new) for p, seen, new in fence.partitions if seen is not None]
    insert = [(p, new) for p, seen, new in fence.partitions if seen is None]
    moved = 0
    if update:
        moved += len(await conn.fetch(
            "UPDATE kafka_offsets o SET next_offset = x.n, updated_at = now()"
            " FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS x(p, f, n)"
            " WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = x.p AND o.next_offset = x.f"
            " RETURNING o.partition",
            fence.group, fence.topic, *(list(c) for c in zip(*update, strict=True))))
    if insert:
        moved += len(await conn.fetch(
            "INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset)"
            " SELECT $1, $2, p, n FROM unnest($3::int[], $4::bigint[]) AS x(p, n)"
            " ON CONFLICT DO NOTHING RETURNING partition",
            fence.group, fence.topic, *(list(c) for c in zip(*insert, strict=True))))
    return moved == len(fence.partitions)


async def _insert_rejections(conn: asyncpg.Connection, rejections: Sequence[RejectedMessage]) -> None:
    if not rejections:
        return
    # A message is rejected once per offset; the constraint makes a repeat harmless.
    await conn.execute(
        'INSERT INTO rejected_messages (source, topic, partition, "offset", key, value, reason)'
        " SELECT s, t, p, o, k, v, r FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[],"
        " $6::bytea[], $7::text[]) AS x(s, t, p, o, k, v, r) ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
        [r.source for r in rejections], [r.topic for r in rejections], [r.partition for r in rejections],
        [r.offset for r in rejections],
        [None if r.key is None else r.key.decode(errors="replace") for r in rejections],
        [r.value for r in rejections], [r.reason for r in rejections],
    )
