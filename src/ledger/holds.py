"""The hold-expiry scheduler: finds members with open holds past their `expires_at` in
the `holds` read model and hands ExpireHolds commands to the ledger, which releases
them as expired (their points go back to their lots).

Idempotent by construction: the decider releases only holds still open, so a second
run over the same holds (or a run before the projection caught up) appends nothing.
A hold past its time is over for the domain already (a capture of it is refused); the
scheduler only brings its points back, at most an interval late.

Bounded at any scale, as the expiry scheduler is: a pass walks the members with holds
due in pages, and each member's due holds in commands of at most `holds_max`, packed
into appends of at most `batch_events_max` events (one `HoldReleased` per hold, and a
`RewardStockReturned` more for a hold of a catalogue reward: at most twice the bound,
which `HOLDS_BATCH_EVENTS_MAX` leaves room for).

A hold of a catalogue reward gives its unit of stock back, so its release reads the
reward's stream too: each page loads its members' states and names, in each member's
command, the streams of its due catalogue holds (`catalogue_streams_due`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain import ExpireHolds, reward_stream_id
from ledger.expiry import pass_over_due, run_passes
from ledger.handlers import Ledger
from ledger.store.events import APPEND_EVENTS_MAX

EXPIRE_HOLDS_MAX = 1_000  # holds one ExpireHolds command releases at most
HOLDS_BATCH_EVENTS_MAX = APPEND_EVENTS_MAX // 2  # as the expiry's: a short transaction, well inside the bound
HOLDS_PAGES_MAX = 100_000  # pages of members one pass walks at most


async def due_hold_counts(pool: asyncpg.Pool, now: datetime, after: str, limit: int) -> list[tuple[str, int]]:
    """(member, open holds due) of the first `limit` members after `after` with open holds
    whose time is up at `now`, by member id: one page of a pass."""
    rows = await pool.fetch(
        "SELECT member_id, count(*) FROM holds WHERE status = 'open' AND expires_at <= $1 AND member_id > $2"
        " GROUP BY member_id ORDER BY member_id LIMIT $3",
        now, after, limit,
    )
    return [(r[0], r[1]) for r in rows]


async def catalogue_streams_due(ledger: Ledger, member_ids: list[str], now: datetime) -> dict[str, tuple[str, ...]]:
    """The reward streams of each member's catalogue holds due at `now` (members with none left out)."""
    streams: dict[str, tuple[str, ...]] = {}
    for member_id, (state, _) in (await ledger.load(member_ids)).items():
        due = {reward_stream_id(reward_id) for (movement, hold_id), reward_id in state.catalogue.items()
               if movement == "hold" and (hold := state.holds.get(hold_id)) is not None and hold.expires_at <= now}
        if due:
            streams[member_id] = tuple(sorted(due))
    return streams


async def expire_holds_due(
    ledger: Ledger, pool: asyncpg.Pool, now: datetime, members_max: int = 500, *,
    holds_max: int = EXPIRE_HOLDS_MAX, batch_events_max: int = HOLDS_BATCH_EVENTS_MAX,
    pages_max: int = HOLDS_PAGES_MAX,
) -> int:
    """One pass over every member with open holds due at `now` in the `holds` read model,
    `members_max` members a page; returns how many events it appended (a hold released,
    and a unit of stock returned for a catalogue reward's). Holds the read
    model did not show yet (the projection behind) are left for the next pass."""
    assert 1 <= holds_max <= batch_events_max <= APPEND_EVENTS_MAX
    streams: dict[str, tuple[str, ...]] = {}  # of the page being passed over

    async def page(after: str) -> list[tuple[str, int]]:
        due = await due_hold_counts(pool, now, after, members_max)
        streams.clear()
        streams.update(await catalogue_streams_due(ledger, [member_id for member_id, _ in due], now) if due else {})
        return due

    return await pass_over_due(
        ledger, page, lambda member_id, take: ExpireHolds(member_id, now, take, streams.get(member_id, ())),
        "hold-scheduler",
        items_max=holds_max, events_of=lambda take: take, batch_events_max=batch_events_max, pages_max=pages_max,
    )


async def run_hold_scheduler(
    ledger: Ledger,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    interval_s: float,
    members_max: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """A pass every `interval_s` until `stop` (see `run_passes`)."""
    await run_passes("released holds", lambda now: expire_holds_due(ledger, pool, now, members_max), stop,
                     interval_s, clock)
