"""Expiry schedule: what is left of each lot, and when it expires.

`remaining` follows the fold's lot (`Lot.remaining`): points a hold sets aside leave it
until they return (a release before the lot's date) or are spent (a capture); points a
hold or a reversal returns to a lot past its date, or to a booking taken back, do not
come back to it. `points` is what the lot was credited, moved by amendments of its
booking. `status` is pending, active, reversed, or expired once the expiry job reached
the lot (a lot given points again afterwards is active again, so the job finds them).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger.domain.events import ActivityPointsEarned, AnniversaryBonusGranted
from ledger.domain import (
    BookingAmended,
    DebtSettled,
    EarnReversed,
    HoldReleased,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsHeld,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
    MemberMergedAway,
    MemberMergedIn,
)
from ledger.domain.decider import booking_lot_id
from ledger.store import StoredEvent

_KEEP = ""  # status placeholder: leave the stored status as it is
# Status placeholder for a lot given points again: active if the stored status is expired,
# else as it is. A page knows the status of the lots whose status it set; this one stands
# for the others until the write, and never reaches the table.
_REOPEN = "~active"
COLUMNS = ("member_id", "lot_id", "status", "points", "remaining", "expires_at")

Takes = tuple[tuple[str, int], ...]


class ExpirySchedule:
    def __init__(self, table: str = "expiry_lots") -> None:
        self.table = table
        # (member, lot) -> [status, points, remaining delta, expires_at]
        self.rows: dict[tuple[str, str], list] = {}
        # The lots an earn of this page made: not stored yet (a booking earns once).
        self.made: set[tuple[str, str]] = set()

    def status(self, member: str, lot_id: str) -> str | None:
        """The lot's status as this page's events left it; None if they did not set it."""
        row = self.rows.get((member, lot_id))
        return None if row is None or row[0] in (_KEEP, _REOPEN) else row[0]

    def _row(self, member: str, lot: str) -> list:
        row = self.rows.get((member, lot))
        if row is None:
            row = self.rows[(member, lot)] = [_KEEP, 0, 0, None]
        return row

    def _new(self, member: str, lot_id: str, points: int, expires_at: object) -> None:
        row = self._row(member, lot_id)
        row[0], row[1], row[3] = "active", points, expires_at
        row[2] += points

    def _take(self, member: str, lots: Takes) -> None:
        for lot_id, amount in lots:
            self._row(member, lot_id)[2] -= amount

    def _give(self, member: str, lots: Takes) -> None:
        """Points back on lots: an expired lot is active again with them."""
        for lot_id, amount in lots:
            row = self._row(member, lot_id)
            row[2] += amount
            if row[0] == "expired":
                row[0] = "active"
            elif row[0] == _KEEP:
                row[0] = _REOPEN

    def apply(self, stored: StoredEvent) -> None:
        e, m = stored.event, stored.stream_id
        match e:
            case PointsEarned():
                if (m, e.lot_id) not in self.rows:
                    self.made.add((m, e.lot_id))
                row = self._row(m, e.lot_id)
                row[0], row[1], row[3] = e.status, e.points, e.expires_at
                row[2] += e.points
            case PendingPointsActivated():
                row = self._row(m, e.lot_id)
                row[0], row[3] = "active", e.expires_at
            case PointsRedeemed() | PointsRedeemedForHousehold() | PointsHeld() | PointsTransferredOut():
                self._take(m, e.lots)
            case PointsExpired() | DebtSettled():  # its date came: what was left paid a debt or expired
                row = self._row(m, e.lot_id)
                row[0] = "expired"
                row[2] -= e.points
            case PointsAdjusted() if e.points > 0:
                self._new(m, e.lot_id, e.points, e.expires_at)  # type: ignore[arg-type]
            case PointsAdjusted():
                self._take(m, e.lots)
            case EarnReversed():
                self._take(m, e.lots)
                self._row(m, booking_lot_id(e.booking_id))[0] = "reversed"
            case BookingAmended():
                lot_id = booking_lot_id(e.booking_id)
                if e.points > 0:
                    self._give(m, ((lot_id, e.points),))
                else:
                    self._take(m, e.lots)
                self._row(m, lot_id)[1] += e.points
            case HoldReleased():
                # Expired or forfeited points stay off the lot (the fold counts them so).
                self._give(m, e.lots)
            case RedemptionReversed():
                self._give(m, e.lots)
                if e.grace_lot_id is not None:
                    self._new(m, e.grace_lot_id, sum(p for _, p in e.regranted), e.expires_at)
            case PointsTransferredIn():
                self._new(m, e.lot_id, e.points, e.expires_at)
            # Members (M2): the duplicate's lots leave it (`merged`, nothing left on them)
            # and arrive on the survivor as they stood.
            case MemberMergedAway():
                self._take(m, e.lots)
                for lot_id, _ in e.lots:
                    self._row(m, lot_id)[0] = "merged"
            case MemberMergedIn():
                for r in e.moved_lots:
                    lot_id, points, remaining, status, expires_at, expired = r[0], r[2], r[3], r[4], r[5], r[8]
                    row = self._row(m, lot_id)
                    row[0] = "expired" if status == "active" and not remaining and expired else status
                    row[1], row[3] = points, None if expires_at is None else datetime.fromisoformat(expires_at)
                    row[2] += remaining
            case ActivityPointsEarned() | AnniversaryBonusGranted() if e.lot_id is not None:  # P3
                self._new(m, e.lot_id, e.points, e.expires_at)  # type: ignore[arg-type]

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The lots of the members whose every event has been applied, in `COLUMNS` order:
        all but those of `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for key, row in self.rows.items():
            if key[0] == keep:
                kept[key] = row
            else:
                assert row[0] not in (_KEEP, _REOPEN), "a replay sets the status of every lot when it is made"
                out.append((key[0], key[1], row[0], row[1], row[2], row[3]))
        self.rows = kept
        self.made = {key for key in self.made if key[0] == keep}
        return out

    async def write(self, conn: asyncpg.Connection, insert_new: bool = False) -> None:
        """Upsert the page's rows; with `insert_new`, the lots its earns made are plain
        inserts (see `KnownRows.insert_new`)."""
        if not self.rows:
            return
        rows = self.rows
        if insert_new and self.made:
            made = [(*key, *row) for key, row in rows.items()
                    if key in self.made and row[0] not in (_KEEP, _REOPEN)]
            if made:
                await conn.copy_records_to_table(self.table, records=made, columns=COLUMNS)
                rows = {key: row for key, row in rows.items() if key not in self.made or row[0] in (_KEEP, _REOPEN)}
        self.made = set()
        if not rows:
            self.rows.clear()
            return
        members, lots = zip(*rows.keys(), strict=True)
        status, points, remaining, expires = zip(*rows.values(), strict=True)
        await conn.execute(
            f"INSERT INTO {self.table} AS l (member_id, lot_id, status, points, remaining, expires_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[])"
            " ON CONFLICT (member_id, lot_id) DO UPDATE SET"
            f" status = CASE EXCLUDED.status WHEN '' THEN l.status"
            f" WHEN '{_REOPEN}' THEN CASE WHEN l.status = 'expired' THEN 'active' ELSE l.status END"
            " ELSE EXCLUDED.status END,"
            " points = l.points + EXCLUDED.points, remaining = l.remaining + EXCLUDED.remaining,"
            " expires_at = coalesce(EXCLUDED.expires_at, l.expires_at)",
            members, lots, status, points, remaining, expires,
        )
        self.rows.clear()
