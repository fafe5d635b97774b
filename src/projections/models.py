"""The projections together, in two groups that each feed from the event stream at their
own pace (a checkpoint and a lock of their own, see `projections.runner`):

- the member group (`MemberModels`): what members and their apps read, balances, tiers,
  expiry schedules, holds, households, the catalogue, where a write is waited for
  (`min_position`, read-your-writes) and every page counts;
- the reports group (`ReportModels`): the finance reports and the customer value
  segments, read by auditors and marketing, which may run behind under load and catch
  up when it eases, so that members never wait for them.

A rebuild replays both at once (`ReadModels`): one read of the events for all tables.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from ledger.domain import HOUSEHOLD_STREAM_PREFIX, REWARD_STREAM_PREFIX
from ledger.store import StoredEvent

from . import anniversaries, balances, expiry, holds, households, member_tiers, members, reports, rewards, segments, tiers
from .anniversaries import Anniversaries
from .balances import Balances
from .expiry import ExpirySchedule
from .holds import HoldBook
from .member_tiers import MemberTiers
from .households import HouseholdMembers
from .members import MemberProfiles
from .reports import ReportLedger
from .rewards import RewardCatalogue
from .segments import SegmentBookings
from .tiers import TierQualifying

MEMBER_TABLES = ("balances", "tier_qualifying", "expiry_lots", "holds", "household_members",
                 "rewards", "member_tiers", "member_anniversaries", "member_profiles")
REPORT_TABLES = ("segment_bookings", "segment_members", "report_lots", *reports.AGGREGATES, "liability_moments")
TABLES = (*MEMBER_TABLES, *REPORT_TABLES)
COLUMNS = {
    "balances": balances.COLUMNS,
    "tier_qualifying": tiers.QUALIFYING_COLUMNS,
    "expiry_lots": expiry.COLUMNS,
    "holds": holds.COLUMNS,
    "household_members": households.COLUMNS,
    "rewards": rewards.COLUMNS,
    "member_anniversaries": anniversaries.COLUMNS,  # P3
    "member_profiles": members.COLUMNS,  # Members (M1)
    "segment_bookings": segments.BOOKING_COLUMNS,
    "segment_members": segments.MEMBER_COLUMNS,
    "report_lots": reports.LOT_COLUMNS,
    **reports.AGGREGATES,
    "liability_moments": reports.MOMENT_COLUMNS,
    "member_tiers": member_tiers.COLUMNS,
}


class KnownRows:
    """What the live runner knows of some stored rows, by table and key (a bounded LRU
    per table): enough to tell that a page's change would leave a row as it is, and to
    write nothing for it. A member's anniversary start and its first event (the segments'
    tenure) are known after its first page, and every booking of a member touched them
    again; skipping those upserts took 8 µs of PostgreSQL per event (`kafka_bench`).

    What it holds is true of the tables at the checkpoint the runner last wrote: the
    runner empties it when a page's transaction fails, and whenever it finds the
    checkpoint elsewhere (another runner or a rebuild wrote since)."""

    def __init__(self, rows_max: int) -> None:
        self.rows_max = rows_max
        self._tables: dict[str, OrderedDict[Any, Any]] = {}
        # A lot or qualifying row an earn makes is not stored yet (a booking earns once):
        # a plain insert, not an upsert, cost the server 4.7 µs a row against 7.0 (three
        # such rows a booking); as a binary COPY rather than an INSERT from arrays, the
        # client encodes such a row in 0.7 µs rather than 1.6 to 2.4 (`asyncpg`'s array
        # encoder checks each element against the abstract collection types). Turned
        # off for good by the runner if the server ever
        # finds one stored (a unique violation), the page then retried with upserts.
        self.insert_new = True

    def table(self, name: str) -> OrderedDict[Any, Any]:
        rows = self._tables.get(name)
        if rows is None:
            rows = self._tables[name] = OrderedDict()
        return rows

    def trim(self) -> None:
        for rows in self._tables.values():
            while len(rows) > self.rows_max:
                rows.popitem(last=False)

    def clear(self) -> None:
        self._tables.clear()


class Models(Protocol):
    def apply(self, stored: StoredEvent) -> None: ...

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None: ...


class MemberModels:
    """The member group's deltas for one page. The balances and the tier rows ask the
    expiry schedule for the status of a lot an amendment raises (pending or not), before
    it applies the amendment itself. A household's stream feeds only the rosters (a
    household is no member: it has no balance, lots, holds or tier of its own), and a
    reward's stream only the catalogue."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.expiry = ExpirySchedule(f"expiry_lots{suffix}")
        self.balances = Balances(f"balances{suffix}", lots_table=f"expiry_lots{suffix}", lot_status=self.expiry.status)
        self.qualifying = TierQualifying(f"tier_qualifying{suffix}", lot_status=self.expiry.status)
        self.holds = HoldBook(f"holds{suffix}")
        self.households = HouseholdMembers(f"household_members{suffix}")
        self.rewards = RewardCatalogue(f"rewards{suffix}")
        self.member_tiers = MemberTiers(f"member_tiers{suffix}")
        self.anniversaries = Anniversaries(f"member_anniversaries{suffix}")  # P3
        self.profiles = MemberProfiles(f"member_profiles{suffix}")  # Members (M1)

    def apply(self, stored: StoredEvent) -> None:
        if stored.stream_id.startswith(HOUSEHOLD_STREAM_PREFIX):
            self.households.apply(stored)
            return
        if stored.stream_id.startswith(REWARD_STREAM_PREFIX):
            self.rewards.apply(stored)
            return
        self.balances.apply(stored)
        self.qualifying.apply(stored)
        self.expiry.apply(stored)
        self.holds.apply(stored)
        self.member_tiers.apply(stored)
        self.anniversaries.apply(stored)
        self.profiles.apply(stored)

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None:
        """Write the page's deltas. `known`: the live runner's `KnownRows`, which it updates."""
        if self.suffix:
            known = None
        # Both read what the page's lots and rows were before it: first.
        await self.balances.write(conn)
        await self.qualifying.resolve(conn)
        insert_new = known is not None and known.insert_new
        await self.qualifying.write(conn, insert_new)
        await self.expiry.write(conn, insert_new)
        await self.holds.write(conn)
        await self.households.write(conn)
        await self.rewards.write(conn)
        await self.member_tiers.write(conn)
        await self.anniversaries.write(conn, known)
        await self.profiles.write(conn)

    def completed(self, keep: str | None = None) -> dict[str, list[tuple]]:
        """The final rows, by table (without the suffix), of the members whose every event
        has been applied: all but `keep`, whose deltas stay for the next page. Only for a
        replay in stream order, where each member's events come together."""
        return {
            "balances": self.balances.completed(keep),
            "tier_qualifying": self.qualifying.completed(keep),
            "expiry_lots": self.expiry.completed(keep),
            "holds": self.holds.completed(keep),
            "household_members": self.households.completed(keep),
            "rewards": self.rewards.completed(keep),
            "member_tiers": self.member_tiers.completed(keep),
            "member_anniversaries": self.anniversaries.completed(keep),
            "member_profiles": self.profiles.completed(keep),
        }


