"""What goes into the ledger (a command request) and what comes out (a typed outcome).

An outcome is one of three small frozen values, built once by the ledger: `Applied`
(with its events, the position of its last one and the summary the API answers),
`Duplicate` (a command applied before: the original `Applied`, rebuilt from its
idempotency record) and `Rejected` (the domain's refusal). Routes, the Kafka consumer
and the tools read them; none derives meaning from event type strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, overload

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


@fast_init  # one per command: see domain/_frozen.py
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


class BatchOutcomes(Sequence[Outcome]):
    """The outcomes of a batch, in the order of its requests. Those known before the
    commit (refusals, duplicates of earlier commands, commands with nothing to do) are
    given; the others (`None` in `given`: an `Applied`, or the `Duplicate` of a key
    repeated within the batch) are built by `build(self, i)` when first read, and kept, so
    each is still built once. The Kafka consumer reads only `counts()`, which builds
    none: building every outcome of its batches cost about 2 µs of its 40 per message."""

    __slots__ = ("_outcomes", "_build", "_counts")

    def __init__(self, given: list[Outcome | None], build: Callable[[BatchOutcomes, int], Outcome],
                 applied: int) -> None:
        """`applied`: how many of the `None` entries of `given` are `Applied` (the
        others are `Duplicate`)."""
        self._outcomes = given
        self._build = build
        unbuilt = given.count(None)
        counts = Counter(o.status for o in given if o is not None)
        counts["applied"] += applied
        counts["duplicate"] += unbuilt - applied
        self._counts = counts

    def __len__(self) -> int:
        return len(self._outcomes)

    @overload
    def __getitem__(self, i: int) -> Outcome: ...

    @overload
    def __getitem__(self, i: slice) -> list[Outcome]: ...

    def __getitem__(self, i: int | slice) -> Outcome | list[Outcome]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self._outcomes))[i]]
        outcome = self._outcomes[i]
        if outcome is None:
            i = range(len(self._outcomes))[i]  # an index from the end, as a list takes it
            outcome = self._outcomes[i] = self._build(self, i)
        return outcome

    def counts(self) -> Counter[str]:
        """How many outcomes of each status (`applied`, `duplicate`, `rejected`)."""
        return self._counts.copy()


def summary_of(available_after: int, pending_after: int, events: tuple[AppendedEvent, ...]) -> Summary:
    return Summary(available_after, pending_after, net_earned(e.event for e in events))


def refusal_reason(error: LedgerError) -> str:
    """A refusal as the rejected-messages table keeps it."""
    text = f"{error.title}: {error.message}"
    return text if len(text) <= REASON_CHARS_MAX else text[: REASON_CHARS_MAX - 1] + "…"
