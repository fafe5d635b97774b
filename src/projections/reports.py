"""Read models of the programme reports: outstanding points (the liability) and the
points moved (the activity), as additive deltas.

- `liability_days` and `liability_moments`: how the outstanding points changed, by UTC
  day (or exact instant), status (pending, active), expiry month (`YYYY-MM` of the lot's
  date in UTC; empty while pending, as a pending lot's date runs from its activation)
  and tier. The liability as of an instant is the sum of the days before its day and of
  the moments of its day up to it: a few thousand day rows plus one day's moments, at
  any length of history. Outstanding points are what the member still has on its lots,
  spendable or set aside by an open hold (held points are the member's until captured):
  `remaining + held` of each pending or active lot of the fold. A debt (a shortfall
  debited as a negative balance) is no lot and is not in it.
- `activity_days`: points by UTC day, kind, product and source (see `KINDS`).
- `report_lots`: each lot's bucket (pending, expiry month), product and tier, which a
  later event taking points from the lot needs and does not carry. The reports are a
  projection group of their own (`projections.groups`), which may run behind the member
  read models, so it keeps what it needs of the lots itself rather than read the
  member group's `expiry_lots` as they stand further on.

A lot's tier is the tier its points were earned at: for an earn, the tier the decider
priced it at, which `PointsEarned` carries from its version 2. Lots not earned on a
booking at a known tier (support credits, transfers in, a redemption's points re-granted
on a grace lot, earns recorded before version 2, and a duplicate's lots as a merge moves
them to the survivor) count under the tier "" (no tier).
Every change to a lot counts in the lot's tier, so each tier's figure is what is left of
lots, never below zero (the tier at each change instead would put a spend under a tier
the points were not earned in). A replay takes it from the events alone, so a rebuild
and the live runner agree, and a past figure does not move when tiers change later.

Every delta is additive: the live runner upserts a page's by adding to the stored rows
(and drops rows that come to zero), except the moments', which it appends (see
`MOMENT_COLUMNS`); a rebuild copies each page's and sums them once at the end
(`compact`), leaving one row per key (one entry per moment) with a sum other than zero.
The sums by key are the same both ways.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from ledger.domain.events import ActivityPointsEarned, AnniversaryBonusGranted
from ledger.domain import (
    BookingAmended,
    DebtSettled,
    EarnReversed,
    Event,
    HoldCaptured,
    HoldReleased,
    MemberMergedAway,
    MemberMergedIn,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,

)
from ledger.domain.decider import booking_lot_id
from ledger.store import StoredEvent

LIABILITY_DAY_COLUMNS = ("day", "status", "expiry_month", "tier", "points")
ACTIVITY_COLUMNS = ("day", "kind", "product", "source", "points")
# The tables whose rows are sums by key (all columns but the last, `points`).
AGGREGATES = {
    "liability_days": LIABILITY_DAY_COLUMNS,
    "activity_days": ACTIVITY_COLUMNS,
}
# The moments are about one change an event (events seldom share an instant): a row each
# on a unique key cost an index lookup and update per event, for rows that almost never
# meet. A page appends instead one row per UTC day it touched, the day's moments in
# parallel arrays (`at` in microseconds since the epoch, UTC); a moment's figure is the
# sum of its entries, in any number of rows, which the liability's read sums anyway. A
# rebuild leaves one row per day, with one entry per moment (`compact`).
MOMENT_COLUMNS = ("day", "at", "status", "expiry_month", "tier", "points")
# A replay holds at most about this many moments (of several pages) before it gives them.
MOMENTS_HELD_MAX = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Each entry of the moments' rows as a row (day, at, status, expiry month, tier) and its
# points, summed: for `compact` and the tests.
MOMENT_ENTRIES = (
    "SELECT m.day, u.at, u.status, u.expiry_month, u.tier, sum(u.points) AS points FROM {table} m,"
    " unnest(m.at, m.status, m.expiry_month, m.tier, m.points) AS u(at, status, expiry_month, tier, points)"
)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, UTC: a moment's `at` in `liability_moments`."""
    return (moment - _EPOCH) // _MICROSECOND

