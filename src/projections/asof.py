"""Reads of a member as of an instant, a statement, and a check of a member's hash chain,
answered from the member's events in the store, since the read models hold the present
only (a read as of the present may take them, see `read_member_as_of`). The rule of which events count as of an instant is the domain's
(`ledger.domain.asof`); the SQL that picks them is here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ledger.domain import BookingAmended, MemberState, fold
from ledger.domain.asof import Statement, statement
from ledger.store import StoredEvent
from ledger.store.events import LEAN_COLUMNS, EventStore, lean_row_to_event, verify_chain

from .balances import COUNTERS, Balances
from .queries import EXPIRY_PAGE_LOTS_MAX, ExpiryPage

AS_OF_PAGE_EVENTS = 10_000  # events read per query: a member's history is read in pages of this many
_VERSION_MAX = 2**31 - 1

# The beginning of the member's stream whose events all occurred at or before $2: up to
# (not including) the first event dated after it. The same rule as `as_of_prefix`, in SQL,
# so that only the events an answer needs leave the server.
_PREFIX_END = ("coalesce((SELECT min(stream_version) FROM events WHERE stream_id = $1 AND occurred_at > $2),"
               f" {_VERSION_MAX})")
_PREFIX_PAGE = (f"SELECT {LEAN_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $3"
                f" AND stream_version < {_PREFIX_END} ORDER BY stream_version LIMIT $4")


async def events_as_of(pool: asyncpg.Pool, member_id: str, at: datetime) -> list[StoredEvent]:
    """The member's events as of `at`, in stream order (without metadata or hashes)."""
    events: list[StoredEvent] = []
    after = 0
    while True:
        rows = await pool.fetch(_PREFIX_PAGE, member_id, at, after, AS_OF_PAGE_EVENTS)
        events.extend(lean_row_to_event(r) for r in rows)
        if len(rows) < AS_OF_PAGE_EVENTS:
            return events
        after = events[-1].stream_version


@dataclass(frozen=True, slots=True)
class MemberAsOf:
    state: MemberState
    totals: dict[str, int]  # the balances read model's counters (lifetime totals), as of the instant
    last_activity: datetime
    position: int  # of the last event the answer includes


def member_as_of(member_id: str, events: list[StoredEvent]) -> MemberAsOf | None:
    """The member's state and the balances read model's row, as the given events leave
    them: the row by the very code that keeps the live one (`Balances`), so that a
    lifetime total as of now is the one the live balance route answers."""
    if not events:
        return None
    state = MemberState(member_id)

    def lot_status(_: str, lot_id: str) -> str | None:
        # What an amendment raises goes to pending or to available by the lot's status
        # when it was made: the state before the event, which the loop below holds.
        return state.lot(lot_id).status

    totals = Balances(lot_status=lot_status)
    # Folded in one draft between the events that ask for a lot's status (a third of
    # the cost of `evolve` event by event, at 1,000 events).
    folded = 0
    for i, stored in enumerate(events):
        if type(stored.event) is BookingAmended and i > folded:
            state = fold(member_id, [e.event for e in events[folded:i]], state)
            folded = i
        totals.apply(stored)
    state = fold(member_id, [e.event for e in events[folded:]], state)
    row = totals.rows[member_id]
    return MemberAsOf(state, dict(zip(COUNTERS, row, strict=False)), row[-2], row[-1])


LoadState = Callable[[str], Awaitable[MemberState]]

# As of an instant no event of the member is dated after, the answer is the member as it
# is: its last event, and the balances row if the read models have applied that event
# (the row's `position` is that of the last event applied to it), in one snapshot.
_PRESENT_SQL = f"""
SELECT e.stream_version, e.position, b.position AS projected, b.last_activity, {', '.join(f'b.{c}' for c in COUNTERS)}
FROM (SELECT stream_version, position FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1) e
LEFT JOIN balances b ON b.member_id = $1
WHERE NOT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND occurred_at > $2)
"""


