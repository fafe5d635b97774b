"""Holds: one row per hold, with how it stands (open, captured, released, expired), for
the hold-expiry scheduler (`ledger.holds`), which walks the open ones past their time."""

from __future__ import annotations

import asyncpg

from ledger.domain import HoldCaptured, HoldReleased, PointsHeld
from ledger.store import StoredEvent

COLUMNS = ("member_id", "hold_id", "points", "expires_at", "status")
OPEN = "open"
_HOLD_EVENTS = frozenset((PointsHeld, HoldCaptured, HoldReleased))


class HoldBook:
    def __init__(self, table: str = "holds") -> None:
        self.table = table
        # (member, hold) -> [points, expires_at, status]; points None: a hold placed before
        # this page, of which only the status changes.
        self.rows: dict[tuple[str, str], list] = {}

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        if type(e) not in _HOLD_EVENTS:  # most events: one set lookup rather than three class matches
            return
        m = stored.stream_id
        match e:
            case PointsHeld():
                self.rows[(m, e.hold_id)] = [e.points, e.expires_at, OPEN]
            case HoldCaptured():
                self._ended(m, e.hold_id, "captured")
            case HoldReleased() if e.reason != "captured":  # else what a capture left: captured already
                self._ended(m, e.hold_id, e.reason)

    def _ended(self, member: str, hold_id: str, status: str) -> None:
        row = self.rows.get((member, hold_id))
        if row is None:
            self.rows[(member, hold_id)] = [None, None, status]
        else:
            row[2] = status

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The holds of the members whose every event has been applied, in `COLUMNS` order:
        all but those of `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for key, row in self.rows.items():
            if key[0] == keep:
                kept[key] = row
            else:
                assert row[0] is not None, "a replay sees every hold placed"
                out.append((key[0], key[1], row[0], row[1], row[2]))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        placed = [(m, h, *row) for (m, h), row in self.rows.items() if row[0] is not None]
        ended = [(m, h, row[2]) for (m, h), row in self.rows.items() if row[0] is None]
        if placed:
            await conn.execute(
                f"INSERT INTO {self.table} (member_id, hold_id, points, expires_at, status)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[])"
                " ON CONFLICT (member_id, hold_id) DO UPDATE SET status = EXCLUDED.status",
                *zip(*placed, strict=True),
            )
        if ended:
            await conn.execute(
                f"UPDATE {self.table} h SET status = u.status"
                " FROM unnest($1::text[], $2::text[], $3::text[]) AS u(member_id, hold_id, status)"
                " WHERE h.member_id = u.member_id AND h.hold_id = u.hold_id",
                *zip(*ended, strict=True),
            )
        self.rows.clear()

