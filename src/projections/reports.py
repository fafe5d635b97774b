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
- The `product` and `tier` columns of `expiry_lots`: each lot's product and tier,
  which a later event taking points from the lot needs and does not carry (its bucket's
  status and expiry month are that table's `status` and `expires_at`). Written with the
  lot's row, they cost the projection next to nothing; a table of their own was a row
  per lot more.

A lot's tier is the member's tier when the lot was credited, before the crediting
event's own qualifying points count: for an earn, the tier the decider priced it at,
which the event carries from its version 2; for the other credits and older earns, the
domain's `tier_status` over the member's qualifying rows as they stood (the same rows as
`tier_qualifying`, and the decider's answer). Every change to a lot counts in the lot's tier, so each
tier's figure is what is left of lots, never below zero (the tier at each change instead
would put a spend under a tier the points were not earned in). A replay computes it from
the events alone, so a rebuild and the live runner agree, and a past figure does not
move when tiers change later.

Every delta is additive: the live runner upserts a page's by adding to the stored rows
(and drops rows that come to zero), except the moments', which it appends (see
`MOMENT_COLUMNS`); a rebuild copies each page's and sums them once at the end
(`compact`), leaving one row per key (one entry per moment) with a sum other than zero.
The sums by key are the same both ways.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg

from ledger.domain import (
    BookingAmended,
    DebtSettled,
    EarnReversed,
    Event,
    HoldCaptured,
    HoldReleased,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    ProgramRules,
    RedemptionReversed,
    tier_status,
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

_REPORTED = frozenset((
    PointsEarned, PendingPointsActivated, PointsRedeemed, PointsRedeemedForHousehold, PointsExpired, DebtSettled,
    PointsAdjusted, EarnReversed, BookingAmended, HoldCaptured, HoldReleased, RedemptionReversed,
    PointsTransferredOut, PointsTransferredIn,
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
    return ()


def _credits(e: Event) -> bool:
    """Whether the event credits a new lot whose tier it does not carry: its tier is
    worked out from the member's qualifying rows. An earn carries it from version 2."""
    match e:
        case PointsEarned():
            return e.tier is None
        case PointsTransferredIn():
            return True
        case PointsAdjusted():
            return e.points > 0
        case RedemptionReversed():
            return e.grace_lot_id is not None
    return False


class _Member:
    """What the reports need of a member between its events: its lots' buckets and
    products, and its qualifying rows for the tier."""

    __slots__ = ("lots", "entries", "tier_key", "tier")

    def __init__(self) -> None:
        self.lots: dict[str, list] = {}  # lot id -> [pending, expiry month, product, tier]
        self.entries: dict[str, tuple[datetime, int]] = {}  # booking -> (earned_at in UTC, qualifying points)
        self.tier_key: datetime | None = None  # the instant `tier` was computed at, None: to compute
        self.tier = ""


class ReportLedger:
    """The reports' deltas for one page (the live runner) or one replay span (a rebuild).

    `apply` only keeps the page's events: the live runner applies a page before it is
    written (even while the previous one is), so the lots and qualifying rows stored
    before it can be read only in `write`, which then goes through the events. A
    replay in stream order has each member's history from its first event, and goes
    through them in `completed` with nothing to read."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.events: list[tuple[str, Event]] = []
        self.members: dict[str, _Member] = {}
        # (member, lot) -> (product, tier) of the lots the page made, for `expiry_lots`
        self.labels: dict[tuple[str, str], tuple[str, str]] = {}
        self.liability_days: dict[tuple, int] = {}
        # The moments' entries in columns (day, at in microseconds, status, expiry month,
        # tier, points), as they come: a moment's figure is the sum of its entries anyway.
        self.moments: tuple[list, ...] = ([], [], [], [], [], [])
        self.activity: dict[tuple, int] = {}

    def apply(self, stored: StoredEvent) -> None:
        if type(stored.event) in _REPORTED:
            self.events.append((stored.stream_id, stored.event))

    # -- going through the events ------------------------------------------------------

    def _run(self, rules: ProgramRules) -> None:
        members = self.members
        for m, e in self.events:
            s = members.get(m)
            if s is None:
                s = members[m] = _Member()
            self._event(rules, m, s, e)
        self.events.clear()

    def _tier(self, s: _Member, at: datetime, rules: ProgramRules) -> str:
        if s.tier_key != at:
            s.tier = tier_status(s.entries.values(), at, rules).tier
            s.tier_key = at
        return s.tier

    def _entry(self, s: _Member, booking: str, value: tuple[datetime, int] | None) -> None:
        if value is None:
            s.entries.pop(booking, None)
        else:
            s.entries[booking] = value
        s.tier_key = None

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

    def _new_lot(self, m: str, s: _Member, lot_id: str, pending: bool, expires_at: datetime | None,
                 product: str, tier: str) -> list:
        lot = s.lots[lot_id] = [pending, _month(expires_at), product, tier]
        self.labels[(m, lot_id)] = (product, tier)
        return lot

    def take_labels(self) -> dict[tuple[str, str], tuple[str, str]]:
        """The product and tier of the lots made since the last call, for `expiry_lots`."""
        labels, self.labels = self.labels, {}
        return labels

    def _took(self, s: _Member, when: tuple[date, int], takes: Takes, sign: int = -1) -> None:
        for lot_id, points in takes:
            self._liability(when, s.lots[lot_id], sign * points)

    def _event(self, rules: ProgramRules, m: str, s: _Member, e: Event) -> None:  # noqa: C901, PLR0912
        at = _utc(e.occurred_at)
        day = at.date()
        when = (day, micros(at))
        match e:
            case PointsEarned():
                tier = e.tier if e.tier is not None else self._tier(s, at, rules)
                lot = self._new_lot(m, s, e.lot_id, e.status == PENDING, e.expires_at, e.product, tier)
                self._liability(when, lot, e.points)
                for rule, points in e.breakdown:
                    self._activity(day, "earned", e.product, rule, points)
                if e.status == ACTIVE:
                    self._entry(s, e.booking_id, (at, e.qualifying_points))
            case PendingPointsActivated():
                lot = s.lots[e.lot_id]
                self._liability(when, lot, -e.points)
                lot = self._new_lot(m, s, e.lot_id, False, e.expires_at, lot[2], lot[3])
                self._liability(when, lot, e.points)
                self._activity(day, "activated", lot[2], "activation", e.points)
                self._entry(s, e.booking_id, (at, e.qualifying_points))
            case PointsRedeemed():
                self._took(s, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "redemption", e.points)
            case PointsRedeemedForHousehold():
                self._took(s, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "household", e.points)
            case HoldCaptured():
                self._took(s, when, e.lots)
                self._activity(day, "redeemed", e.reward_kind, "hold", e.points)
            case PointsExpired():
                lot = s.lots[e.lot_id]
                self._liability(when, lot, -e.points)
                self._activity(day, "expired", lot[2], "expiry", e.points)
            case DebtSettled():
                lot = s.lots[e.lot_id]
                self._liability(when, lot, -e.points)
                self._activity(day, "debt_settled", lot[2], "debt", e.points)
            case PointsAdjusted() if e.points > 0:
                assert e.lot_id is not None, "a credit makes a lot"
                lot = self._new_lot(m, s, e.lot_id, False, e.expires_at, NO_PRODUCT, self._tier(s, at, rules))
                self._liability(when, lot, e.points)
                self._activity(day, "adjusted", NO_PRODUCT, "adjustment", e.points)
            case PointsAdjusted():
                self._took(s, when, e.lots)
                self._activity(day, "adjusted", NO_PRODUCT, "adjustment", e.points)
            case EarnReversed():
                self._took(s, when, e.lots)
                self._activity(day, "clawed_back", s.lots[booking_lot_id(e.booking_id)][2], e.reason, e.points)
                if e.qualifying_points:
                    self._entry(s, e.booking_id, None)
            case BookingAmended():
                lot = s.lots[booking_lot_id(e.booking_id)]
                if e.points > 0:
                    self._liability(when, lot, e.points)
                    for rule, points in e.breakdown:
                        self._activity(day, "earned", lot[2], rule, points)
                else:
                    self._took(s, when, e.lots)
                    for rule, points in e.breakdown:
                        self._activity(day, "clawed_back", lot[2], rule, -points)
                entry = s.entries.get(e.booking_id)
                if e.qualifying_points and entry is not None:  # a pending booking has no row yet
                    self._entry(s, e.booking_id, (entry[0], entry[1] + e.qualifying_points))
            case HoldReleased():
                self._took(s, when, e.expired + e.forfeited)
                for lot_id, points in e.expired:
                    self._activity(day, "expired", s.lots[lot_id][2], "hold_release", points)
            case RedemptionReversed():
                self._took(s, when, e.lots, sign=1)
                if e.grace_lot_id is not None:
                    lot = self._new_lot(m, s, e.grace_lot_id, False, e.expires_at, NO_PRODUCT,
                                        self._tier(s, at, rules))
                    self._liability(when, lot, sum(points for _, points in e.regranted))
                self._activity(day, "redeemed", NO_PRODUCT, "reversal", -e.points)
                for lot_id, points in e.expired:
                    self._activity(day, "expired", s.lots[lot_id][2], "redemption_reversal", points)
            case PointsTransferredOut():
                self._took(s, when, e.lots)
                self._activity(day, "transferred_out", NO_PRODUCT, "transfer", e.points)
            case PointsTransferredIn():
                lot = self._new_lot(m, s, e.lot_id, False, e.expires_at, NO_PRODUCT, self._tier(s, at, rules))
                self._liability(when, lot, e.points)
                self._activity(day, "transferred_in", NO_PRODUCT, "transfer", e.points)

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

    def completed(self, rules: ProgramRules, keep: str | None = None) -> dict[str, list[tuple]]:
        """Rows by table (without the suffix), for a replay in stream order. The lots made
        are in `take_labels`; the members whose every event has been applied, all but
        `keep`, are let go. The deltas are summed over the pages of a span and given at
        its end (`keep` None), or when `MOMENTS_HELD_MAX` moments are held: a page of a
        span covers days that its other pages cover too, and rows per page were about as
        many as the events again, to copy and then add up (`compact` sums what the
        spans and processes give)."""
        self._run(rules)
        if keep is not None and keep in self.members:
            self.members = {keep: self.members[keep]}
        else:
            self.members = {}
        if keep is not None and len(self.moments[0]) < MOMENTS_HELD_MAX:
            return {}
        by_day: dict[date, tuple[list, ...]] = {}
        for day, *entry in zip(*self._moments(), strict=True):
            lists = by_day.get(day)
            if lists is None:
                lists = by_day[day] = ([], [], [], [], [])
            for values, value in zip(lists, entry, strict=True):
                values.append(value)
        return {**self._aggregate_rows(), "liability_moments": [(day, *lists) for day, lists in by_day.items()]}

    async def write(self, conn: asyncpg.Connection, rules: ProgramRules) -> None:
        """Go through the page's events from the lots and qualifying rows stored before
        it, and add its deltas to the tables. Runs before the page's qualifying rows are
        written."""
        if not self.events:
            return
        await self._load(conn)
        self._run(rules)
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
        """The stored lots the page's events read, and the qualifying rows of the members
        they credit a lot (the others' tier is not asked)."""
        for m, _ in self.events:
            self.members.setdefault(m, _Member())
        members = {m for m, e in self.events if _credits(e)}
        wanted = {(m, lot) for m, e in self.events for lot in lots_read(e)}
        if wanted:
            ms, lots = zip(*wanted, strict=True)
            # Pending: not activated yet, or taken back before it was (a lot's date is set
            # when it becomes spendable, and only then).
            for m, lot_id, pending, expires_at, product, tier in await conn.fetch(
                    "SELECT l.member_id, l.lot_id, l.status = 'pending' OR (l.status = 'reversed' AND l.expires_at IS NULL),"
                    f" l.expires_at, l.product, l.tier FROM expiry_lots{self.suffix} l"
                    " JOIN unnest($1::text[], $2::text[]) AS k(m, lot) ON l.member_id = k.m AND l.lot_id = k.lot",
                    ms, lots):
                self.members[m].lots[lot_id] = [pending, _month(expires_at), product, tier]
        if not members:
            return
        for m, booking, earned_at, points in await conn.fetch(
                f"SELECT member_id, booking_id, earned_at, points FROM tier_qualifying{self.suffix}"
                " WHERE member_id = ANY($1::text[])", list(members)):
            self.members[m].entries[booking] = (_utc(earned_at), points)


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