class ReportModels:
    """The reports group's deltas for one page: the reports' and the segments'. Only
    member streams feed them."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.segments = SegmentBookings(f"segment_bookings{suffix}", f"segment_members{suffix}")
        self.reports = ReportLedger(suffix)

    def apply(self, stored: StoredEvent) -> None:
        if stored.stream_id.startswith((HOUSEHOLD_STREAM_PREFIX, REWARD_STREAM_PREFIX)):
            return
        self.segments.apply(stored)
        self.reports.apply(stored)

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None:
        if self.suffix:
            known = None
        await self.reports.write(conn, known is not None and known.insert_new)
        await self.segments.write(conn, known)

    def completed(self, keep: str | None = None) -> dict[str, list[tuple]]:
        bookings, members = self.segments.completed(keep)
        return {"segment_bookings": bookings, "segment_members": members, **self.reports.completed(keep)}


class ReadModels:
    """Both groups, for a rebuild's replay and its catch-up."""

    def __init__(self, suffix: str = "") -> None:
        self.members = MemberModels(suffix)
        self.reports = ReportModels(suffix)

    def apply(self, stored: StoredEvent) -> None:
        self.members.apply(stored)
        self.reports.apply(stored)

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None:
        await self.members.write(conn)
        await self.reports.write(conn)

    def completed(self, keep: str | None = None) -> dict[str, list[tuple]]:
        return {**self.members.completed(keep), **self.reports.completed(keep)}


@dataclass(frozen=True)
class Group:
    """A projection group: its checkpoint's name, the advisory lock its runners take
    turns under, its tables, and the deltas of a page."""

    name: str
    lock_id: int
    tables: tuple[str, ...]
    models: type[MemberModels] | type[ReportModels]


MEMBERS = Group("read_models", 0x1ED6E2, MEMBER_TABLES, MemberModels)
REPORTS = Group("reports", 0x1ED6E3, REPORT_TABLES, ReportModels)
GROUPS = (MEMBERS, REPORTS)