# What the activity counts, with the source of each row:
KINDS = (
    "earned",  # on bookings, pending or active, and amendments raising them: source the earn rule
    "activated",  # pending points that became spendable: source "activation" (already counted as earned)
    "redeemed",  # redemptions ("redemption"), captured holds ("hold"), household shares ("household"),
    #              less what reversals returned ("reversal", negative): product the reward kind
    "expired",  # breakage: lots at their date ("expiry"), points back past their date ("hold_release",
    #             "redemption_reversal")
    "adjusted",  # by support, signed: source "adjustment"
    "clawed_back",  # cancellations and refunds ("cancelled", "refunded"), partial refunds and amendments
    #                 lowering a booking (source the earn rule)
    "transferred_in", "transferred_out",  # source "transfer"
    "debt_settled",  # a lot at its date paid off a debt instead of expiring: source "debt"
)
PENDING, ACTIVE = "pending", "active"
NO_PRODUCT = ""  # a row with no product: adjustments, transfers, redemption reversals
NO_TIER = ""  # a lot not earned at a known tier (see the module's docstring)
LOT_COLUMNS = ("member_id", "lot_id", "pending", "expiry_month", "product", "tier")

_REPORTED = frozenset((
    PointsEarned, PendingPointsActivated, PointsRedeemed, PointsRedeemedForHousehold, PointsExpired, DebtSettled,
    PointsAdjusted, EarnReversed, BookingAmended, HoldCaptured, HoldReleased, RedemptionReversed,
    PointsTransferredOut, PointsTransferredIn, MemberMergedAway, MemberMergedIn, ActivityPointsEarned,
    AnniversaryBonusGranted,
))

Takes = tuple[tuple[str, int], ...]


_MONTHS: dict[int, str] = {}  # year * 12 + month - 1 -> "YYYY-MM", made as asked


