"""The event store: insert and select only, in PostgreSQL.

Tables are in migrations/versions/0001_initial.py. The events table refuses UPDATE,
DELETE and TRUNCATE by trigger, so nothing here (or anywhere) can rewrite history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ledger.domain import ConcurrencyConflict, Event, from_data, to_data

GENESIS_HASH = bytes(32)
READ_PAGE_MAX = 50_000
APPEND_EVENTS_MAX = 20_000

BeforeCommit = Callable[[asyncpg.Connection], Awaitable[None]]


class IdempotencyRace(ConcurrencyConflict):
    """Another transaction recorded the same idempotency key first; retrying finds it."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    stream_id: str
    stream_version: int
    event: Event
    metadata: dict[str, Any]
    recorded_at: datetime
    hash: bytes


@dataclass(slots=True)
class AppendRequest:
    """The events one command decided, to append after `expected_version` of the stream."""

    stream_id: str
    expected_version: int
    prev_hash: bytes
    events: list[Event]
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    request_hash: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # stored with the result, e.g. available after
    # Filled in by `append`:
    positions: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)  # each event's body, for its result
    result: dict[str, Any] = field(default_factory=dict)  # what `results` built, for the caller too

    @property
    def record(self) -> dict[str, Any]:
        """What the idempotency record keeps: enough to answer a duplicate, whose events
        are read back by position rather than stored a second time."""
        return {"member_id": self.stream_id, "positions": self.positions, **self.summary}


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 and no escaping beyond what JSON requires: the
    same bytes as `json.dumps(data, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False).encode()` for event data (strings, ints, bools, None, lists and
    str-keyed dicts), which tests/unit/test_canonical_json.py checks, because the hash
    chain of every stored event was computed over that text."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def canonical(data: dict[str, Any]) -> str:
    return canonical_bytes(data).decode()


def chain_hash(
    prev: bytes, stream_id: str, version: int, type_name: str, schema_version: int, body: str | bytes
) -> bytes:
    """Each event's hash covers its content and the previous event's hash, so altering
    or removing any event breaks every hash after it in the stream."""
    h = hashlib.sha256(prev)
    h.update(f"\x00{stream_id}\x00{version}\x00{type_name}\x00{schema_version}\x00".encode())
    h.update(body if isinstance(body, bytes) else body.encode())
    return h.digest()


def verify_chain(events: Iterable[StoredEvent]) -> int | None:
    """The stream version of the first event whose hash does not verify, or None."""
    prev = GENESIS_HASH
    for stored in events:
        body = canonical_bytes(to_data(stored.event))
        expected = chain_hash(prev, stored.stream_id, stored.stream_version, stored.event.type, stored.event.version, body)
        if expected != stored.hash:
            return stored.stream_version
        prev = stored.hash
    return None


_COLUMNS = "position, stream_id, stream_version, type, schema_version, data, metadata, recorded_at, hash"
_SELECT = f"SELECT {_COLUMNS} FROM events"
# Projections need neither the metadata nor the hash: not decoding them (nor shipping
# them from the server) is a good part of the cost of a page.
_LEAN_COLUMNS = "position, stream_id, stream_version, type, schema_version, data, recorded_at"
_NO_METADATA: dict[str, Any] = {}


def _row_to_event(row: asyncpg.Record) -> StoredEvent:
    position, stream_id, stream_version, type_name, schema_version, data, metadata, recorded_at, hash_ = row
    return StoredEvent(
        position, stream_id, stream_version, from_data(type_name, schema_version, orjson.loads(data)),
        orjson.loads(metadata), recorded_at, bytes(hash_),
    )


