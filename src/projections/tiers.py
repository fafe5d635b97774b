"""Tier status: tier-qualifying points per booking, and each member's tier computed
from them by the domain's own `tier_status`, as of the member's last activity."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from ledger.domain import EarnReversed, PendingPointsActivated, PointsEarned, ProgramRules, tier_status
from ledger.store import StoredEvent


class TierQualifying:
    def __init__(self, table: str = "tier_qualifying") -> None:
        self.table = table
        # (member, booking) -> (earned_at, points), or None to delete
        self.rows: dict[tuple[str, str], tuple[datetime, int] | None] = {}
        self.touched: set[str] = set()

    def apply(self, stored: StoredEvent) -> None:
        # Every event moves the member's last activity, the date the tier is shown as of.
        self.touched.add(stored.stream_id)
        e = stored.event
        match e:
            case PointsEarned(status="active") | PendingPointsActivated():
                self.rows[(stored.stream_id, e.booking_id)] = (e.occurred_at, e.qualifying_points)
            case EarnReversed() if e.qualifying_points:
                self.rows[(stored.stream_id, e.booking_id)] = None

    async def write(self, conn: asyncpg.Connection) -> None:
        gone = [key for key, value in self.rows.items() if value is None]
        kept = [(m, b, *v) for (m, b), v in self.rows.items() if v is not None]
        if gone:
            members, bookings = zip(*gone, strict=True)
            await conn.execute(
                f"DELETE FROM {self.table} t USING unnest($1::text[], $2::text[]) AS g(m, b)"
                " WHERE t.member_id = g.m AND t.booking_id = g.b",
                members, bookings,
            )
        if kept:
            await conn.execute(
                f"INSERT INTO {self.table} (member_id, booking_id, earned_at, points)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[])"
                " ON CONFLICT (member_id, booking_id) DO UPDATE SET earned_at = EXCLUDED.earned_at, points = EXCLUDED.points",
                *zip(*kept, strict=True),
            )
        self.rows.clear()


async def write_tier_status(
    conn: asyncpg.Connection,
    members: Iterable[str],
    rules: ProgramRules,
    *,
    qualifying_table: str = "tier_qualifying",
    balances_table: str = "balances",
    status_table: str = "tier_status",
) -> int:
    """Recompute the tier of `members` from their qualifying rows; returns how many."""
    members = list(members)
    if not members:
        return 0
    rows = await conn.fetch(
        f"SELECT b.member_id, b.last_activity, q.earned_at, q.points FROM {balances_table} b"
        f" LEFT JOIN {qualifying_table} q ON q.member_id = b.member_id WHERE b.member_id = ANY($1::text[])",
        members,
    )
    entries: dict[str, tuple[datetime, list[tuple[datetime, int]]]] = {}
    for r in rows:
        _, points = entries.setdefault(r["member_id"], (r["last_activity"], []))
        if r["earned_at"] is not None:
            points.append((r["earned_at"], r["points"]))
    out = []
    for member, (as_of, points) in entries.items():
        s = tier_status(points, as_of, rules)
        out.append((member, s.tier, s.qualifying_points, s.window_start, s.next_tier, s.points_to_next_tier,
                    s.reevaluation_date, as_of))
    await conn.execute(
        f"INSERT INTO {status_table} (member_id, tier, qualifying_points, window_start, next_tier,"
        " points_to_next_tier, reevaluation_date, as_of)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::bigint[],"
        " $7::timestamptz[], $8::timestamptz[])"
        " ON CONFLICT (member_id) DO UPDATE SET tier = EXCLUDED.tier, qualifying_points = EXCLUDED.qualifying_points,"
        " window_start = EXCLUDED.window_start, next_tier = EXCLUDED.next_tier,"
        " points_to_next_tier = EXCLUDED.points_to_next_tier, reevaluation_date = EXCLUDED.reevaluation_date,"
        " as_of = EXCLUDED.as_of",
        *zip(*out, strict=True),
    )
    return len(out)
