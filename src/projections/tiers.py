"""Tier status: tier-qualifying points per booking, and each member's tier computed
from them by the domain's own `tier_status`, as of the member's last qualifying change.

"As of the last qualifying change" (the latest of the member's first event and every
event that added, changed or withdrew tier-qualifying points) rather than "as of the
last activity" lets the live runner recompute only the members whose qualifying rows
changed in a page, plus members new in it, instead of every member it touched. It is a
maximum over a set of events, so the live runner (page by page) and a rebuild (once per
member, after its last event) arrive at the same value. The live runner has the server
add up the points in the window (`write_tier_status`); a rebuild, which has each
member's rows at hand, gives them to the domain's `tier_status` (`status_row`). The API
does not read this table: the balance route works the points tier out "now" from the
qualifying rows and shows the higher of it and the tier changes' (`member_tiers`, tier
policies), and the tier route reads the member's state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from ledger.domain import (
    BookingAmended,
    EarnReversed,
    MemberMergedAway,
    MemberMergedIn,
    PendingPointsActivated,
    PointsEarned,
    Rules,
    in_force,
    tier_in_window,
    tier_status,
)
from ledger.domain.decider import booking_lot_id
from ledger.domain.timeutil import add_months
from ledger.store import StoredEvent

from .balances import LotStatus

QUALIFYING_COLUMNS = ("member_id", "booking_id", "earned_at", "points")
STATUS_COLUMNS = ("member_id", "tier", "qualifying_points", "window_start", "next_tier", "points_to_next_tier",
                  "reevaluation_date", "as_of")


def _later(first: datetime, changed: datetime | None) -> datetime:
    """A member's as-of date: its first event's, or its latest qualifying change's."""
    return first if changed is None or changed < first else changed


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


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
        # (member, booking) -> (points, occurred_at of the latest) of amendments to a row
        # stored before this page
        self.deltas: dict[tuple[str, str], tuple[int, datetime]] = {}
        # member -> occurred_at of its first event seen / of its latest qualifying change
        self.first: dict[str, datetime] = {}
        self.changed: dict[str, datetime] = {}
        # The rows an active earn of this page made: not stored yet (a booking earns once).
        self.made: set[tuple[str, str]] = set()

    def apply(self, stored: StoredEvent) -> None:
        e, m = stored.event, stored.stream_id
        if m not in self.first:
            self.first[m] = e.occurred_at
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
                if not self._amended(m, e.booking_id, e.qualifying_points, e.occurred_at):
                    return
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
            case _:
                return
        self._changed(m, e.occurred_at)

    def _changed(self, member: str, at: datetime) -> None:
        changed = self.changed.get(member)
        if changed is None or changed < at:
            self.changed[member] = at

    def _amended(self, member: str, booking: str, points: int, at: datetime) -> bool:
        """Whether the amendment changed a row this page knows (the others wait for `resolve`)."""
        key = (member, booking)
        row = self.rows.get(key)
        if row is not None:
            self.rows[key] = (row[0], row[1] + points)
            return True
        status = self.lot_status(member, booking_lot_id(booking)) if self.lot_status is not None else None
        if status != "pending":  # pending: no row until it activates
            before = self.deltas.get(key)
            self.deltas[key] = (points, at) if before is None else (before[0] + points, max(before[1], at))
        return False

    async def resolve(self, conn: asyncpg.Connection) -> None:
        """The amendments to rows stored before this page, applied to them as stored."""
        if not self.deltas:
            return
        members, bookings = zip(*self.deltas, strict=True)
        for m, booking, earned_at, points in await conn.fetch(
                f"SELECT t.member_id, t.booking_id, t.earned_at, t.points FROM {self.table} t"
                " JOIN unnest($1::text[], $2::text[]) AS k(m, b) ON t.member_id = k.m AND t.booking_id = k.b",
                members, bookings):
            delta, at = self.deltas[(m, booking)]
            self.rows[(m, booking)] = (earned_at, points + delta)
            self._changed(m, at)
        self.deltas.clear()  # those not found were of bookings still pending: no row

    def as_of(self, new_members: Iterable[str]) -> dict[str, datetime]:
        """The as-of candidate of each member whose tier may have moved: those with a
        qualifying change and those seen for the first time (`new_members`)."""
        out = dict(self.changed)
        for m in new_members:
            out[m] = _later(self.first[m], out.get(m))
        return out

    def completed(self, rules: Rules, keep: str | None = None) -> tuple[list[tuple], list[tuple]]:
        """The qualifying rows (in `QUALIFYING_COLUMNS` order) and the tier status (in
        `STATUS_COLUMNS` order) of the members whose every event has been applied: all
        but `keep` (see `Balances.completed`).

        The status is what `write_tier_status` stores for a member with these rows and
        this as-of date, computed here by the domain's `tier_status` rather than by the
        server: the dates go in UTC, as the server returns them, so the window's start
        and the re-evaluation date come out of the same calendar arithmetic."""
        assert all(m == keep for m, _ in self.deltas), "a replay knows every row it amends"
        rows, entries = self._completed_rows(keep)
        first, changed = self.first, self.changed
        self.first, self.changed = {}, {}
        if keep is not None:
            if keep in first:
                self.first[keep] = first.pop(keep)
            if keep in changed:
                self.changed[keep] = changed.pop(keep)
        statuses = [status_row(m, _utc(_later(at, changed.get(m))), entries.get(m, ()), rules)
                    for m, at in first.items()]
        return rows, statuses

    def _completed_rows(self, keep: str | None) -> tuple[list[tuple], dict[str, list[tuple[datetime, int]]]]:
        """The rows of all members but `keep`, and each one's (earned_at in UTC, points)."""
        rows: list[tuple] = []
        entries: dict[str, list[tuple[datetime, int]]] = {}
        kept: dict[tuple[str, str], tuple[datetime, int] | None] = {}
        for key, value in self.rows.items():
            m = key[0]
            if m == keep:
                kept[key] = value
            elif value is not None:
                rows.append((m, key[1], value[0], value[1]))
                if value[0].tzinfo is not UTC:
                    value = (value[0].astimezone(UTC), value[1])
                member_entries = entries.get(m)
                if member_entries is None:
                    entries[m] = [value]
                else:
                    member_entries.append(value)
        self.rows = kept
        self.made = {key for key in self.made if key[0] == keep}
        return rows, entries

    def changes(self) -> dict[str, list[tuple[str, tuple[datetime, int] | None]]]:
        """The page's qualifying changes by member: (booking, (earned_at in UTC, points)
        or None for a row deleted), in the order they were made."""
        out: dict[str, list[tuple[str, tuple[datetime, int] | None]]] = {}
        for (m, booking), value in self.rows.items():
            if value is not None and value[0].tzinfo is not UTC:
                value = (value[0].astimezone(UTC), value[1])
            out.setdefault(m, []).append((booking, value))
        return out

    def clear_members(self) -> None:
        self.first.clear()
        self.changed.clear()

    async def write(self, conn: asyncpg.Connection, insert_new: bool = False) -> None:
        """Write the page's rows; with `insert_new`, those its earns made are plain
        inserts (see `KnownRows.insert_new`)."""
        gone = [key for key, value in self.rows.items() if value is None]
        made = self.made
        self.made = set()
        if insert_new and made:
            new = [(m, b, *v) for (m, b), v in self.rows.items() if v is not None and (m, b) in made]
            if new:
                await conn.execute(
                    f"INSERT INTO {self.table} (member_id, booking_id, earned_at, points)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[])",
                    *zip(*new, strict=True),
                )
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


