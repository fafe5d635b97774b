"""The projections together: what the live runner and a rebuild apply each event to."""

from __future__ import annotations

import asyncpg

from ledger.domain import HOUSEHOLD_STREAM_PREFIX, REWARD_STREAM_PREFIX, Rules
from ledger.store import StoredEvent

from . import balances, expiry, holds, households, members, rewards, segments, tiers
from .balances import Balances
from .expiry import ExpirySchedule
from .holds import HoldBook
from .households import HouseholdMembers
from .members import MemberProfiles
from .rewards import RewardCatalogue
from .segments import SegmentBookings
from .tiers import TierCache, TierQualifying, write_tier_status

TABLES = ("balances", "tier_qualifying", "tier_status", "expiry_lots", "holds", "household_members",
          "segment_bookings", "segment_members", "rewards",
          "member_profiles")  # Members (M1)
COLUMNS = {
    "balances": balances.COLUMNS,
    "tier_qualifying": tiers.QUALIFYING_COLUMNS,
    "tier_status": tiers.STATUS_COLUMNS,
    "expiry_lots": expiry.COLUMNS,
    "holds": holds.COLUMNS,
    "household_members": households.COLUMNS,
    "segment_bookings": segments.BOOKING_COLUMNS,
    "segment_members": segments.MEMBER_COLUMNS,
    "rewards": rewards.COLUMNS,
    "member_profiles": members.COLUMNS,  # Members (M1)
}


class ReadModels:
    """The projections' deltas for one page. The balances and the tier rows ask the
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
        self.segments = SegmentBookings(f"segment_bookings{suffix}", f"segment_members{suffix}")
        self.rewards = RewardCatalogue(f"rewards{suffix}")
        self.members = MemberProfiles(f"member_profiles{suffix}")  # Members (M1)

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
        self.segments.apply(stored)
        self.members.apply(stored)

    async def write(self, conn: asyncpg.Connection, rules: Rules, tiers: TierCache | None = None) -> None:
        """Write the page's deltas, and the tier of every member it may have moved: from
        `tiers`' rows when given (the live runner's; it updates them), else summed by
        the server."""
        if tiers is not None and (tiers.members_max == 0 or self.suffix):
            tiers = None  # off, or tables being rebuilt: the server adds the rows up
        # Both read what the page's lots and rows were before it: first.
        new_members = await self.balances.write(conn)
        await self.qualifying.resolve(conn)
        changes = self.qualifying.changes() if tiers is not None else {}
        await self.qualifying.write(conn)
        await self.expiry.write(conn)
        await self.holds.write(conn)
        await self.households.write(conn)
        await self.segments.write(conn)
        await self.rewards.write(conn)
        await self.members.write(conn)
        as_of = self.qualifying.as_of(new_members)
        if tiers is not None:
            await tiers.write(conn, as_of, changes, new_members, rules)
        else:
            await write_tier_status(
                conn, as_of, rules,
                qualifying_table=f"tier_qualifying{self.suffix}", status_table=f"tier_status{self.suffix}",
            )
        self.qualifying.clear_members()

    def completed(self, rules: Rules, keep: str | None = None) -> dict[str, list[tuple]]:
        """The final rows, by table (without the suffix), of the members whose every event
        has been applied: all but `keep`, whose deltas stay for the next page. Only for a
        replay in stream order, where each member's events come together."""
        qualifying, statuses = self.qualifying.completed(rules, keep)
        bookings, members = self.segments.completed(keep)
        return {
            "balances": self.balances.completed(keep),
            "tier_qualifying": qualifying,
            "tier_status": statuses,
            "expiry_lots": self.expiry.completed(keep),
            "holds": self.holds.completed(keep),
            "household_members": self.households.completed(keep),
            "segment_bookings": bookings,
            "segment_members": members,
            "rewards": self.rewards.completed(keep),
            "member_profiles": self.members.completed(keep),
        }
