"""Anchors of the hash chains, signed outside the database.

Each stream's events are hash-chained (`ledger.store.events.chain_hash`), which shows
any change a writer could make through the application. A database superuser, though,
can disable the events trigger, change an event and re-hash the rest of its stream:
every chain still verifies. An anchor is the answer to that: every stream's head
(stream id, version, hash) and the global position at one moment, signed with an
Ed25519 key the database never sees, and kept elsewhere (a file shipped off the host, a
Kafka topic). A later `verify_all` checks the signature, then every stream's chain, and
then that each anchored stream still has, at the anchored version, the anchored hash:
a rewrite of anything before the anchor changes that hash (the chain carries every
earlier event into it), so it is caught, whatever was re-hashed after.

An anchor is two files: `NAME` (JSON, small, signed: the position, the number of
streams, the SHA-256 of the heads, when, the public key, the signature) and
`NAME.heads.gz` (one JSON line `[stream_id, version, hash_hex]` per stream, in stream
id order), so that a verification can say which stream was rewritten. Both are written
and read a page at a time: memory does not grow with the number of streams.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.domain import from_data, to_data
from ledger.store.events import GENESIS_HASH, canonical_bytes, chain_hash

FORMAT = "ledger-anchor/1"
HEADS_SUFFIX = ".heads.gz"
HEADS_PAGE = 5_000  # streams per page read from the database, and checked per query
EVENTS_PAGE = 5_000  # events per page of the chains' check
BREAKS_MAX = 10_000  # breaks a verification collects at most (it says when there were more)


class AnchorError(Exception):
    """An anchor, key or heads file that cannot be used; the message says why, in one line."""


# --- keys -------------------------------------------------------------------------------


def create_key(path: Path) -> str:
    """A new Ed25519 private key in `path` (PEM, mode 0600; never over an existing file);
    returns its public key's PEM."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AnchorError(f"{path} exists; a key is never overwritten (an anchor signed by it could not be checked"
                          " against it any more)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_pem(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The key in `path`, refused if others than its owner may read it (as ssh does)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"cannot read the anchor key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(f"the anchor key {path} is open to others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AnchorError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise AnchorError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError("not an Ed25519 public key")
    return key


# --- writing an anchor --------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    position: int
    streams: int
    heads_sha256: str
    signed_at: datetime
    public_key: str  # PEM
    signature: str  # base64 of the Ed25519 signature over `payload`

    def payload(self) -> bytes:
        """What the signature covers: every field but the signature, as canonical JSON."""
        return canonical_bytes({"format": FORMAT, "position": self.position, "streams": self.streams,
                                "heads_sha256": self.heads_sha256, "signed_at": self.signed_at.isoformat(),
                                "public_key": self.public_key})

    def to_json(self) -> bytes:
        return orjson.dumps({**orjson.loads(self.payload()), "signature": self.signature},
                            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Anchor:
        try:
            raw = orjson.loads(data)
            if raw.get("format") != FORMAT:
                raise AnchorError(f"not an anchor of format {FORMAT}")
            return cls(int(raw["position"]), int(raw["streams"]), str(raw["heads_sha256"]),
                       datetime.fromisoformat(raw["signed_at"]), str(raw["public_key"]), str(raw["signature"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AnchorError(f"not a readable anchor: {type(exc).__name__}: {exc}") from None


def heads_path(anchor_path: Path) -> Path:
    return anchor_path.with_name(anchor_path.name + HEADS_SUFFIX)


async def _heads(conn: asyncpg.Connection, position: int) -> AsyncIterator[list[tuple[str, int, bytes]]]:
    """Every stream's head among the events up to `position`, a page of streams at a time,
    by stream id: keyset pagination on the (stream_id, stream_version) index."""
    after = ""
    while True:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (stream_id) stream_id, stream_version, hash FROM events"
            " WHERE stream_id > $1 AND stream_id IN (SELECT DISTINCT stream_id FROM events WHERE stream_id > $1"
            "  ORDER BY stream_id LIMIT $3) AND position <= $2"
            " ORDER BY stream_id, stream_version DESC",
            after, position, HEADS_PAGE,
        )
        if not rows:
            return
        yield [(r[0], r[1], bytes(r[2])) for r in rows]
        after = rows[-1][0]


async def write_anchor(pool: asyncpg.Pool, key: Ed25519PrivateKey, out: Path,
                       now: datetime | None = None) -> Anchor:
    """Anchor every stream's head as of one snapshot into `out` and its heads file.

    One REPEATABLE READ transaction: the heads and the position are of one moment
    (appends commit in position order, so the snapshot holds every event up to the
    position it sees and none after). Both files are written under temporary names and
    renamed into place, so a reader never finds half an anchor."""
    heads_out = heads_path(out)
    tmp_heads, tmp_out = heads_out.with_name(heads_out.name + ".tmp"), out.with_name(out.name + ".tmp")
    digest, streams = hashlib.sha256(), 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        with gzip.open(tmp_heads, "wb", compresslevel=6) as f:
            async for page in _heads(conn, position):
                lines = b"".join(orjson.dumps([s, v, h.hex()]) + b"\n" for s, v, h in page)
                digest.update(lines)
                f.write(lines)
                streams += len(page)
    unsigned = Anchor(position, streams, digest.hexdigest(), now or datetime.now(UTC), public_pem(key.public_key()),
                      "")
    anchor = Anchor(**{**unsigned.__dict__, "signature": base64.b64encode(key.sign(unsigned.payload())).decode()})
    tmp_out.write_bytes(anchor.to_json())
    os.replace(tmp_heads, heads_out)
    os.replace(tmp_out, out)
    return anchor


# --- verifying ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    stream_id: str
    version: int | None
    reason: str


@dataclass
class Verification:
    anchor: Anchor | None
    streams: int = 0  # streams whose chain was checked
    events: int = 0
    anchored_streams: int = 0  # anchored heads checked
    breaks: list[Break] | None = None
    more_breaks: int = 0  # beyond BREAKS_MAX

    def add(self, broken: Break) -> None:
        assert self.breaks is not None
        if len(self.breaks) < BREAKS_MAX:
            self.breaks.append(broken)
        else:
            self.more_breaks += 1


def read_anchor(path: Path, public_key_path: Path | None) -> Anchor:
    """The anchor in `path`, its signature checked against the key in `public_key_path`
    (the key the auditor holds) or, without one, the key the anchor names."""
    try:
        anchor = Anchor.from_json(path.read_bytes())
    except OSError as exc:
        raise AnchorError(f"cannot read the anchor {path}: {exc.strerror}") from None
    if public_key_path is not None:
        try:
            trusted = load_public_key(public_key_path.read_bytes())
        except OSError as exc:
            raise AnchorError(f"cannot read the public key {public_key_path}: {exc.strerror}") from None
        if public_pem(trusted) != anchor.public_key:
            raise AnchorError(f"the anchor {path} was not signed by the key in {public_key_path}")
    key = load_public_key(anchor.public_key.encode())
    try:
        key.verify(base64.b64decode(anchor.signature, validate=True), anchor.payload())
    except (InvalidSignature, ValueError):
        raise AnchorError(f"the anchor {path} has a signature that does not verify: it was altered") from None
    return anchor


def _anchored_heads(path: Path, anchor: Anchor) -> Iterator[list[tuple[str, int, bytes]]]:
    """The heads file's lines, a page at a time; raises AnchorError at the end if they
    are not the ones the (signed) anchor's digest covers."""
    digest, count, page = hashlib.sha256(), 0, []
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                digest.update(line)
                stream_id, version, hash_hex = orjson.loads(line)
                page.append((str(stream_id), int(version), bytes.fromhex(hash_hex)))
                count += 1
                if len(page) == HEADS_PAGE:
                    yield page
                    page = []
    except (OSError, EOFError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise AnchorError(f"cannot read the heads {path}: {type(exc).__name__}: {exc}") from None
    if digest.hexdigest() != anchor.heads_sha256 or count != anchor.streams:
        raise AnchorError(f"the heads {path} are not the ones the anchor signed: they were altered")
    if page:
        yield page


async def check_chains(pool: asyncpg.Pool, result: Verification) -> None:
    """Every stream's hash chain, in stream order, a page of events at a time."""
    after: tuple[str, int] = ("", 0)
    stream, prev, broken = None, GENESIS_HASH, False
    async with pool.acquire() as conn:
        while True:
            rows = await conn.fetch(
                "SELECT stream_id, stream_version, type, schema_version, data, hash FROM events"
                " WHERE (stream_id, stream_version) > ($1, $2) ORDER BY stream_id, stream_version LIMIT $3",
                after[0], after[1], EVENTS_PAGE,
            )
            for stream_id, version, type_name, schema_version, data, stored_hash in rows:
                if stream_id != stream:
                    stream, prev, broken = stream_id, GENESIS_HASH, False
                    result.streams += 1
                result.events += 1
                if broken:
                    continue  # one break per stream: every hash after the first is off too
                body = canonical_bytes(to_data(from_data(type_name, schema_version, orjson.loads(data))))
                if chain_hash(prev, stream_id, version, type_name, schema_version, body) != bytes(stored_hash):
                    result.add(Break(stream_id, version, "hash chain broken"))
                    broken = True
                prev = bytes(stored_hash)
            if len(rows) < EVENTS_PAGE:
                return
            after = (rows[-1][0], rows[-1][1])


async def check_anchor(pool: asyncpg.Pool, anchor: Anchor, heads: Path, result: Verification) -> None:
    """Each anchored stream has, at its anchored version, the anchored hash, and no event
    up to the anchor's position beyond it; and no stream has events up to that position
    that the anchor does not know."""
    for page in _anchored_heads(heads, anchor):
        rows = await pool.fetch(
            "SELECT a.sid, a.v, a.h, e.hash, e.position,"
            " EXISTS (SELECT 1 FROM events x WHERE x.stream_id = a.sid AND x.stream_version > a.v"
            "         AND x.position <= $4) AS grown"
            " FROM unnest($1::text[], $2::int[], $3::bytea[]) AS a(sid, v, h)"
            " LEFT JOIN events e ON e.stream_id = a.sid AND e.stream_version = a.v",
            [s for s, _, _ in page], [v for _, v, _ in page], [h for _, _, h in page], anchor.position,
        )
        for stream_id, version, anchored, stored, position, grown in rows:
            result.anchored_streams += 1
            if stored is None:
                result.add(Break(stream_id, version, "the anchored event is gone"))
            elif bytes(stored) != bytes(anchored):
                result.add(Break(stream_id, version, "not the anchored hash: the stream was rewritten"))
            elif position > anchor.position or grown:
                result.add(Break(stream_id, version, "events were inserted before the anchor's position"))
    streams = int(await pool.fetchval("SELECT count(DISTINCT stream_id) FROM events WHERE position <= $1",
                                      anchor.position))
    if streams != anchor.streams:
        result.add(Break("*", None, f"{streams} streams have events up to position {anchor.position}, the anchor"
                                    f" knows {anchor.streams}"))


async def verify_all(pool: asyncpg.Pool, anchor_path: Path | None, public_key_path: Path | None) -> Verification:
    """Check the anchor's signature (AnchorError if it fails), every stream's chain, and
    the anchored heads; the breaks found are in the result."""
    anchor = read_anchor(anchor_path, public_key_path) if anchor_path is not None else None
    result = Verification(anchor, breaks=[])
    await check_chains(pool, result)
    if anchor is not None and anchor_path is not None:
        await check_anchor(pool, anchor, heads_path(anchor_path), result)
    return result


# --- publishing and the schedule ----------------------------------------------------------


async def publish(bootstrap_servers: str, topic: str, anchor: Anchor, request_timeout_ms: int) -> None:
    """Send the signed anchor (not its heads, which its digest stands for) to a Kafka
    topic, acknowledged by every in-sync replica."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, client_id="ledger-anchor", acks="all",
                                enable_idempotence=True, request_timeout_ms=request_timeout_ms)
    await producer.start()
    try:
        await producer.send_and_wait(topic, anchor.to_json(), key=b"anchor")
    finally:
        await producer.stop()


ANCHOR_GLOB = "anchor-*.json"


def anchor_file_name(anchor_dir: Path, now: datetime) -> Path:
    return anchor_dir / f"anchor-{now.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}.json"


def prune(anchor_dir: Path, keep: int) -> int:
    """Remove all but the `keep` newest anchors (and their heads) the schedule wrote;
    returns how many went. Their names sort by time."""
    anchors = sorted(anchor_dir.glob(ANCHOR_GLOB))
    gone = anchors[:max(len(anchors) - keep, 0)]
    for path in gone:
        heads_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return len(gone)


async def run_anchor_scheduler(pool: asyncpg.Pool, settings: Any, stop: Any, clock: Any,
                               status: dict[str, Any]) -> None:
    """Anchor every `settings.anchor_interval_s` while the ledger grows, until `stop`:
    a file in `settings.anchor_dir` (the newest `anchor_files_max` kept) and, when
    `anchor_kafka_topic` is set, a message on it. `status` gets the last anchor's
    position and time (for /metrics). An error (an unreadable key, a full disk, Kafka
    away) raises to the supervisor, which logs it, shows it in /readyz and retries."""
    from ledger.supervisor import sleep_or_stop

    key = load_private_key(settings.anchor_key_file)
    anchor_dir: Path = settings.anchor_dir or settings.data_dir / "anchors"
    anchor_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    while not stop.is_set():
        head = int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        if head != status.get("position"):
            now = clock()
            anchor = await write_anchor(pool, key, anchor_file_name(anchor_dir, now), now)
            if settings.anchor_kafka_topic:
                await publish(settings.kafka_bootstrap_servers, settings.anchor_kafka_topic, anchor,
                              settings.kafka_request_timeout_ms)
            prune(anchor_dir, settings.anchor_files_max)
            status.update(position=anchor.position, signed_at=anchor.signed_at)
        await sleep_or_stop(stop, settings.anchor_interval_s)
