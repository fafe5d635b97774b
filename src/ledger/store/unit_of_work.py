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


@dataclass(slots=True)
class StreamAppend:
    """Events to append to one stream after `expected_version`, whose last event's hash
    is `prev_hash`. `positions` and `hashes` are filled in by the store.

    A keyed command's first append carries its `idempotency_key` and `record`, which go
    on its first event (the key under a unique index, the record in its metadata under
    `command`): `{"request_hash", "events", **summary}`, the format every stored record
    has. `events` counts the command's events over all its streams: they were appended
    next to each other, so their positions are consecutive from the keyed event's (see
    `EventStore.find_commands`), and the summary is what the caller was answered
    (`available_after`, `pending_after`). A plain dict, not a class: one is built per
    keyed command on the hot path."""

    stream_id: str
    expected_version: int
    prev_hash: bytes
    events: list[Event]
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    record: dict[str, Any] | None = None
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
    # Members (M2): (duplicate, survivor, merged at) of the merges the appends hold, for
    # `member_redirects`: written with the merge's events, never apart from them.
    redirects: list[tuple[str, str, Any]] = field(default_factory=list)

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
