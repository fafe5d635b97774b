"""Balances: available, pending and held points, debt and lifetime totals per member.

Every row keeps, for the member's events so far (tests/integration/test_projections.py
holds the live and the rebuilt tables to it):

    available + held
      = lifetime_earned + lifetime_adjusted + lifetime_transferred_in
        - lifetime_redeemed - lifetime_expired - lifetime_transferred_out
        - (lifetime_reversed - reversed while pending)
        - (debt + debt paid by lots at their date)
        + lifetime_merged_in - lifetime_merged_out

where "reversed while pending" is the `pending_points` of the reversals and partial
refunds (taken from `pending`, not from `available`), and "debt paid by lots at their
date" the points of the `DebtSettled` events. `available` is the ledger's balance (the
points on active lots, less the debt) whatever the lots' dates; the balance route
leaves out what is past its date.

What the totals count, as a finance user reads them:
- earned: active points earned, activated, or added to an active booking by an
  amendment (pending points count when they activate);
- redeemed: redemptions and captured holds, less what reversals of them returned;
- expired: lots at their date, and points a hold or a reversal returned to a lot past
  its date;
- reversed: what cancellations, refunds (whole or partial) and amendments took back
  from the booking's lot, and the points a booking taken back meanwhile forfeits when
  they return from a hold or a redemption (the debt they repay, if any, comes off
  `debt`, and `available` rises by as much);
- transferred in and out: transfers received and sent.
- merged in and out: the active points (net of debt: `available`) and the debt a merge
  moved from a duplicate to the survivor; its pending points move to `pending`.
A grace lot (points returned to a lot past its date, re-granted) is no new earning:
those points only come off `lifetime_redeemed`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from ledger.domain.events import ActivityPointsEarned, AnniversaryBonusGranted
from ledger.domain import (
    BookingAmended,
    DebtSettled,
    EarnReversed,
    HoldCaptured,
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

# Column order of the additive counters in a delta row.
COUNTERS = ("available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
            "lifetime_adjusted", "lifetime_reversed", "lifetime_transferred_in", "lifetime_transferred_out", "debt",
            "lifetime_merged_in", "lifetime_merged_out")
_A, _P, _H, _E, _R, _X, _ADJ, _REV, _TIN, _TOUT, _D, _MIN, _MOUT = range(len(COUNTERS))
COLUMNS = ("member_id", *COUNTERS, "last_activity", "position")

LotStatus = Callable[[str, str], str | None]  # (member, lot id) -> the lot's status, None if not known here


def _sum(takes: tuple[tuple[str, int], ...]) -> int:
    return sum(points for _, points in takes)


class Balances:
    """Deltas for one page of events, written as one upsert.

    An amendment that raises a booking's points adds them to `pending` or to `available`
    by the status of the booking's lot, which the event does not carry: `lot_status`
    gives it when this page's events set it (always, in a rebuild's replay, which has
    each member's events from the first); else it is read from `lots_table` (as it
    stood before the page) when the page is written."""

    def __init__(self, table: str = "balances", *, lots_table: str = "expiry_lots",
                 lot_status: LotStatus | None = None) -> None:
        self.table = table
        self.lots_table = lots_table
        self.lot_status = lot_status
        self.rows: dict[str, list] = {}
        self.raised: dict[tuple[str, str], int] = {}  # (member, lot) -> points of amendments, status not known

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
            case BookingAmended() if e.points > 0:
                self._raised(stored.stream_id, row, booking_lot_id(e.booking_id), e.points)
            case BookingAmended():
                taken = _sum(e.lots)
                row[_P] -= e.pending_points
                row[_A] -= taken - e.pending_points
                row[_REV] += taken
                if e.shortfall_debited:
                    row[_A] -= e.shortfall
                    row[_D] += e.shortfall
            case PointsHeld():
                row[_A] -= e.points
                row[_H] += e.points
            case HoldCaptured():
                row[_H] -= e.points
                row[_R] += e.points
            case HoldReleased():
                row[_H] -= e.points
                self._returned(row, e.lots, e.expired, e.forfeited, e.debt_repaid)
            case RedemptionReversed():
                row[_R] -= e.points
                self._returned(row, e.lots + e.regranted, e.expired, e.forfeited, e.debt_repaid)
            case PointsTransferredOut():
                row[_A] -= e.points
                row[_TOUT] += e.points
            case PointsTransferredIn():
                row[_A] += e.points
                row[_TIN] += e.points
            # Members (M2): a merge moves what the duplicate had to the survivor.
            case MemberMergedAway():
                active = _sum(e.lots) - e.pending
                row[_A] -= active - e.debt
                row[_P] -= e.pending
                row[_D] -= e.debt
                row[_MOUT] += active
            case MemberMergedIn():
                active, pending = merged_points(e)
                row[_A] += active - e.debt
                row[_P] += pending
                row[_D] += e.debt
                row[_MIN] += active
            case ActivityPointsEarned() | AnniversaryBonusGranted():  # P3: earned, active at once
                row[_A] += e.points
                row[_E] += e.points

    @staticmethod
    def _returned(row: list, spendable: tuple[tuple[str, int], ...], expired: tuple[tuple[str, int], ...],
                  forfeited: tuple[tuple[str, int], ...], debt_repaid: int) -> None:
        """Points back from a hold or a redemption: spendable again, expired, or forfeited
        (taken back with their booking), those paying off the debt first."""
        row[_A] += _sum(spendable) + debt_repaid
        row[_X] += _sum(expired)
        row[_REV] += _sum(forfeited)
        row[_D] -= debt_repaid

    def _raised(self, member: str, row: list, lot_id: str, points: int) -> None:
        status = self.lot_status(member, lot_id) if self.lot_status is not None else None
        if status is None:
            key = (member, lot_id)
            self.raised[key] = self.raised.get(key, 0) + points
        else:
            _add_raised(row, status, points)

    async def _resolve(self, conn: asyncpg.Connection) -> None:
        """The amendments whose lot's status this page did not know, by the status stored."""
        if not self.raised:
            return
        members, lots = zip(*self.raised, strict=True)
        statuses = {(m, lot): status for m, lot, status in await conn.fetch(
            f"SELECT l.member_id, l.lot_id, l.status FROM {self.lots_table} l"
            " JOIN unnest($1::text[], $2::text[]) AS k(m, lot) ON l.member_id = k.m AND l.lot_id = k.lot",
            members, lots,
        )}
        for key, points in self.raised.items():
            # Every amended booking has its lot in the schedule since it earned.
            _add_raised(self.rows[key[0]], statuses[key], points)
        self.raised.clear()

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows of the members whose every event has been applied, in `COLUMNS` order,
        for a replay in stream order: all but `keep`, the page's last member, whose
        events may go on in the next page and whose deltas stay here until then."""
        assert all(m == keep for m, _ in self.raised), "a replay knows the status of every lot it amends"
        kept = {keep: self.rows.pop(keep)} if keep is not None and keep in self.rows else {}
        out = [(m, *r) for m, r in self.rows.items()]
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        """Upsert the page's deltas. Runs before the page's lots are written (`_resolve`
        reads them as they were)."""
        if not self.rows:
            return
        await self._resolve(conn)
        columns = list(zip(*([m, *r] for m, r in self.rows.items()), strict=True))
        sets = ", ".join(f"{c} = b.{c} + EXCLUDED.{c}" for c in COUNTERS)
        await conn.execute(
            f"INSERT INTO {self.table} AS b (member_id, {', '.join(COUNTERS)}, last_activity, position)"
            f" SELECT * FROM unnest($1::text[], {', '.join(f'${i + 2}::bigint[]' for i in range(len(COUNTERS)))},"
            f" ${len(COUNTERS) + 2}::timestamptz[], ${len(COUNTERS) + 3}::bigint[])"
            f" ON CONFLICT (member_id) DO UPDATE SET {sets},"
            " last_activity = greatest(b.last_activity, EXCLUDED.last_activity), position = EXCLUDED.position",
            *columns,
        )
        self.rows.clear()


def merged_points(e: MemberMergedIn) -> tuple[int, int]:
    """(active, pending) points on the lots a merge moved in."""
    active = pending = 0
    for row in e.moved_lots:
        status, remaining = row[4], row[3]
        if status == "active":
            active += remaining
        elif status == "pending":
            pending += remaining
    return active, pending


def _add_raised(row: list, status: str, points: int) -> None:
    """An amendment's points on a lot of `status`: pending until the lot activates (its
    activation then counts them as earned), else earned and available now."""
    if status == "pending":
        row[_P] += points
    else:
        row[_A] += points
        row[_E] += points


def last_activity(rows: dict[str, list]) -> dict[str, datetime]:
    return {m: r[-2] for m, r in rows.items()}
