"""The reward catalogue, pure: rewards defined as data on streams of their own
(`reward/<id>`, see `reward_stream_id`), priced by the member's tier, with stock.

A redemption or hold of a catalogue reward is one command across the member's stream
and the reward's: the member's `PointsRedeemed` or `PointsHeld` with a
`CatalogueRewardTaken` (what priced it), and the reward's `RewardStockTaken`. Both
streams are appended in one transaction, each with the version it was decided on, so
two redemptions of the last unit cannot both commit: the second is decided again on the
fresh reward state and refused as out of stock. Stock is a count of units, one per
redemption or hold:

- a hold's unit comes back when the hold is released or expires (`RewardStockReturned`),
  and stays with the redemption its capture makes (a catalogue hold is captured whole);
- a redemption's unit comes back when the redemption is reversed in full (the reversal
  that brings what is left to reverse to zero); a partial reversal (a goodwill refund of
  some of the points) keeps the reward with the member, and its unit taken;
- so `taken` counts the open holds and the redemptions not reversed in full, and
  `taken + remaining == stock` always holds, with `remaining` never below zero.

Releasing, expiring or reversing a catalogue movement reads the reward's stream too
(the command's `reward_streams`); without it the decision is refused, so that a unit of
stock can never be lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from math import floor
from typing import Literal

from .commands import (
    Command,
    DefineReward,
    ExpireHolds,
    HoldReward,
    PlaceHold,
    RedeemPoints,
    RedeemReward,
    ReleaseHold,
    ReverseRedemption,
    is_household_stream,
    is_reward_stream,
    reward_stream_id,
)
from .decider import (
    _check_free_form,
    _expire_holds,
    _hold,
    _open_hold,
    _redeem,
    _release,
    _reverse_redemption,
    _tier,
    decide,
)
from .errors import InvalidCommand, MemberNotFound, MovementConflict, RewardNotFound, RewardUnavailable
from .events import CatalogueRewardTaken, Event, HoldReleased, RewardDefined, RewardStockReturned, RewardStockTaken
from .rules import ProgramRules
from .state import MemberState, RewardState, _reward_defined

REWARD_KINDS = ("travel_product", "hotel_discount", "airline_miles", "upgrade", "voucher", "other")
MILES_KIND = "airline_miles"

CATALOGUE_COMMANDS = (DefineReward, RedeemReward, HoldReward, ReleaseHold, ExpireHolds, ReverseRedemption)


def decide_catalogue(states: Mapping[str, MemberState], command: Command,
                     rules: ProgramRules) -> dict[str, list[Event]]:
    match command:
        case DefineReward():
            return {command.member_id: define_reward(states[command.member_id], command)}
        case RedeemReward() | HoldReward():
            return _take(states[command.member_id], states[reward_stream_id(command.reward_id)], command, rules)
        case ReleaseHold():
            return _release_hold(states[command.member_id], command)
        case ExpireHolds():
            return _expire(states[command.member_id], command)
        case ReverseRedemption():
            return _reverse(states[command.member_id], command, rules)
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")


def define_reward(stream: MemberState, command: DefineReward) -> list[Event]:
    """The reward's definition replaced as a whole; nothing if it is the same."""
    if stream.member_id != reward_stream_id(command.reward_id):
        raise InvalidCommand(f"A definition of reward {command.reward_id!r} goes to its own stream.")
    _check_definition(command)
    taken = stream.reward.taken if stream.reward is not None else 0
    if command.stock is not None and command.stock < taken:
        raise MovementConflict(f"Reward {command.reward_id!r} has {taken} units taken by open holds and redemptions; "
                               f"its stock cannot be {command.stock}.", reward_id=command.reward_id, taken=taken)
    event = RewardDefined(
        occurred_at=command.occurred_at, reward_id=command.reward_id, kind=command.kind, name_en=command.name_en,
        name_zh_cn=command.name_zh_cn, points_by_tier=command.points_by_tier, stock=command.stock,
        available_from=command.available_from, available_to=command.available_to,
        miles_ratio=None if command.miles_ratio is None else str(command.miles_ratio), partner=command.partner,
        actor=command.actor,
    )
    if stream.reward is not None and _reward_defined(event, taken) == stream.reward:
        return []  # the same definition again: nothing changed
    return [event]


def _check_definition(command: DefineReward) -> None:
    if command.kind not in REWARD_KINDS:
        raise InvalidCommand(f"Unknown reward kind {command.kind!r}.")
    tiers = [tier for tier, _ in command.points_by_tier]
    if not tiers or len(set(tiers)) != len(tiers):
        raise InvalidCommand("A reward needs a price for one tier at least, and one price per tier.")
    if any(points <= 0 for _, points in command.points_by_tier):
        raise InvalidCommand("A reward's prices must be positive numbers of points.")
    if command.stock is not None and command.stock < 0:
        raise InvalidCommand("A reward's stock cannot be negative.")
    if command.available_from is not None and command.available_to is not None:
        if command.available_to <= command.available_from:
            raise InvalidCommand("A reward's window must end after it starts.")
    if command.kind == MILES_KIND:
        if command.miles_ratio is None or command.miles_ratio <= 0 or not command.partner:
            raise InvalidCommand("An airline miles reward needs a positive miles_ratio and its partner airline.")
    elif command.miles_ratio is not None:
        raise InvalidCommand("Only an airline miles reward has a miles_ratio.")


