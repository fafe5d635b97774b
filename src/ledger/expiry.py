"""The expiry scheduler: finds members with lots past their date in the expiry
schedule and hands ExpirePoints commands to the ledger.

Idempotent by construction: the decider expires only what is left of a lot, so a
second run over the same lots (or a run before the projection caught up) appends
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain import ExpirePoints
from ledger.handlers import CommandRequest, Ledger
from ledger.store.database import DATABASE_ERRORS

log = logging.getLogger(__name__)


async def due_members(pool: asyncpg.Pool, now: datetime, limit: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT member_id FROM expiry_lots"
        " WHERE status = 'active' AND remaining > 0 AND expires_at <= $1 ORDER BY member_id LIMIT $2",
        now, limit,
    )
    return [r["member_id"] for r in rows]


async def expire_due(ledger: Ledger, pool: asyncpg.Pool, now: datetime, members_max: int = 500) -> int:
    """One pass; returns how many PointsExpired events it appended."""
    members = await due_members(pool, now, members_max)
    if not members:
        return 0
    results = await ledger.handle_batch(
        [CommandRequest(ExpirePoints(m, now), metadata={"source": "expiry-scheduler"}) for m in members]
    )
    return sum(len(r.result["events"]) for r in results if r.result)


async def run_expiry_scheduler(
    ledger: Ledger,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    interval_s: float,
    members_max: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    while not stop.is_set():
        try:
            expired = await expire_due(ledger, pool, clock(), members_max)
            if expired:
                log.info("expired %d lots", expired)
                continue  # more may be due: go again without waiting
        except DATABASE_ERRORS as exc:  # anything else is the supervisor's to log and restart
            log.warning("expiry scheduler: %s: %s", type(exc).__name__, exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
