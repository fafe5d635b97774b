"""Tier-qualifying points: a row per booking that counts towards a tier (its points and
when they started to count), from which the balance route works out the member's points
tier as of the request (the tier route reads the member's state instead, with its tier
policy). A booking pending until the trip has no row until its points activate; a
cancelled or refunded one has none any more.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger.domain import (
    BookingAmended,
    EarnReversed,
    MemberMergedAway,
    MemberMergedIn,
    PendingPointsActivated,
    PointsEarned,
)
from ledger.domain.decider import booking_lot_id
from ledger.store import StoredEvent

from .balances import LotStatus

QUALIFYING_COLUMNS = ("member_id", "booking_id", "earned_at", "points")


class TierQualifying:
    """The qualifying rows a page changes. An amendment moves its booking's row by its
    delta, if the booking qualifies (is active): a row this page set, or one stored
    before it, which `resolve` reads before the page is written; a pending booking has
    no row, and its activation counts the amended points (`lot_status` says which,
    when this page's events set the lot's status: always, in a rebuild's replay)."""

    def __init__(self, table: str = "tier_qualifying", *, lot_status: LotStatus | None = None) -> None:
        self.table = table
        self.lot_status = lot_status
        # (member, booking) -> (earned_at, points), or None to delete
        self.rows: dict[tuple[str, str], tuple[datetime, int] | None] = {}
        # (member, booking) -> points of amendments to a row stored before this page
        self.deltas: dict[tuple[str, str], int] = {}
        # The rows an active earn of this page made: not stored yet (a booking earns once).
        self.made: set[tuple[str, str]] = set()

    def apply(self, stored: StoredEvent) -> None:
        e, m = stored.event, stored.stream_id
        match e:
            case PointsEarned(status="active") | PendingPointsActivated():
                if type(e) is PointsEarned and (m, e.booking_id) not in self.rows:
                    self.made.add((m, e.booking_id))
                self.rows[(m, e.booking_id)] = (e.occurred_at, e.qualifying_points)
                self.deltas.pop((m, e.booking_id), None)
            case EarnReversed() if e.qualifying_points:
                self.rows[(m, e.booking_id)] = None
                self.deltas.pop((m, e.booking_id), None)
            case BookingAmended() if e.qualifying_points:
                self._amended(m, e.booking_id, e.qualifying_points)
            # Members (M2): a merge moves the duplicate's tier-qualifying entries.
            case MemberMergedAway():
                for booking in e.qualifying:
                    self.rows[(m, booking)] = None
                    self.deltas.pop((m, booking), None)
            case MemberMergedIn():
                for r in e.moved_lots:
                    booking, qualifying, qualified_at = r[1], r[6], r[9]
                    if qualified_at is not None and booking is not None:
                        self.rows[(m, booking)] = (datetime.fromisoformat(qualified_at), qualifying)

    def _amended(self, member: str, booking: str, points: int) -> None:
        """A row this page knows moves now; one stored before it waits for `resolve`."""
        key = (member, booking)
        row = self.rows.get(key)
        if row is not None:
            self.rows[key] = (row[0], row[1] + points)
            return
        status = self.lot_status(member, booking_lot_id(booking)) if self.lot_status is not None else None
        if status != "pending":  # pending: no row until it activates
            self.deltas[key] = self.deltas.get(key, 0) + points

    async def resolve(self, conn: asyncpg.Connection) -> None:
        """The amendments to rows stored before this page, applied to them as stored."""
        if not self.deltas:
            return
        members, bookings = zip(*self.deltas, strict=True)
        for m, booking, earned_at, points in await conn.fetch(
                f"SELECT t.member_id, t.booking_id, t.earned_at, t.points FROM {self.table} t"
                " JOIN unnest($1::text[], $2::text[]) AS k(m, b) ON t.member_id = k.m AND t.booking_id = k.b",
                members, bookings):
            self.rows[(m, booking)] = (earned_at, points + self.deltas[(m, booking)])
        self.deltas.clear()  # those not found were of bookings still pending: no row

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows (in `QUALIFYING_COLUMNS` order) of the members whose every event has
        been applied: all but `keep` (see `Balances.completed`)."""
        assert all(m == keep for m, _ in self.deltas), "a replay knows every row it amends"
        rows: list[tuple] = []
        kept: dict[tuple[str, str], tuple[datetime, int] | None] = {}
        for key, value in self.rows.items():
            if key[0] == keep:
                kept[key] = value
            elif value is not None:
                rows.append((key[0], key[1], value[0], value[1]))
        self.rows = kept
        self.made = {key for key in self.made if key[0] == keep}
        return rows

    async def write(self, conn: asyncpg.Connection, insert_new: bool = False) -> None:
        """Write the page's rows; with `insert_new`, those its earns made are plain
        inserts (see `KnownRows.insert_new`)."""
        gone = [key for key, value in self.rows.items() if value is None]
        made = self.made
        self.made = set()
        if insert_new and made:
            new = [(m, b, *v) for (m, b), v in self.rows.items() if v is not None and (m, b) in made]
            if new:
                await conn.copy_records_to_table(self.table, records=new, columns=QUALIFYING_COLUMNS)
            kept = [(m, b, *v) for (m, b), v in self.rows.items() if v is not None and (m, b) not in made]
        else:
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