def status_row(member: str, at: datetime, entries: Iterable[tuple[datetime, int]], rules: Rules) -> tuple:
    """A `tier_status` row (`STATUS_COLUMNS`) as of `at`, from the member's qualifying
    rows, all in UTC, under the rules in force at `at`: a rebuild then writes what the
    live runner wrote, whatever was published since."""
    s = tier_status(entries, at, in_force(rules, at))
    return (member, s.tier, s.qualifying_points, s.window_start, s.next_tier, s.points_to_next_tier,
            s.reevaluation_date, at)


Entries = dict[str, tuple[datetime, int]]  # booking -> (earned_at in UTC, points)
PRUNE_MARGIN = timedelta(days=2)  # more than the window's start can move back (see TierCache)


class TierCache:
    """The live runner's copy of each member's qualifying rows and stored as-of date, so
    a page's tier recompute reads nothing back: the sum over the member's qualifying
    rows was the projections' costliest statement. Bounded LRU; a member not here is
    read from the tables. Rows dated more than a day before a member's window start can
    never count again and are dropped now and then: the as-of date only moves forward,
    but the window's start can move back by up to a day (months of different lengths:
    as of 28 February 2024 12:00 the window starts 28 February 2023 12:00, as of 29
    February 01:00 on 28 February 2023 01:00).

    It holds what the tables hold at the checkpoint this runner last wrote. It is
    updated in place while a page is written, so the runner empties it when the page's
    transaction fails, and whenever it finds the checkpoint elsewhere (another runner
    or a rebuild wrote since).
    """

    PRUNE_ABOVE = 16  # rows per member before those out of the window are dropped

    def __init__(self, members_max: int) -> None:
        self.members_max = members_max
        # member -> [as_of or None, Entries, rows kept by the last pruning]
        self._items: OrderedDict[str, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    async def write(
        self,
        conn: asyncpg.Connection,
        as_of: dict[str, datetime],
        changes: dict[str, list[tuple[str, tuple[datetime, int] | None]]],
        new_members: Iterable[str],
        rules: Rules,
    ) -> None:
        """`write_tier_status` from the cached rows plus the page's `changes` (written
        to `tier_qualifying` already); members not cached are read, except those new in
        this page (`new_members`: nothing is stored for them yet)."""
        if not as_of:
            return
        items = self._items
        new = set(new_members)
        missing = [m for m in as_of if m not in items and m not in new]
        loaded = await _stored(conn, missing) if missing else {}
        out = []
        for m, at in as_of.items():
            item = items.get(m)
            if item is None:
                # Rows read back hold this page's changes already; applying them again
                # sets the same values.
                item = items[m] = loaded.get(m) or [None, {}, 0]
            else:
                items.move_to_end(m)
            entries = item[1]
            for booking, value in changes.get(m, ()):
                if value is None:
                    entries.pop(booking, None)
                else:
                    entries[booking] = value
            at = _utc(at)
            if item[0] is not None and item[0] > at:
                at = item[0]  # a qualifying change dated after this page's
            item[0] = at
            row = status_row(m, at, entries.values(), rules)
            out.append(row)
            # Pruned again only once the rows have doubled since: a member whose rows are all
            # in the window was copied row by row on every page (3% of the runner's time in
            # a profile at 10 to 20 bookings a member).
            if len(entries) > self.PRUNE_ABOVE and len(entries) > 2 * item[2]:
                gone = row[3] - PRUNE_MARGIN  # row[3]: the window's start
                item[1] = {b: v for b, v in entries.items() if v[0] > gone}
                item[2] = len(item[1])
        await _upsert_status(conn, "tier_status", out)
        while len(items) > self.members_max:
            items.popitem(last=False)


async def _stored(conn: asyncpg.Connection, members: list[str]) -> dict[str, list]:
    out: dict[str, list] = {
        m: [as_of, {}, 0] for m, as_of in await conn.fetch(
            "SELECT m, s.as_of FROM unnest($1::text[]) AS m LEFT JOIN tier_status s ON s.member_id = m", members)
    }
    for m, booking, earned_at, points in await conn.fetch(
            "SELECT member_id, booking_id, earned_at, points FROM tier_qualifying WHERE member_id = ANY($1::text[])",
            members):
        out[m][1][booking] = (earned_at, points)
    return out


async def _upsert_status(conn: asyncpg.Connection, status_table: str, rows: list[tuple]) -> None:
    await conn.execute(
        f"INSERT INTO {status_table} (member_id, tier, qualifying_points, window_start, next_tier,"
        " points_to_next_tier, reevaluation_date, as_of)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::bigint[],"
        " $7::timestamptz[], $8::timestamptz[])"
        " ON CONFLICT (member_id) DO UPDATE SET tier = EXCLUDED.tier, qualifying_points = EXCLUDED.qualifying_points,"
        " window_start = EXCLUDED.window_start, next_tier = EXCLUDED.next_tier,"
        " points_to_next_tier = EXCLUDED.points_to_next_tier, reevaluation_date = EXCLUDED.reevaluation_date,"
        " as_of = EXCLUDED.as_of",
        *zip(*rows, strict=True),
    )


async def write_tier_status(
    conn: asyncpg.Connection,
    as_of: dict[str, datetime],
    rules: Rules,
    *,
    qualifying_table: str = "tier_qualifying",
    status_table: str = "tier_status",
) -> int:
    """Recompute the tier of the members in `as_of` from their qualifying rows, as of
    the later of the date given and the one already stored; returns how many.

    The server adds up each member's points in the window (what `tier_status` does
    over the rows), so one row per member comes back rather than every qualifying
    row; the window's start is still computed here, by the domain's calendar."""
    if not as_of:
        return 0
    # In UTC, as the server returns the stored dates: the window's start is calendar
    # arithmetic on the wall clock, so the live runner and a rebuild must both start
    # from the same zone to agree.
    ats = {m: at.astimezone(UTC) for m, at in as_of.items()}
    out = []
    for _ in range(2):
        starts = [add_months(at, -in_force(rules, at).tier_window_months) for at in ats.values()]
        # Per member, index probes (a scalar subquery, a lateral aggregate) rather than
        # a join and a GROUP BY over every qualifying row of the page's members.
        rows = await conn.fetch(
            f"SELECT m.member_id, (SELECT s.as_of FROM {status_table} s WHERE s.member_id = m.member_id), m.ws,"
            f" q.total, q.oldest"
            f" FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS m(member_id, at, ws) CROSS JOIN LATERAL"
            f" (SELECT coalesce(sum(points), 0)::bigint AS total, min(earned_at) AS oldest FROM {qualifying_table}"
            f" WHERE member_id = m.member_id AND earned_at > m.ws AND earned_at <= m.at) q",
            list(ats), list(ats.values()), starts,
        )
        later: dict[str, datetime] = {}
        for member, stored_as_of, window_start, total, oldest in rows:
            at = ats[member]
            if stored_as_of is not None and stored_as_of > at:
                later[member] = stored_as_of  # a qualifying change dated after this page's
                continue
            s = tier_in_window(total, oldest, window_start, in_force(rules, at))
            out.append((member, s.tier, s.qualifying_points, s.window_start, s.next_tier, s.points_to_next_tier,
                        s.reevaluation_date, at))
        if not later:
            break
        ats = later
    assert not later, "a stored date is never later than itself"
    await _upsert_status(conn, status_table, out)
    return len(out)
