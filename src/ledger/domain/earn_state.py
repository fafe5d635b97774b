"""What a member's state keeps for earn beyond bookings (P3): since when the member is
active (the first booking earn or activity, which anniversaries count from), the
anniversaries granted, the bookings a once-per-booking activity already earned on, who
referred the member, and the points granted per cap source per calendar month (UTC), so
that a cap is decided from the state alone and `decide` stays pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from immutables import Map

from ._frozen import fast_init
from .earn_rules import ANNIVERSARY_SOURCE, month_key
from .events import ActivityPointsEarned, AnniversaryBonusGranted, BookingEarnCounted, Event

_EMPTY: Map = Map()


@fast_init
@dataclass(frozen=True, slots=True)
class EarnState:
    since: datetime | None = None  # the first booking earn or activity
    anniversaries: frozenset[int] = frozenset()  # the years granted
    rewarded: Map = _EMPTY  # "<activity type>:<booking id>" -> the activity that earned on it
    referred_by: str | None = None  # the member who referred this one, once
    counts: Map = _EMPTY  # "<source>@<YYYY-MM>" -> points granted that month from that source

    def counted(self, source: str, month: str) -> int:
        return self.counts.get(f"{source}@{month}", 0)

    def counted_in_year(self, source: str, year: int) -> int:
        counts = self.counts
        return sum(counts.get(f"{source}@{year:04d}-{m:02d}", 0) for m in range(1, 13))


NO_EARN = EarnState()


def seen(earn: EarnState, at: datetime) -> EarnState:
    """`earn` with `at` taken into its `since`."""
    if earn.since is not None and earn.since <= at:
        return earn
    return EarnState(at, earn.anniversaries, earn.rewarded, earn.referred_by, earn.counts)


def _count(counts: Map, items: Any) -> Map:
    for key, points in items:
        if points:
            counts = counts.set(key, counts.get(key, 0) + points)
    return counts


def earn_applied(earn: EarnState, event: Event) -> EarnState:
    """The earn state after one of the P3 events."""
    match event:
        case ActivityPointsEarned():
            earn = seen(earn, event.occurred_at)
            rewarded, referred_by = earn.rewarded, earn.referred_by
            if event.booking_id is not None and event.points > 0:
                rewarded = rewarded.set(f"{event.activity_type}:{event.booking_id}", event.activity_id)
            if event.role == "referred":
                referred_by = event.counterpart_member_id
            counts = _count(earn.counts, ((f"{event.activity_type}@{month_key(event.occurred_at)}", event.points),))
            return EarnState(earn.since, earn.anniversaries, rewarded, referred_by, counts)
        case AnniversaryBonusGranted():
            counts = _count(earn.counts, ((f"{ANNIVERSARY_SOURCE}@{month_key(event.occurred_at)}", event.points),))
            return EarnState(earn.since if earn.since is not None else event.since,
                             earn.anniversaries | {event.year}, earn.rewarded, earn.referred_by, counts)
        case BookingEarnCounted():
            return EarnState(earn.since, earn.anniversaries, earn.rewarded, earn.referred_by,
                             _count(earn.counts, event.counted))
    raise AssertionError(f"not an earn event: {event!r}")


def earn_snapshot(earn: EarnState) -> dict[str, Any] | None:
    if earn == NO_EARN:
        return None
    return {"since": None if earn.since is None else earn.since.isoformat(), "anniversaries": sorted(earn.anniversaries),
            "rewarded": dict(earn.rewarded.items()), "referred_by": earn.referred_by, "counts": dict(earn.counts.items())}


def earn_from_snapshot(data: dict[str, Any] | None) -> EarnState:
    if data is None:
        return NO_EARN
    return EarnState(None if data["since"] is None else datetime.fromisoformat(data["since"]),
                     frozenset(data["anniversaries"]), Map(data["rewarded"]), data["referred_by"], Map(data["counts"]))
