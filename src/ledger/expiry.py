"""The expiry scheduler: finds members with lots past their date in the expiry
schedule and hands ExpirePoints commands to the ledger.

Idempotent by construction: the decider expires only what is left of a lot, so a
second run over the same lots (or a run before the projection caught up) appends
nothing.

Bounded at any scale: a pass walks the due members in pages, and each member's due lots
in commands of at most `lots_max` lots, packed into appends of at most
`batch_events_max` events, well inside the store's bound (a backfill or an outage can
leave any number of lots due, and one member with more of them than one append takes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain import Command, ExpirePoints
from ledger.domain.commands import EXPIRE_LOTS_MAX
from ledger.handlers import BATCH_COMMANDS_MAX, CommandRequest, Ledger, Rejected
from ledger.store.database import DATABASE_ERRORS
from ledger.store.events import APPEND_EVENTS_MAX

# Events one append of the expiry holds at most: half the store's bound, so that an append
# stays a short transaction and never meets the bound (25,300 lots, 25,000 of them one
# member's, expired in three appends and 0.8 s here).
EXPIRY_BATCH_EVENTS_MAX = APPEND_EVENTS_MAX // 2
EXPIRY_PAGES_MAX = 100_000  # pages of due members one pass walks at most

log = logging.getLogger(__name__)


async def due_members(pool: asyncpg.Pool, now: datetime, limit: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT member_id FROM expiry_lots"
        " WHERE status = 'active' AND remaining > 0 AND expires_at <= $1 ORDER BY member_id LIMIT $2",
        now, limit,
    )
    return [r["member_id"] for r in rows]


async def due_lot_counts(pool: asyncpg.Pool, now: datetime, after: str, limit: int) -> list[tuple[str, int]]:
    """(member, lots due) of the first `limit` members after `after` with lots due at `now`,
    by member id: one page of a pass."""
    rows = await pool.fetch(
        "SELECT member_id, count(*) FROM expiry_lots"
        " WHERE status = 'active' AND remaining > 0 AND expires_at <= $1 AND member_id > $2"
        " GROUP BY member_id ORDER BY member_id LIMIT $3",
        now, after, limit,
    )
    return [(r[0], r[1]) for r in rows]


async def expire_due(
    ledger: Ledger, pool: asyncpg.Pool, now: datetime, members_max: int = 500, *,
    lots_max: int = EXPIRE_LOTS_MAX, batch_events_max: int = EXPIRY_BATCH_EVENTS_MAX,
    pages_max: int = EXPIRY_PAGES_MAX,
) -> int:
    """One pass over every member with lots due at `now` in the expiry schedule, `members_max`
    members a page; returns how many events it appended (a lot's `PointsExpired`, and its
    `DebtSettled` where it paid a debt off). Lots the schedule did not show yet (the
    projection behind) are left for the next pass."""
    assert 1 <= lots_max and lots_max + 1 <= batch_events_max <= APPEND_EVENTS_MAX
    return await pass_over_due(
        ledger, lambda after: due_lot_counts(pool, now, after, members_max),
        lambda member_id, take: ExpirePoints(member_id, now, take), "expiry-scheduler",
        # A command appends at most one event per lot, and one more for a lot split between
        # the debt it paid and what expired.
        items_max=lots_max, events_of=lambda take: take + 1, batch_events_max=batch_events_max, pages_max=pages_max,
    )


async def pass_over_due(
    ledger: Ledger, page: Callable[[str], Awaitable[list[tuple[str, int]]]], command: Callable[[str, int], Command],
    source: str, *, items_max: int, events_of: Callable[[int], int], batch_events_max: int, pages_max: int,
) -> int:
    """One bounded pass of a scheduler: `page(after)` gives (member, items due) of the next
    members after `after`, by member id; each member's items go into commands of at most
    `items_max` (`command(member, how many)`, each going on where the one before stopped),
    packed into appends of at most `batch_events_max` events (`events_of(items)` bounds a
    command's). Returns how many events the pass appended."""
    appended = 0
    after = ""
    for _ in range(pages_max):
        due = await page(after)
        if not due:
            break
        after = due[-1][0]
        batch: list[CommandRequest] = []
        batch_events = 0
        for member_id, items in due:
            while items > 0:
                take = min(items, items_max)
                if batch and (batch_events + events_of(take) > batch_events_max or len(batch) == BATCH_COMMANDS_MAX):
                    appended += await _append(ledger, batch)
                    batch, batch_events = [], 0
                batch.append(CommandRequest(command(member_id, take), metadata={"source": source}))
                batch_events += events_of(take)
                items -= take
        if batch:
            appended += await _append(ledger, batch)
    else:
        log.warning("%s pass stopped after %d pages of due members; the next pass goes on", source, pages_max)
    return appended


async def _append(ledger: Ledger, batch: list[CommandRequest]) -> int:
    """One append of a pass's commands; returns how many events it appended."""
    outcomes = await ledger.handle_batch(batch)
    return sum(len(o.applied.events) for o in outcomes if not isinstance(o, Rejected))


async def run_passes(what: str, one_pass: Callable[[datetime], Awaitable[int]], stop: asyncio.Event,
                     interval_s: float, clock: Callable[[], datetime]) -> None:
    """`one_pass(now)` every `interval_s` until `stop`, at once again after a pass that did
    something (more may be due): the loop of the expiry and hold-expiry schedulers. A
    database away is waited out here; anything else is the supervisor's to log and
    restart."""
    while not stop.is_set():
        try:
            done = await one_pass(clock())
            if done:
                log.info("%s: %d", what, done)
                continue
        except DATABASE_ERRORS as exc:
            log.warning("%s scheduler: %s: %s", what, type(exc).__name__, exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass


async def run_expiry_scheduler(
    ledger: Ledger,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    interval_s: float,
    members_max: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    await run_passes("expired lots", lambda now: expire_due(ledger, pool, now, members_max), stop, interval_s, clock)
