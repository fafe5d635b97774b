"""Expiry schedule: what is left of each lot, and when it expires."""

from __future__ import annotations

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
from ledger.domain.decider import booking_lot_id
from ledger.store import StoredEvent

_KEEP = ""  # status placeholder: leave the stored status as it is
COLUMNS = ("member_id", "lot_id", "status", "points", "remaining", "expires_at")


class ExpirySchedule:
    def __init__(self, table: str = "expiry_lots") -> None:
        self.table = table
        # (member, lot) -> [status, points, remaining delta, expires_at]
        self.rows: dict[tuple[str, str], list] = {}

    def _row(self, member: str, lot: str) -> list:
        row = self.rows.get((member, lot))
        if row is None:
            row = self.rows[(member, lot)] = [_KEEP, 0, 0, None]
        return row

    def _take(self, member: str, lots: tuple[tuple[str, int], ...]) -> None:
        for lot_id, amount in lots:
            self._row(member, lot_id)[2] -= amount

    def apply(self, stored: StoredEvent) -> None:
        e, m = stored.event, stored.stream_id
        match e:
            case PointsEarned():
                row = self._row(m, e.lot_id)
                row[0], row[1], row[3] = e.status, e.points, e.expires_at
                row[2] += e.points
            case PendingPointsActivated():
                row = self._row(m, e.lot_id)
                row[0], row[3] = "active", e.expires_at
            case PointsRedeemed() | PointsRedeemedForHousehold():
                self._take(m, e.lots)
            case PointsExpired() | DebtSettled():  # its date came: what was left paid a debt or expired
                row = self._row(m, e.lot_id)
                row[0] = "expired"
                row[2] -= e.points
            case PointsAdjusted() if e.points > 0:
                row = self._row(m, e.lot_id)  # type: ignore[arg-type]
                row[0], row[1], row[3] = "active", e.points, e.expires_at
                row[2] += e.points
            case PointsAdjusted():
                self._take(m, e.lots)
            case EarnReversed():
                self._take(m, e.lots)
                self._row(m, booking_lot_id(e.booking_id))[0] = "reversed"

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The lots of the members whose every event has been applied, in `COLUMNS` order:
        all but those of `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for key, row in self.rows.items():
            if key[0] == keep:
                kept[key] = row
            else:
                out.append((key[0], key[1], row[0], row[1], row[2], row[3]))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        if not self.rows:
            return
        members, lots = zip(*self.rows.keys(), strict=True)
        status, points, remaining, expires = zip(*self.rows.values(), strict=True)
        await conn.execute(
            f"INSERT INTO {self.table} AS l (member_id, lot_id, status, points, remaining, expires_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[])"
            " ON CONFLICT (member_id, lot_id) DO UPDATE SET"
            " status = CASE WHEN EXCLUDED.status = '' THEN l.status ELSE EXCLUDED.status END,"
            " points = l.points + EXCLUDED.points, remaining = l.remaining + EXCLUDED.remaining,"
            " expires_at = coalesce(EXCLUDED.expires_at, l.expires_at)",
            members, lots, status, points, remaining, expires,
        )
        self.rows.clear()
