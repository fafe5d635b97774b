"""The one function that decides a member's tier, used by the decider (the multiplier
in force at earn time) and by the tier projection (what the app shows)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ._frozen import fast_init
from .rules import NO_POINTS, ProgramRules
from .timeutil import add_months


@fast_init
@dataclass(frozen=True, slots=True)
class TierStatus:
    tier: str
    qualifying_points: int
    window_start: datetime
    next_tier: str | None
    points_to_next_tier: int | None
    reevaluation_date: datetime | None  # when the oldest qualifying points leave the window


def tier_status(entries: Iterable[tuple[datetime, int]], at: datetime, rules: ProgramRules) -> TierStatus:
    """Tier from the tier-qualifying points dated in the rolling window (window_start, at]."""
    window_start = add_months(at, -rules.tier_window_months)
    total, oldest = 0, None
    for earned_at, points in entries:
        if window_start < earned_at <= at:
            total += points
            oldest = earned_at if oldest is None or earned_at < oldest else oldest
    return tier_in_window(total, oldest, window_start, rules)


def tier_in_window(total: int, oldest: datetime | None, window_start: datetime, rules: ProgramRules) -> TierStatus:
    """The tier from what `tier_status` adds up in the window starting at `window_start`:
    the `total` of the qualifying points dated in it, and the `oldest` of their dates.
    For callers that add them up elsewhere, such as the tier projection in SQL."""
    current, following = rules.tiers[0], None
    for tier in rules.tiers:
        if tier.threshold == NO_POINTS:
            continue  # qualifies on other criteria only: see `ledger.domain.tierpolicy`
        if tier.threshold <= total:
            current = tier
        elif following is None:
            following = tier
    return TierStatus(
        tier=current.name,
        qualifying_points=total,
        window_start=window_start,
        next_tier=following.name if following else None,
        points_to_next_tier=following.threshold - total if following else None,
        reevaluation_date=add_months(oldest, rules.tier_window_months) if oldest is not None else None,
    )
