"""Rules of earn beyond bookings (P3): points per activity, the anniversary bonus, and
earn caps per member per calendar period and per source. Pure data, read by
`ProgramRules.from_dict` and used by `ledger.domain.earn`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

ACTIVITY_TYPES = ("social.shared", "referral.completed", "review.submitted", "survey.completed")
SHARE_CHANNELS = ("wechat", "weibo", "xiaohongshu", "douyin", "facebook", "instagram", "x", "other")
# The parts of a booking's earn, by the label its breakdown gives them (`base:...`,
# `tier:...`, `promotion:...`, `first_booking_bonus`).
BOOKING_SOURCES = ("base", "tier", "promotion", "first_booking_bonus")
ANNIVERSARY_SOURCE = "anniversary"
CLOSED = "member_closed"  # a breakdown entry: what a closed member's anniversary did not earn
CAP_SOURCES = (*BOOKING_SOURCES, *ACTIVITY_TYPES, ANNIVERSARY_SOURCE)
CAP_PERIODS = ("month", "year")
ANNIVERSARY_YEARS_MAX = 100


@dataclass(frozen=True)
class ActivityRule:
    """What one activity of a type earns. `per_booking_once`: an activity naming a booking
    that already earned one of this type earns nothing more (it is still recorded).
    `referred_points`: for `referral.completed`, what the referred member earns (the
    referrer earns `points`)."""

    points: int
    per_booking_once: bool = False
    referred_points: int = 0


@dataclass(frozen=True)
class AnniversaryRule:
    """The bonus of the n-th anniversary of a member's first activity: `points_by_year[n]`
    when listed; else `per_year * n`, at most `points_max` (0: no most) when `per_year`
    is set; else the points of the latest year listed before n (0 before the first)."""

    points_by_year: tuple[tuple[int, int], ...] = ()
    per_year: int = 0
    points_max: int = 0

    def points(self, year: int) -> int:
        listed = dict(self.points_by_year)
        if year in listed:
            return listed[year]
        if self.per_year:
            points = self.per_year * year
            return min(points, self.points_max) if self.points_max else points
        earlier = [y for y in listed if y < year]
        return listed[max(earlier)] if earlier else 0


@dataclass(frozen=True)
class Cap:
    """At most `max_points` from `source` per member per calendar `period` (UTC)."""

    source: str
    period: str  # month | year
    max_points: int

    @property
    def label(self) -> str:
        return f"cap:{self.source}:{self.period}"


def month_key(at: datetime) -> str:
    """The calendar month of `at` in UTC, as the cap counters key it: `2026-11`."""
    utc = at.astimezone(timezone.utc)
    return f"{utc.year:04d}-{utc.month:02d}"


def booking_source(label: str) -> str:
    """The cap source of a booking earn's breakdown label."""
    return label.split(":", 1)[0]


def activities_from(raw: Mapping[str, Any]) -> dict[str, ActivityRule]:
    unknown = set(raw) - set(ACTIVITY_TYPES)
    if unknown:
        raise ValueError(f"Rules: unknown activity type(s): {', '.join(sorted(unknown))}.")
    return {kind: ActivityRule(int(r.get("points", 0)), bool(r.get("per_booking_once", False)),
                               int(r.get("referred_points", 0))) for kind, r in raw.items()}


def anniversary_from(raw: Mapping[str, Any] | None) -> AnniversaryRule | None:
    if raw is None:
        return None
    by_year = tuple(sorted((int(y), int(p)) for y, p in raw.get("points_by_year", {}).items()))
    return AnniversaryRule(by_year, int(raw.get("per_year", 0)), int(raw.get("points_max", 0)))


def caps_from(raw: list[Mapping[str, Any]]) -> tuple[Cap, ...]:
    caps = tuple(Cap(str(c["source"]), str(c["period"]), int(c["max_points"])) for c in raw)
    for cap in caps:
        if cap.source not in CAP_SOURCES or cap.period not in CAP_PERIODS or cap.max_points < 0:
            raise ValueError(f"Rules: cap {cap!r} names an unknown source or period, or a negative most.")
    return caps
