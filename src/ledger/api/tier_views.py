"""P4, tier policies: the tier route's answer, from the member's state (the tier in
force, what keeps it and what reaches the next one) and the domain's tier policy."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from ledger.domain import MemberState, ProgramRules, outlook, tier_status
from ledger.domain.tierpolicy import Need

from .schemas import TierGoal, TierNeed, TierView


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _goal(tier: str | None, needs: tuple[Need, ...], by: datetime | None) -> TierGoal | None:
    if tier is None or not needs:
        return None
    return TierGoal(tier=tier, met=any(n.need == 0 for n in needs), by=by, criteria=[
        TierNeed(criterion=n.criterion, have=_text(n.have), threshold=_text(n.threshold), need=_text(n.need), by=n.by)
        for n in needs])


def tier_view(member_id: str, state: MemberState, rules: ProgramRules, at: datetime, position: int) -> TierView:
    s = tier_status(state.qualifying_entries(), at, rules)
    o = outlook(state, rules, at)
    return TierView(member_id=member_id, tier=o.tier, qualifying_points=s.qualifying_points,
                    window_start=o.window_start, next_tier=o.next_tier,
                    points_to_next_tier=_points_to(rules, o.next_tier, s.qualifying_points),
                    reevaluation_date=s.reevaluation_date, position=position, tier_since=o.since,
                    qualifies_for=o.qualifies_for, keep=_goal(o.tier, o.keep, o.keep_by),
                    next=_goal(o.next_tier, o.reach, o.reach_by))


def _points_to(rules: ProgramRules, tier: str | None, points: int) -> int | None:
    """Points still missing for `tier` by its points criterion; None without one."""
    if tier is None:
        return None
    threshold = dict(rules.tier(tier).criteria).get("points")
    return None if threshold is None else max(int(threshold) - points, 0)
