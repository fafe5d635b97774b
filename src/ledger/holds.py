"""The hold-expiry scheduler: finds members with open holds past their `expires_at` in
the `holds` read model and hands ExpireHolds commands to the ledger, which releases
them as expired (their points go back to their lots).

Idempotent by construction: the decider releases only holds still open, so a second
run over the same holds (or a run before the projection caught up) appends nothing.
A hold past its time is over for the domain already (a capture of it is refused); the
scheduler only brings its points back, at most an interval late.

Bounded at any scale, as the expiry scheduler is: a pass walks the members with holds
due in pages, and each member's due holds in commands of at most `holds_max`, packed
into appends of at most `batch_events_max` events (one `HoldReleased` per hold).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain import ExpireHolds
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


async def expire_holds_due(
    ledger: Ledger, pool: asyncpg.Pool, now: datetime, members_max: int = 500, *,
    holds_max: int = EXPIRE_HOLDS_MAX, batch_events_max: int = HOLDS_BATCH_EVENTS_MAX,
    pages_max: int = HOLDS_PAGES_MAX,
) -> int:
    """One pass over every member with open holds due at `now` in the `holds` read model,
    `members_max` members a page; returns how many holds it released. Holds the read
    model did not show yet (the projection behind) are left for the next pass."""
    assert 1 <= holds_max <= batch_events_max <= APPEND_EVENTS_MAX
    return await pass_over_due(
        ledger, lambda after: due_hold_counts(pool, now, after, members_max),
        lambda member_id, take: ExpireHolds(member_id, now, take), "hold-scheduler",
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
