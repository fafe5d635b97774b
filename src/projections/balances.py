"""Balances: available, pending and lifetime totals per member."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger.domain import (
    DebtSettled,
    EarnReversed,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRedeemedForHousehold,
)
from ledger.store import StoredEvent

# Column order of the additive counters in a delta row.
COUNTERS = ("available", "pending", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
            "lifetime_adjusted", "lifetime_reversed", "debt")
_A, _P, _E, _R, _X, _ADJ, _REV, _D = range(len(COUNTERS))
COLUMNS = ("member_id", *COUNTERS, "last_activity", "position")


class Balances:
    """Deltas for one page of events, written as one upsert."""

    def __init__(self, table: str = "balances") -> None:
        self.table = table
        self.rows: dict[str, list] = {}

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        row = self.rows.get(stored.stream_id)
        if row is None:
            row = self.rows[stored.stream_id] = [0] * len(COUNTERS) + [e.occurred_at, stored.position]
        else:
            row[-2] = max(row[-2], e.occurred_at)
            row[-1] = stored.position
        match e:
            case PointsEarned(status="pending"):
                row[_P] += e.points
            case PointsEarned():
                row[_A] += e.points
                row[_E] += e.points
            case PendingPointsActivated():
                row[_P] -= e.points
                row[_A] += e.points
                row[_E] += e.points
            case PointsRedeemed() | PointsRedeemedForHousehold():
                row[_A] -= e.points
                row[_R] += e.points
            case PointsExpired():
                row[_A] -= e.points
                row[_X] += e.points
            case DebtSettled():
                # Points off a lot and off the debt: `available` (a balance net of debt) stays.
                row[_D] -= e.points
            case PointsAdjusted():
                row[_A] += e.points
                row[_ADJ] += e.points
            case EarnReversed():
                row[_P] -= e.pending_points
                row[_A] -= e.points - e.pending_points
                row[_REV] += e.points
                if e.shortfall_debited:
                    row[_A] -= e.shortfall
                    row[_D] += e.shortfall

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows of the members whose every event has been applied, in `COLUMNS` order,
        for a replay in stream order: all but `keep`, the page's last member, whose
        events may go on in the next page and whose deltas stay here until then."""
        kept = {keep: self.rows.pop(keep)} if keep is not None and keep in self.rows else {}
        out = [(m, *r) for m, r in self.rows.items()]
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> list[str]:
        """Upsert the page's deltas; returns the members that had no row before."""
        if not self.rows:
            return []
        columns = list(zip(*([m, *r] for m, r in self.rows.items()), strict=True))
        sets = ", ".join(f"{c} = b.{c} + EXCLUDED.{c}" for c in COUNTERS)
        # xmax is 0 on a row version this statement inserted, and set on one it updated.
        rows = await conn.fetch(
            f"WITH up AS (INSERT INTO {self.table} AS b (member_id, {', '.join(COUNTERS)}, last_activity, position)"
            f" SELECT * FROM unnest($1::text[], {', '.join(f'${i + 2}::bigint[]' for i in range(len(COUNTERS)))},"
            f" ${len(COUNTERS) + 2}::timestamptz[], ${len(COUNTERS) + 3}::bigint[])"
            f" ON CONFLICT (member_id) DO UPDATE SET {sets},"
            " last_activity = greatest(b.last_activity, EXCLUDED.last_activity), position = EXCLUDED.position"
            " RETURNING member_id, xmax = 0 AS inserted)"
            " SELECT member_id FROM up WHERE inserted",
            *columns,
        )
        self.rows.clear()
        return [r[0] for r in rows]


def last_activity(rows: dict[str, list]) -> dict[str, datetime]:
    return {m: r[-2] for m, r in rows.items()}
