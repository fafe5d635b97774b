"""What goes into the ledger (a command request) and what comes out (a typed outcome).

An outcome is one of three small frozen values, built once by the ledger: `Applied`
(with its events, the position of its last one and the summary the API answers),
`Duplicate` (a command applied before: the original `Applied`, rebuilt from its
idempotency record) and `Rejected` (the domain's refusal). Routes, the Kafka consumer
and the tools read them; none derives meaning from event type strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ledger.domain import Command, Event, LedgerError, net_earned, to_data
from ledger.domain._frozen import fast_init

REASON_CHARS_MAX = 1_000


@fast_init  # one per command: see domain/_frozen.py
@dataclass(frozen=True, slots=True)
class KafkaSource:
    """Where a command came from when it came from a Kafka message: a refusal of it is
    recorded as a rejected message in the same transaction as the batch, and a command
    re-submitted from a rejected message (`rejection_id`) marks that row retried when it
    applies."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    rejection_id: int | None = None


@dataclass(frozen=True, slots=True)
class CommandRequest:
    command: Command
    idempotency_key: str | None = None
    request_hash: str = ""  # fingerprint of the source request: same key, other body is refused
    metadata: dict[str, Any] = field(default_factory=dict)
    source: KafkaSource | None = None


@fast_init  # built for every command: see domain/_frozen.py
@dataclass(frozen=True, slots=True)
class Summary:
    """What a command left, as the API answers it: the member's available and pending
    points after it, and the points its events earned or took back (`net_earned`)."""

    available_after: int
    pending_after: int
    earned: int  # not in the idempotency record: computed again from the events for a duplicate


class AppendedEvent(NamedTuple):
    position: int
    stream_id: str
    stream_version: int
    event: Event


@fast_init  # built for every command: see domain/_frozen.py
@dataclass(frozen=True, slots=True)
class Applied:
    member_id: str
    events: tuple[AppendedEvent, ...]
    position: int | None  # of the last event; None when there was nothing to do
    summary: Summary
    status: ClassVar[str] = "applied"

    @property
    def applied(self) -> Applied:
        return self

    def event_views(self) -> list[dict[str, Any]]:
        """The events as the API shows them."""
        return [{"position": e.position, "stream_version": e.stream_version, "type": e.event.type,
                 "data": to_data(e.event)} for e in self.events]


@fast_init  # built for every command: see domain/_frozen.py
@dataclass(frozen=True, slots=True)
class Duplicate:
    """The command was applied before (same idempotency key, same request): its result."""

    original: Applied
    status: ClassVar[str] = "duplicate"

    @property
    def applied(self) -> Applied:
        return self.original


@fast_init  # built for every command: see domain/_frozen.py
@dataclass(frozen=True, slots=True)
class Rejected:
    error: LedgerError
    status: ClassVar[str] = "rejected"


Outcome = Applied | Duplicate | Rejected


def summary_of(available_after: int, pending_after: int, events: tuple[AppendedEvent, ...]) -> Summary:
    return Summary(available_after, pending_after, net_earned(e.event for e in events))


def refusal_reason(error: LedgerError) -> str:
    """A refusal as the rejected-messages table keeps it."""
    text = f"{error.title}: {error.message}"
    return text if len(text) <= REASON_CHARS_MAX else text[: REASON_CHARS_MAX - 1] + "…"
