"""One transaction's worth of writes, as data: what `EventStore.commit` writes whole.

The ledger builds a `UnitOfWork` after deciding a batch of commands and hands it to the
store in one piece: the events of one or more streams with the version each expects,
the idempotency record of each keyed command, the Kafka consumer's offset fence, the
rows of the messages it rejected, and the rejected messages a retry applied. Nothing of
it is a callback: a reader sees everything a transaction holds in one place, and the
store alone decides how it is written.

`commit` answers with `None` (all written) or one of the typed failures below; each
means nothing at all was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.domain import Event


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the first event of a keyed command keeps, to answer a duplicate: the request's
    fingerprint, how many events the command appended (over all its streams: their
    positions are consecutive, from this event's) and the summary the caller was given.
    Stored as `{"request_hash", "events", **summary}` in the event's metadata under
    `command`, the format every stored record has."""

    key: str
    request_hash: str
    events: int
    summary: dict[str, Any]

    def stored(self) -> dict[str, Any]:
        return {"request_hash": self.request_hash, "events": self.events, **self.summary}


@dataclass(slots=True)
class StreamAppend:
    """Events to append to one stream after `expected_version`, whose last event's hash
    is `prev_hash`. `record` goes on the first of them. `positions` and `hashes` are
    filled in by the store."""

    stream_id: str
    expected_version: int
    prev_hash: bytes
    events: list[Event]
    metadata: dict[str, Any] = field(default_factory=dict)
    record: IdempotencyRecord | None = None
    positions: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OffsetFence:
    """The consumer's offsets of one topic, moved in the same transaction as the events.
    Each partition is (partition, the offset this consumer saw stored or None when it saw
    none, the new offset): a partition moves only from the value seen, or the whole unit
    of work is refused (another group member owns it now)."""

    group: str
    topic: str
    partitions: tuple[tuple[int, int | None, int], ...]


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A row of `rejected_messages`: a message that could not be parsed, or whose command
    the ledger refused, with why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    source: str = "kafka"


@dataclass(slots=True)
class UnitOfWork:
    appends: list[StreamAppend] = field(default_factory=list)
    offset_fence: OffsetFence | None = None
    rejections: list[RejectedMessage] = field(default_factory=list)
    retried_rejections: list[int] = field(default_factory=list)  # ids of rejected messages now applied

    def __bool__(self) -> bool:
        return bool(self.appends or self.offset_fence or self.rejections or self.retried_rejections)


# Typed failures of `commit`: nothing was written.


@dataclass(frozen=True, slots=True)
class StreamConflict:
    """A stream moved past the version an append expected: decide again on fresh state."""

    message: str


@dataclass(frozen=True, slots=True)
class IdempotencyRace:
    """Another transaction recorded one of the idempotency keys first: decide again, and
    the lookup finds its record."""

    message: str


@dataclass(frozen=True, slots=True)
class OffsetsFenced:
    """A partition's stored offset was not where the fence expected it."""

    message: str


CommitFailure = StreamConflict | IdempotencyRace | OffsetsFenced


class Fenced(Exception):
    """A partition's stored offset is not where this consumer left it: another member
    of the group has taken the partition over. The batch was rolled back."""