async def read_member_as_of(pool: asyncpg.Pool, member_id: str, at: datetime,
                            current: LoadState | None = None) -> MemberAsOf | None:
    """The member as of `at`; None for a member with no event counting by then.

    `current` (the ledger's `member_state`: its cached fold, topped up from the store)
    answers a read as of an instant after the member's last event without folding its
    history again: the state is the member's own, and the lifetime totals the balances
    row, when both are at the member's last event (else the history is folded).
    tests/integration/test_as_of.py holds the two ways to one answer."""
    if current is not None:
        present = await _present(pool, member_id, at, current)
        if present is not None:
            return present
    return member_as_of(member_id, await events_as_of(pool, member_id, at))


async def _present(pool: asyncpg.Pool, member_id: str, at: datetime, current: LoadState) -> MemberAsOf | None:
    row = await pool.fetchrow(_PRESENT_SQL, member_id, at)
    if row is None or row["projected"] != row["position"]:
        return None  # an event dated after `at`, no event at all, or the read models behind
    state = await current(member_id)
    if state.version != row["stream_version"]:
        return None  # appended to since
    return MemberAsOf(state, {c: row[c] for c in COUNTERS}, row["last_activity"], row["position"])


def expiry_page_as_of(state: MemberState, at: datetime, horizon: datetime, after: tuple[datetime, str] | None,
                      limit: int) -> ExpiryPage:
    """`queries.expiry_page` of a state as of `at`: the lots with points left and a date
    after `at`, soonest first (then by lot id), a page after `after`, and the points
    expiring by `horizon` over all of them."""
    assert 1 <= limit <= EXPIRY_PAGE_LOTS_MAX
    page: list[tuple[str, int, datetime]] = []
    expiring = 0
    more = False
    for expires_at, lot_id in state.expiry:  # sorted by (expires_at, lot id): the schedule's order
        if expires_at <= at:
            continue
        remaining = state.lots[lot_id].remaining
        if expires_at <= horizon:
            expiring += remaining
        if after is not None and (expires_at, lot_id) <= after:
            continue
        if len(page) < limit:
            page.append((lot_id, remaining, expires_at))
        else:
            more = True
            if expires_at > horizon:
                break
    return ExpiryPage(page, expiring, (page[-1][2], page[-1][0]) if more else None)


async def read_statement(pool: asyncpg.Pool, member_id: str, start: datetime, end: datetime) -> Statement | None:
    """The member's statement from `start` to `end`; None for a member with no event
    counting by `end`."""
    events = await events_as_of(pool, member_id, end)
    if not events:
        return None
    return statement(member_id, [e.event for e in events], start, end)


_HISTORY_SQL = (
    "SELECT position, stream_version, type, data, metadata, occurred_at, recorded_at FROM events"
    f" WHERE stream_id = $1 AND stream_version < least($3::int, {_PREFIX_END}) ORDER BY stream_version DESC LIMIT $4"
)


async def history_as_of(pool: asyncpg.Pool, member_id: str, at: datetime, before: int,
                        limit: int) -> list[asyncpg.Record]:
    """Up to `limit` of the member's events as of `at` with a stream version below
    `before`, newest first."""
    return await pool.fetch(_HISTORY_SQL, member_id, at, before, limit)


@dataclass(frozen=True, slots=True)
class Verification:
    member_id: str
    events: int
    broken_at_version: int | None  # the first event whose stored hash does not verify
    head_hash: bytes  # as stored on the stream's last event

    @property
    def ok(self) -> bool:
        return self.broken_at_version is None


async def verify_member(store: EventStore, member_id: str) -> Verification | None:
    """Recompute the member's hash chain from its events as stored; None for a stream
    with no events."""
    events: list[StoredEvent] = []
    while True:
        page = await store.read_stream(member_id, events[-1].stream_version if events else 0, AS_OF_PAGE_EVENTS)
        events.extend(page)
        if len(page) < AS_OF_PAGE_EVENTS:
            break
    if not events:
        return None
    return Verification(member_id, len(events), verify_chain(events), events[-1].hash)