def _month(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1
    name = _MONTHS.get(index)
    if name is None:
        name = _MONTHS[index] = f"{moment.year:04d}-{moment.month:02d}"
    return name


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _product(breakdown: Any) -> str:
    """The product of a lot moved by a merge, from its base rule's label
    (`base:{product}:{currency}`), which the moved lot carries: "" for a lot not earned
    on a booking."""
    for rule, _ in breakdown:
        if rule.startswith("base:"):
            return str(rule.split(":")[1])
    return NO_PRODUCT


def lots_read(e: Event) -> tuple[str, ...]:
    """The lots made before an event that it takes from, gives to, or changes."""
    match e:
        case PointsRedeemed() | PointsRedeemedForHousehold() | HoldCaptured() | PointsTransferredOut():
            return tuple(lot for lot, _ in e.lots)
        case PointsAdjusted() if e.points <= 0:
            return tuple(lot for lot, _ in e.lots)
        case PointsExpired() | DebtSettled() | PendingPointsActivated():
            return (e.lot_id,)
        case EarnReversed() | BookingAmended():
            return (booking_lot_id(e.booking_id), *(lot for lot, _ in e.lots))
        case HoldReleased():
            return tuple(lot for lot, _ in e.expired + e.forfeited)
        case RedemptionReversed():
            return tuple(lot for lot, _ in e.lots + e.expired)
        case MemberMergedAway():
            return tuple(lot for lot, _ in e.lots)
    return ()


class ReportLedger:
    """The reports' deltas for one page (the live runner) or one replay span (a rebuild).

    `apply` only keeps the page's events: the live runner reads the lots the page's events
    take from (`report_lots`, this group's own: the member group's tables may be ahead of
    it) in `write`, then goes through the events. A replay in stream order has each
    member's history from its first event, and goes through them in `completed` with
    nothing to read."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.events: list[tuple[str, Event]] = []
        # member -> lot id -> [pending, expiry month, product, tier]
        self.members: dict[str, dict[str, list]] = {}
        # (member, lot) -> the lot, of the lots made or activated since the last write
        self.made: dict[tuple[str, str], list] = {}
        # Of those, the ones an earn made: not stored yet (a booking earns once).
        self.earned: set[tuple[str, str]] = set()
        self.liability_days: dict[tuple, int] = {}
        # The moments' entries in columns (day, at in microseconds, status, expiry month,
        # tier, points), as they come: a moment's figure is the sum of its entries anyway.
        self.moments: tuple[list, ...] = ([], [], [], [], [], [])
        self.activity: dict[tuple, int] = {}

    def apply(self, stored: StoredEvent) -> None:
        if type(stored.event) in _REPORTED:
            self.events.append((stored.stream_id, stored.event))

    # -- going through the events ------------------------------------------------------

    def _run(self) -> None:
        members = self.members
        for m, e in self.events:
            lots = members.get(m)
            if lots is None:
                lots = members[m] = {}
            self._event(m, lots, e)
        self.events.clear()

    def _liability(self, when: tuple[date, int], lot: list, points: int) -> None:
        if not points:
            return
        status, month, tier = (PENDING if lot[0] else ACTIVE), lot[1], lot[3]
        day, at = when
        key = (day, status, month, tier)
        self.liability_days[key] = self.liability_days.get(key, 0) + points
        days, ats, statuses, months, tiers, deltas = self.moments
        days.append(day)
        ats.append(at)
        statuses.append(status)
        months.append(month)
        tiers.append(tier)
        deltas.append(points)

    def _activity(self, day: date, kind: str, product: str, source: str, points: int) -> None:
        if points:
            key = (day, kind, product, source)
            self.activity[key] = self.activity.get(key, 0) + points

    def _new_lot(self, m: str, lots: dict[str, list], lot_id: str, pending: bool, expires_at: datetime | None,
                 product: str, tier: str) -> list:
        lot = lots[lot_id] = [pending, _month(expires_at), product, tier]
        self.made[(m, lot_id)] = lot
        return lot

    def _took(self, lots: dict[str, list], when: tuple[date, int], takes: Takes, sign: int = -1) -> None:
        for lot_id, points in takes:
            self._liability(when, lots[lot_id], sign * points)

    def _event(self, m: str, lots: dict[str, list], e: Event) -> None:  # noqa: C901, PLR0912
        at = _utc(e.occurred_at)
        day = at.date()
        when = (day, micros(at))
        match e:
            case PointsEarned():
                if e.lot_id not in lots:
                    self.earned.add((m, e.lot_id))
                lot = self._new_lot(m, lots, e.lot_id, e.status == PENDING, e.expires_at, e.product,
                                    e.tier or NO_TIER)
                self._liability(when, lot, e.points)
                for rule, points in e.breakdown:
                    self._activity(day, "earned", e.product, rule, points)
            case PendingPointsActivated():
                lot = lots[e.lot_id]
                self._liability(when, lot, -e.points)
                lot = self._new_lot(m, lots, e.lot_id, False, e.expires_at, lot[2], lot[3])
                self._liability(when, lot, e.points)
                self._activity(day, "activated", lot[2], "activation", e.points)
            case PointsRedeemed():
                self._took(lots, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "redemption", e.points)
            case PointsRedeemedForHousehold():
                self._took(lots, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "household", e.points)
            case HoldCaptured():
                self._took(lots, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "hold", e.points)
            case PointsExpired():
                lot = lots[e.lot_id]
                self._liability(when, lot, -e.points)
                self._activity(day, "expired", lot[2], "expiry", e.points)
            case DebtSettled():
                lot = lots[e.lot_id]
                self._liability(when, lot, -e.points)
                self._activity(day, "debt_settled", lot[2], "debt", e.points)
            case PointsAdjusted() if e.points > 0:
                assert e.lot_id is not None, "a credit makes a lot"
                lot = self._new_lot(m, lots, e.lot_id, False, e.expires_at, NO_PRODUCT, NO_TIER)
                self._liability(when, lot, e.points)
                self._activity(day, "adjusted", NO_PRODUCT, "adjustment", e.points)
            case PointsAdjusted():
                self._took(lots, when, e.lots)
                self._activity(day, "adjusted", NO_PRODUCT, "adjustment", e.points)
            case EarnReversed():
                self._took(lots, when, e.lots)
                self._activity(day, "clawed_back", lots[booking_lot_id(e.booking_id)][2], e.reason, e.points)
            case BookingAmended():
                lot = lots[booking_lot_id(e.booking_id)]
                if e.points > 0:
                    self._liability(when, lot, e.points)
                    for rule, points in e.breakdown:
                        self._activity(day, "earned", lot[2], rule, points)
                else:
                    self._took(lots, when, e.lots)
                    for rule, points in e.breakdown:
                        self._activity(day, "clawed_back", lot[2], rule, -points)
            case HoldReleased():
                self._took(lots, when, e.expired + e.forfeited)
                for lot_id, points in e.expired:
                    self._activity(day, "expired", lots[lot_id][2], "hold_release", points)
            case RedemptionReversed():
                self._took(lots, when, e.lots, sign=1)
                if e.grace_lot_id is not None:
                    lot = self._new_lot(m, lots, e.grace_lot_id, False, e.expires_at, NO_PRODUCT, NO_TIER)
                    self._liability(when, lot, sum(points for _, points in e.regranted))
                self._activity(day, "redeemed", NO_PRODUCT, "reversal", -e.points)
                for lot_id, points in e.expired:
                    self._activity(day, "expired", lots[lot_id][2], "redemption_reversal", points)
            case PointsTransferredOut():
                self._took(lots, when, e.lots)
                self._activity(day, "transferred_out", NO_PRODUCT, "transfer", e.points)
            case PointsTransferredIn():
                lot = self._new_lot(m, lots, e.lot_id, False, e.expires_at, NO_PRODUCT, NO_TIER)
                self._liability(when, lot, e.points)
                self._activity(day, "transferred_in", NO_PRODUCT, "transfer", e.points)
            case MemberMergedAway():  # what it had left went to the survivor: no activity
                self._took(lots, when, e.lots)
            case MemberMergedIn():
                for row in e.moved_lots:
                    lot_id, status, expires_at, remaining, held = row[0], row[4], row[5], row[3], row[10]
                    lot = self._new_lot(m, lots, lot_id, status == PENDING,
                                        datetime.fromisoformat(expires_at) if isinstance(expires_at, str) else expires_at,
                                        _product(row[13]), NO_TIER)
                    if status in (PENDING, ACTIVE):
                        self._liability(when, lot, remaining + held)
            case ActivityPointsEarned() | AnniversaryBonusGranted():  # P3: earned by rule, active at once
                if e.lot_id is not None:
                    lot = self._new_lot(m, lots, e.lot_id, False, e.expires_at, NO_PRODUCT, NO_TIER)
                    self._liability(when, lot, e.points)
                    for rule, points in e.breakdown:
                        self._activity(day, "earned", NO_PRODUCT, rule, points)

    # -- rows ----------------------------------------------------------------------------

    def _aggregate_rows(self) -> dict[str, list[tuple]]:
        out = {}
        for table, deltas in (("liability_days", self.liability_days), ("activity_days", self.activity)):
            out[table] = [(*key, points) for key, points in deltas.items() if points]
            deltas.clear()
        return out

    def _moments(self) -> tuple[list, ...]:
        """The moments' entries since the last call, in columns."""
        moments, self.moments = self.moments, ([], [], [], [], [], [])
        return moments

    def _lot_rows(self) -> list[tuple]:
        """The `report_lots` rows of the lots made or activated since the last call."""
        made, self.made = self.made, {}
        self.earned = set()
        return [(m, lot_id, *lot) for (m, lot_id), lot in made.items()]

    def completed(self, keep: str | None = None) -> dict[str, list[tuple]]:
        """Rows by table (without the suffix), for a replay in stream order: the lots
        made, and the members whose every event has been applied, all but `keep`, are let
        go. The deltas are summed over the pages of a span and given at its end (`keep`
        None), or when `MOMENTS_HELD_MAX` moments are held: a page of a span covers days
        that its other pages cover too, and rows per page were about as many as the
        events again, to copy and then add up (`compact` sums what the spans and
        processes give)."""
        self._run()
        if keep is not None and keep in self.members:
            self.members = {keep: self.members[keep]}
        else:
            self.members = {}
        kept = {key: lot for key, lot in self.made.items() if key[0] == keep}  # may change in the next page
        for key in kept:
            del self.made[key]
        lots = {"report_lots": self._lot_rows()}
        self.made = kept
        if keep is not None and len(self.moments[0]) < MOMENTS_HELD_MAX:
            return lots
        by_day: dict[date, tuple[list, ...]] = {}
        for day, *entry in zip(*self._moments(), strict=True):
            lists = by_day.get(day)
            if lists is None:
                lists = by_day[day] = ([], [], [], [], [])
            for values, value in zip(lists, entry, strict=True):
                values.append(value)
        return {**lots, **self._aggregate_rows(),
                "liability_moments": [(day, *lists) for day, lists in by_day.items()]}

    async def write(self, conn: asyncpg.Connection, insert_new: bool = False) -> None:
        """Go through the page's events from the lots stored before it, and add its
        deltas to the tables; with `insert_new`, the lots its earns made are plain
        inserts (see `KnownRows.insert_new`)."""
        if not self.events:
            return
        await self._load(conn)
        self._run()
        self.members.clear()
        earned = self.earned
        lots = self._lot_rows()
        if insert_new and earned:
            new = [row for row in lots if (row[0], row[1]) in earned]
            if new:
                await conn.copy_records_to_table(f"report_lots{self.suffix}", records=new, columns=LOT_COLUMNS)
                lots = [row for row in lots if (row[0], row[1]) not in earned]
        if lots:
            await conn.execute(
                f"INSERT INTO report_lots{self.suffix} AS l ({', '.join(LOT_COLUMNS)})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[])"
                " ON CONFLICT (member_id, lot_id) DO UPDATE SET pending = EXCLUDED.pending,"
                " expiry_month = EXCLUDED.expiry_month",
                *zip(*lots, strict=True),
            )
        for table, rows in self._aggregate_rows().items():
            if rows:
                await _add(conn, f"{table}{self.suffix}", AGGREGATES[table], rows)
        moments = self._moments()
        if moments[0]:
            await conn.execute(
                f"INSERT INTO liability_moments{self.suffix} ({', '.join(MOMENT_COLUMNS)})"
                " SELECT day, array_agg(at), array_agg(status), array_agg(expiry_month), array_agg(tier),"
                " array_agg(points) FROM unnest($1::date[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
                " $6::bigint[]) AS m(day, at, status, expiry_month, tier, points) GROUP BY day",
                *moments,
            )

    async def _load(self, conn: asyncpg.Connection) -> None:
        """The stored lots the page's events read."""
        wanted = {(m, lot) for m, e in self.events for lot in lots_read(e)}
        if not wanted:
            return
        ms, lot_ids = zip(*wanted, strict=True)
        members = self.members
        for m, lot_id, pending, month, product, tier in await conn.fetch(
                f"SELECT l.member_id, l.lot_id, l.pending, l.expiry_month, l.product, l.tier FROM report_lots{self.suffix} l"
                " JOIN unnest($1::text[], $2::text[]) AS k(m, lot) ON l.member_id = k.m AND l.lot_id = k.lot",
                ms, lot_ids):
            lots = members.get(m)
            if lots is None:
                lots = members[m] = {}
            lots[lot_id] = [pending, month, product, tier]


async def _add(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Add the deltas to the rows of their keys, then drop the rows that came to zero
    (a rebuild keeps none: the tables compare equal). The upsert names those, so the
    delete runs only when there are some (a page seldom brings a sum back to zero)."""
    key = columns[:-1]
    zeros = await conn.fetch(
        f"WITH up AS (INSERT INTO {table} AS t ({', '.join(columns)})"
        f" SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET points = t.points + EXCLUDED.points"
        f" RETURNING {', '.join(key)}, points)"
        f" SELECT {', '.join(key)} FROM up WHERE points = 0",
        *zip(*rows, strict=True),
    )
    if zeros:
        await conn.execute(
            f"DELETE FROM {table} t USING unnest($1::date[], $2::text[], $3::text[], $4::text[])"
            f" AS z({', '.join(key)}) WHERE {' AND '.join(f't.{k} = z.{k}' for k in key)} AND t.points = 0",
            *zip(*zeros, strict=True),
        )


async def compact(pool: asyncpg.Pool, suffix: str) -> None:
    """Sum a replay's delta rows (each page's and each process's, copied as they came)
    into one row per key, leaving out the sums of zero: what the live runner's upserts
    arrive at. Before the tables get their keys back."""

    async def one(table: str, columns: tuple[str, ...]) -> None:
        key = ", ".join(columns[:-1])
        async with pool.acquire() as conn:
            await conn.execute(
                f"WITH gone AS (DELETE FROM {table}{suffix} RETURNING *)"
                f" INSERT INTO {table}{suffix} ({', '.join(columns)})"
                f" SELECT {key}, sum(points) FROM gone GROUP BY {key} HAVING sum(points) <> 0"
            )

    for table, columns in AGGREGATES.items():
        await one(table, columns)
    async with pool.acquire() as conn:
        await conn.execute(
            f"WITH gone AS (DELETE FROM liability_moments{suffix} RETURNING *),"
            f" summed AS ({MOMENT_ENTRIES.format(table='gone')} GROUP BY 1, 2, 3, 4, 5 HAVING sum(u.points) <> 0)"
            f" INSERT INTO liability_moments{suffix} ({', '.join(MOMENT_COLUMNS)})"
            " SELECT day, array_agg(at ORDER BY at), array_agg(status ORDER BY at), array_agg(expiry_month ORDER BY at),"
            " array_agg(tier ORDER BY at), array_agg(points ORDER BY at) FROM summed GROUP BY day"
        )
