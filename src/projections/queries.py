"""Reads of the read models that the API answers from: one function per question, the SQL
here rather than in the routes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

EXPIRY_PAGE_LOTS_MAX = 1_000

# Lots with points left and a date still ahead: what a member can spend, soonest first.
_LIVE_LOTS = "member_id = $1 AND status = 'active' AND remaining > 0 AND expires_at > $2"


@dataclass(frozen=True, slots=True)
class ExpiryPage:
    lots: list[tuple[str, int, datetime]]  # (lot id, points left, expires at), soonest first
    expiring_points: int  # left on every lot expiring by the horizon, not only this page's
    next_after: tuple[datetime, str] | None  # the last lot's (expires at, lot id), when more follow


async def expiry_page(
    pool: asyncpg.Pool, member_id: str, now: datetime, horizon: datetime, after: tuple[datetime, str] | None,
    limit: int,
) -> ExpiryPage | None:
    """A page of the member's lots after `after` (by date, then lot id), and the points
    expiring by `horizon` summed over all of them; None for a member the read models do
    not know. One snapshot, so the total and the page agree."""
    assert 1 <= limit <= EXPIRY_PAGE_LOTS_MAX
    after_at, after_lot = after if after is not None else (None, "")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        expiring = await conn.fetchval(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM balances WHERE member_id = $1) THEN"
            f" (SELECT coalesce(sum(remaining), 0) FROM expiry_lots WHERE {_LIVE_LOTS} AND expires_at <= $3) END",
            member_id, now, horizon,
        )
        if expiring is None:
            return None
        rows = await conn.fetch(
            f"SELECT lot_id, remaining, expires_at FROM expiry_lots WHERE {_LIVE_LOTS}"
            " AND ($3::timestamptz IS NULL OR (expires_at, lot_id) > ($3, $4))"
            " ORDER BY expires_at, lot_id LIMIT $5",
            member_id, now, after_at, after_lot, limit + 1,
        )
    page = [(r[0], r[1], r[2]) for r in rows[:limit]]
    return ExpiryPage(page, int(expiring), (page[-1][2], page[-1][0]) if len(rows) > limit else None)