def price_for(reward: RewardState, tier: str, rules: ProgramRules) -> int | None:
    """The reward's price for `tier`: its own, or else that of the nearest lower tier of
    the programme that has one (a tier the catalogue leaves out pays as the tier below);
    None: the reward is not offered to the tier."""
    prices = dict(reward.points_by_tier)
    if tier in prices:
        return prices[tier]
    names = [t.name for t in rules.tiers]
    if tier in names:
        for lower in reversed(names[: names.index(tier)]):
            if lower in prices:
                return prices[lower]
    return None


def unavailable(reward: RewardState, at: datetime) -> str | None:
    """Why the reward cannot be had at `at` (see `RewardUnavailable`), or None."""
    if reward.available_from is not None and at < reward.available_from:
        return "not_yet_available"
    if reward.available_to is not None and at >= reward.available_to:
        return "no_longer_available"
    if reward.remaining is not None and reward.remaining <= 0:
        return "out_of_stock"
    return None


def miles_for(reward: RewardState, points: int) -> int | None:
    """Airline miles for `points` at the reward's ratio, rounded down; None: no miles reward."""
    return None if reward.miles_ratio is None else floor(points * Decimal(reward.miles_ratio))


def member_tier(member: MemberState, at: datetime, rules: ProgramRules) -> str:
    """The member's tier at `at`, as an earn reads it."""
    return _tier(member, at, rules)


_REASONS = {
    "not_yet_available": "is not available before {from_}",
    "no_longer_available": "was available until {to}",
    "out_of_stock": "is out of stock",
}


def _take(member: MemberState, stream: MemberState, command: RedeemReward | HoldReward,
          rules: ProgramRules) -> dict[str, list[Event]]:
    if is_reward_stream(member.member_id) or is_household_stream(member.member_id):
        raise InvalidCommand(f"{member.member_id!r} is not a member.")
    if not member.exists:
        raise MemberNotFound(member.member_id)
    reward = stream.reward
    if reward is None:
        raise RewardNotFound(f"No reward {command.reward_id!r} is in the catalogue.", reward_id=command.reward_id)
    at = command.occurred_at
    reason = unavailable(reward, at)
    if reason is not None:
        why = _REASONS[reason].format(from_=reward.available_from, to=reward.available_to)
        raise RewardUnavailable(f"Reward {reward.reward_id!r} {why}.", reason, reward_id=reward.reward_id)
    tier = member_tier(member, at, rules)
    points = price_for(reward, tier, rules)
    if points is None:
        raise RewardUnavailable(f"Reward {reward.reward_id!r} is not offered to the {tier!r} tier.",
                                "not_offered_to_tier", reward_id=reward.reward_id, tier=tier)
    first: Event
    if isinstance(command, RedeemReward):
        movement, movement_id = "redemption", command.redemption_id
        first = _redeem(member, RedeemPoints(member.member_id, at, movement_id, points, reward.reward_id, reward.kind))
    else:
        movement, movement_id = "hold", command.hold_id
        first = _hold(member, PlaceHold(member.member_id, at, movement_id, points, reward.reward_id, reward.kind,
                                        command.expires_at))
    miles = miles_for(reward, points)
    kind: Literal["redemption", "hold"] = movement  # type: ignore[assignment]
    taken = CatalogueRewardTaken(at, kind, movement_id, reward.reward_id, reward.kind, tier, points, miles,
                                 reward.partner)
    stock = RewardStockTaken(at, reward.reward_id, member.member_id, kind, movement_id, tier, points, miles)
    return {member.member_id: [first, taken], stream.member_id: [stock]}


def _returned(member: MemberState, reward_id: str, movement_id: str, reason: str, at: datetime) -> RewardStockReturned:
    return RewardStockReturned(occurred_at=at, reward_id=reward_id, member_id=member.member_id,
                               movement_id=movement_id, reason=reason)  # type: ignore[arg-type]


def _release_hold(member: MemberState, command: ReleaseHold) -> dict[str, list[Event]]:
    at = command.occurred_at
    hold = _open_hold(member, command.hold_id, at)
    reward_id = member.catalogue.get(("hold", hold.hold_id))
    if reward_id is None:
        return {member.member_id: [_release(member, hold, "released", at)]}
    if reward_stream_id(reward_id) not in command.reward_streams:
        _check_free_form(member, "hold", hold.hold_id)
    return {member.member_id: [_release(member, hold, "released", at)],
            reward_stream_id(reward_id): [_returned(member, reward_id, hold.hold_id, "released", at)]}


def _expire(member: MemberState, command: ExpireHolds) -> dict[str, list[Event]]:
    events = _expire_holds(member, command)
    out: dict[str, list[Event]] = {member.member_id: events} if events else {}
    for event in events:
        assert isinstance(event, HoldReleased)
        reward_id = member.catalogue.get(("hold", event.hold_id))
        if reward_id is not None:  # `_expire_holds` released it: its stream is read
            out.setdefault(reward_stream_id(reward_id), []).append(
                _returned(member, reward_id, event.hold_id, "expired", command.occurred_at))
    return out


def _reverse(member: MemberState, command: ReverseRedemption, rules: ProgramRules) -> dict[str, list[Event]]:
    reward_id = member.catalogue.get(("redemption", command.redemption_id))
    if reward_id is None:
        return {member.member_id: decide(member, command, rules)}
    if reward_stream_id(reward_id) not in command.reward_streams:
        _check_free_form(member, "redemption", command.redemption_id)
    reversed_ = _reverse_redemption(member, command, rules)
    out: dict[str, list[Event]] = {member.member_id: [reversed_]}
    if reversed_.points == member.redemptions[command.redemption_id].reversible:
        out[reward_stream_id(reward_id)] = [_returned(member, reward_id, command.redemption_id, "reversed",
                                                      command.occurred_at)]
    return out