def _lean_row_to_event(row: asyncpg.Record) -> StoredEvent:
    position, stream_id, stream_version, type_name, schema_version, data, recorded_at = row
    return StoredEvent(
        position, stream_id, stream_version, from_data(type_name, schema_version, orjson.loads(data)),
        _NO_METADATA, recorded_at, b"",
    )


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def read_stream(self, stream_id: str, after_version: int = 0, limit: int = READ_PAGE_MAX) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3",
            stream_id, after_version, min(limit, READ_PAGE_MAX),
        )
        return [_row_to_event(r) for r in rows]

    async def read_streams_after(self, versions: dict[str, int]) -> list[StoredEvent]:
        """The events of many streams after the version given for each, in stream order."""
        if not versions:
            return []
        # One index probe per stream. As a plain join the planner prefers a merge join
        # that walks the whole (stream_id, stream_version) index, which grows with
        # the table (25 ms per batch at 50,000 events, 10x that at 1M); OFFSET 0
        # keeps it from flattening the lateral subquery into that join.
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM unnest($1::text[], $2::int[]) AS c(sid, v) CROSS JOIN LATERAL"
            " (SELECT * FROM events e WHERE e.stream_id = c.sid AND e.stream_version > c.v OFFSET 0) e"
            " ORDER BY e.stream_id, e.stream_version",
            list(versions), list(versions.values()),
        )
        return [_row_to_event(r) for r in rows]

    async def read_all(
        self, after_position: int, limit: int, conn: asyncpg.Connection | None = None, *, lean: bool = False
    ) -> list[StoredEvent]:
        """Events after a global position, in position order. `lean` leaves out the
        metadata (an empty dict) and the hash (empty bytes), for readers such as the
        projections that use neither.

        A reader polling this never skips an event that commits late, because appends
        hold an exclusive table lock until they commit (see `append`): positions become
        visible in the order they were handed out.
        """
        columns, convert = (_LEAN_COLUMNS, _lean_row_to_event) if lean else (_COLUMNS, _row_to_event)
        rows = await (conn or self.pool).fetch(
            f"SELECT {columns} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            after_position, min(limit, READ_PAGE_MAX),
        )
        return [convert(r) for r in rows]

    async def read_positions(self, positions: Sequence[int]) -> dict[int, tuple[int, str, dict[str, Any]]]:
        """(stream version, type, data) of the events at `positions`, by position: how a
        duplicate command's result is rebuilt from its slim idempotency record."""
        if not positions:
            return {}
        assert len(positions) <= READ_PAGE_MAX
        rows = await self.pool.fetch(
            "SELECT position, stream_version, type, data FROM events WHERE position = ANY($1::bigint[])",
            list(positions),
        )
        return {r[0]: (r[1], r[2], orjson.loads(r[3])) for r in rows}

    async def head(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))

    async def find_commands(self, keys: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        if not keys:
            return {}
        rows = await self.pool.fetch(
            "SELECT idempotency_key, request_hash, result FROM commands WHERE idempotency_key = ANY($1::text[])", list(keys)
        )
        return {r[0]: (r[1], orjson.loads(r[2])) for r in rows}

    async def append(
        self,
        requests: Sequence[AppendRequest],
        results: Callable[[AppendRequest], dict[str, Any]],
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Append every request's events in one transaction, with their idempotency
        records (`AppendRequest.record`, once positions are known); `results` builds
        each request's full result for the caller.

        Raises ConcurrencyConflict when a stream moved past an expected version, and
        IdempotencyRace when another transaction took one of the keys first; either
        way nothing was written and the caller retries against fresh state.
        """
        stream_ids: list[str] = []
        versions: list[int] = []
        types: list[str] = []
        schema_versions: list[int] = []
        bodies: list[str] = []
        metadatas: list[str] = []
        occurred: list[datetime] = []
        hashes: list[bytes] = []
        last_hash: dict[str, tuple[int, bytes]] = {}
        for req in requests:
            version, prev = last_hash.get(req.stream_id, (req.expected_version, req.prev_hash))
            assert version == req.expected_version, "appends to one stream in a batch must follow each other"
            meta = canonical(req.metadata)
            for event in req.events:
                version += 1
                data = to_data(event)
                body_bytes = canonical_bytes(data)
                body = body_bytes.decode()
                prev = chain_hash(prev, req.stream_id, version, event.type, event.version, body_bytes)
                stream_ids.append(req.stream_id)
                versions.append(version)
                types.append(event.type)
                schema_versions.append(event.version)
                bodies.append(body)
                metadatas.append(meta)
                occurred.append(event.occurred_at)
                hashes.append(prev)
                req.hashes.append(prev)
                req.data.append(data)
            last_hash[req.stream_id] = (version, prev)
        assert len(stream_ids) <= APPEND_EVENTS_MAX, "batches are bounded by their callers"

        async with self.pool.acquire() as conn, conn.transaction():
            if stream_ids:
                # Why lock: positions come from an identity column when each row is
                # inserted, but transactions commit in their own order, so without this a
                # reader polling `position > last_seen` could pass over a position whose
                # transaction commits late, and never see it. EXCLUSIVE mode lets readers
                # through and makes writers take turns between this point and commit, so
                # positions commit in the order they are handed out. It is taken as late as
                # possible, and the batch path amortises it over hundreds of events.
                await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                try:
                    rows = await conn.fetch(
                        "INSERT INTO events (stream_id, stream_version, type, schema_version, data, metadata,"
                        " occurred_at, hash)"
                        " SELECT s, v, t, sv, d::jsonb, m::jsonb, o, h FROM unnest($1::text[], $2::int[], $3::text[],"
                        " $4::smallint[], $5::text[], $6::text[], $7::timestamptz[], $8::bytea[])"
                        " WITH ORDINALITY AS x(s, v, t, sv, d, m, o, h, n) ORDER BY n"
                        " RETURNING position, stream_id, stream_version",
                        stream_ids, versions, types, schema_versions, bodies, metadatas, occurred, hashes,
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise ConcurrencyConflict(
                        "The member's account changed while this request was processed; please retry."
                    ) from exc
                by_key = {(r["stream_id"], r["stream_version"]): r["position"] for r in rows}
                for req in requests:
                    first = req.expected_version + 1
                    req.positions = [by_key[(req.stream_id, v)] for v in range(first, first + len(req.events))]
            for req in requests:
                req.result = results(req)
            keyed = [req for req in requests if req.idempotency_key is not None]
            if keyed:
                inserted = await conn.fetch(
                    "INSERT INTO commands (idempotency_key, request_hash, stream_id, result)"
                    " SELECT k, h, s, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(k, h, s, r)"
                    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
                    [r.idempotency_key for r in keyed],
                    [r.request_hash for r in keyed],
                    [r.stream_id for r in keyed],
                    [orjson.dumps(r.record).decode() for r in keyed],
                )
                if len(inserted) != len(keyed):
                    raise IdempotencyRace("A request with the same idempotency key was recorded concurrently.")
            if before_commit is not None:
                await before_commit(conn)
