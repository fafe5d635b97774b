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


HOUSEHOLD_MEMBERS_READ_MAX = 1_000  # far above any programme's household_members_max: a bound, not a rule


@dataclass(frozen=True, slots=True)
class HouseholdMemberBalance:
    member_id: str
    role: str  # head | member
    available: int  # as the member's own balance answers it (negative while a debt is owed)
    pending: int
    held: int


@dataclass(frozen=True, slots=True)
class HouseholdBalance:
    members: list[HouseholdMemberBalance]  # the head first, then in the order they joined
    available: int  # what a household redemption can take now: each member's available, from zero up
    pending: int
    held: int  # on the members' open holds
    position: int  # the read models include every event up to here


# Each member's available as `GET /v1/members/{id}/balance` answers it (lots past their date
# that the expiry job has not reached yet come off, beyond what they owe the debt), in
# the one statement that reads the roster, so both come from one snapshot.
_HOUSEHOLD_BALANCE_SQL = """
SELECT h.member_id, h.role,
       coalesce(b.available, 0) - greatest(
           (SELECT coalesce(sum(l.remaining), 0) FROM expiry_lots l
             WHERE l.member_id = h.member_id AND l.status = 'active' AND l.remaining > 0 AND l.expires_at <= $2)
           - coalesce(b.debt, 0), 0) AS available,
       coalesce(b.pending, 0) AS pending, coalesce(b.held, 0) AS held,
       (SELECT position FROM projection_checkpoints WHERE name = 'read_models') AS checkpoint
FROM household_members h LEFT JOIN balances b ON b.member_id = h.member_id
WHERE h.household_id = $1
ORDER BY h.role <> 'head', h.joined_at, h.member_id
LIMIT $3
"""


async def household_balance(pool: asyncpg.Pool, household_id: str, now: datetime) -> HouseholdBalance | None:
    """The household's members with their balances, and the household's totals; None for
    a household the read models do not know."""
    rows = await pool.fetch(_HOUSEHOLD_BALANCE_SQL, household_id, now, HOUSEHOLD_MEMBERS_READ_MAX)
    if not rows:
        return None
    members = [HouseholdMemberBalance(r["member_id"], r["role"], int(r["available"]), int(r["pending"]), int(r["held"]))
               for r in rows]
    return HouseholdBalance(members, sum(max(m.available, 0) for m in members), sum(m.pending for m in members),
                            sum(m.held for m in members), int(rows[0]["checkpoint"]))
