"""Earn beyond bookings (P3), pure: activities (shares, reviews, surveys, referrals),
the anniversary bonus, and earn caps.

Caps. A rule `{source, period: month|year, max_points}` bounds the points one member is
granted from `source` per calendar month or year, in UTC (the programme has one time
zone for its periods, UTC, as the transfer limits and promotions have). An earn over a
cap grants what fits and records the rest in its breakdown as `cap:<source>:<period>`
with the withheld points negated, so that a breakdown still adds up to the points. The
state counts what each source granted per month (`EarnState.counts`): activities and
anniversaries always, the parts of a booking's earn (base, tier, promotion,
first_booking_bonus) while a version with a cap on one of them is in force (a
`BookingEarnCounted` after the `PointsEarned`; nothing is counted, and nothing costs,
in a programme without such caps). A reversal (a cancellation or refund) does NOT give
the cap room back: a cap is a budget of what was issued in the period, so an earn
cancelled and booked again cannot cycle through it, and what a period granted is read
from its events alone. An amendment scales a booking's earn as a whole, what the cap
withheld included, and is not counted again. Caps limit points, not tier-qualifying
points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from ._frozen import fast_init
from .commands import Command
from .earn_rules import (
    ACTIVITY_TYPES, ANNIVERSARY_SOURCE, ANNIVERSARY_YEARS_MAX, CLOSED, SHARE_CHANNELS, booking_source, month_key,
)
from .earn_state import EarnState
from .enrolment import MemberNotEnrolled
from .errors import InvalidCommand, MemberNotFound, MovementConflict
from .events import ActivityPointsEarned, AnniversaryBonusGranted, BookingEarnCounted, Event, PointsEarned
from .rules import ProgramRules
from .state import MemberState
from .timeutil import add_months

REFERRAL = "referral.completed"
SHARE = "social.shared"


@fast_init
@dataclass(frozen=True, slots=True)
class RecordActivity(Command):
    """An activity of the member's: `activity_type` one of ACTIVITY_TYPES; a share names
    its `channel`; a referral the `referred_member_id`, whose stream it reads and writes
    too."""

    activity_id: str
    activity_type: str
    channel: str | None = None
    booking_id: str | None = None
    referred_member_id: str | None = None

    @property
    def member_ids(self) -> tuple[str, ...]:
        if self.referred_member_id is not None and self.referred_member_id != self.member_id:
            return (self.member_id, self.referred_member_id)
        return (self.member_id,)


@fast_init
@dataclass(frozen=True, slots=True)
class GrantAnniversary(Command):
    """The `year`-th anniversary bonus; `occurred_at` is the anniversary instant."""

    year: int


EARN_COMMANDS = (RecordActivity, GrantAnniversary)


def activity_lot_id(activity_id: str) -> str:
    return f"activity:{activity_id}"


def referred_lot_id(activity_id: str) -> str:
    return f"referral:{activity_id}"


def anniversary_lot_id(year: int) -> str:
    return f"anniversary:{year}"


def anniversary_at(since: datetime, year: int) -> datetime:
    """The `year`-th anniversary of `since`, counted in UTC (the calendar of every
    programme period): the same UTC wall-clock time `year` years on, 29 February on 28."""
    return add_months(since.astimezone(timezone.utc), 12 * year)


def decide_earn(states: Mapping[str, MemberState], command: Command, rules: ProgramRules) -> dict[str, list[Event]]:
    match command:
        case RecordActivity(activity_type="referral.completed"):
            return _referral(states, command, rules)
        case RecordActivity():
            state = states[command.member_id]
            if not state.exists and not rules.enrol_on_first_booking:
                raise MemberNotEnrolled(command.member_id)  # as a booking is: no stream begins here
            return {command.member_id: [_activity(state, command, rules)]}
        case GrantAnniversary():
            state = states[command.member_id]
            return {command.member_id: _anniversary(state, command, rules)}
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")


def capped(earn: EarnState, source: str, points: int, at: datetime,
           rules: ProgramRules) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(points granted, the cap entries of the breakdown) of `points` from `source` at `at`."""
    granted = points
    entries: list[tuple[str, int]] = []
    for cap in rules.caps:
        if cap.source != source or granted <= 0:
            continue
        if cap.period == "month":
            used = earn.counted(source, month_key(at))
        else:
            used = earn.counted_in_year(source, at.astimezone(timezone.utc).year)
        room = max(cap.max_points - used, 0)
        if granted > room:
            entries.append((cap.label, room - granted))
            granted = room
    return granted, tuple(entries)


def _lot(state: MemberState, lot_id: str, points: int, at: datetime,
         rules: ProgramRules) -> tuple[str | None, datetime | None]:
    if not points:
        return None, None
    if lot_id in state.lots or lot_id in state.closed:  # a new lot would take its place
        raise MovementConflict(f"Lot {lot_id!r} exists already.", lot_id=lot_id)
    return lot_id, add_months(at, rules.expiry_months)


def _check(command: RecordActivity) -> None:
    if command.activity_type not in ACTIVITY_TYPES:
        raise InvalidCommand(f"Unknown activity type {command.activity_type!r}.", field="type")
    if command.activity_type == SHARE and command.channel not in SHARE_CHANNELS:
        raise InvalidCommand(f"A share needs a channel, one of {', '.join(SHARE_CHANNELS)}.", field="channel")
    if command.activity_type == REFERRAL and not command.referred_member_id:
        raise InvalidCommand("A referral needs the referred member.", field="referred_member_id")


def _activity(state: MemberState, command: RecordActivity, rules: ProgramRules) -> ActivityPointsEarned:
    _check(command)
    kind, at = command.activity_type, command.occurred_at
    rule = rules.activities.get(kind)
    earned = rule.points if rule is not None else 0
    label = f"activity:{kind}"
    breakdown: list[tuple[str, int]] = [(label, earned)]
    if (earned and rule is not None and rule.per_booking_once and command.booking_id is not None
            and f"{kind}:{command.booking_id}" in state.earn.rewarded):
        breakdown.append((f"once_per_booking:{kind}", -earned))  # that trip earned its bonus already
        earned = 0
    points, caps = capped(state.earn, kind, earned, at, rules)
    lot_id, expires_at = _lot(state, activity_lot_id(command.activity_id), points, at, rules)
    return ActivityPointsEarned(at, command.activity_id, kind, "member", command.channel, command.booking_id, None,
                                points, lot_id, expires_at, rules.version, (*breakdown, *caps))


def _has_completed_booking(state: MemberState) -> bool:
    for lot_id in state.bookings.values():
        if state.lot(lot_id).status == "active":
            return True
    return False


def _referral(states: Mapping[str, MemberState], command: RecordActivity,
              rules: ProgramRules) -> dict[str, list[Event]]:
    """Both earn, once per referred member, when the referred member's first booking has
    completed (the message says the referral completed): the referrer `points`, the
    referred member `referred_points`, each under its own counters' caps."""
    _check(command)
    referred_id = command.referred_member_id
    assert referred_id is not None
    if referred_id == command.member_id:
        raise InvalidCommand("A member cannot refer itself.", field="referred_member_id")
    referrer, referred = states[command.member_id], states[referred_id]
    if not referred.exists:
        raise MemberNotFound(referred_id)
    if referred.earn.referred_by is not None:
        raise MovementConflict(f"Member {referred_id!r} was referred already, by {referred.earn.referred_by!r}; a "
                               "member earns a referral once.", referred_member_id=referred_id)
    if not _has_completed_booking(referred):
        raise MovementConflict(f"Member {referred_id!r} has no completed booking yet: a referral earns when the "
                               "referred member's first booking completes.", referred_member_id=referred_id)
    at, kind = command.occurred_at, REFERRAL
    rule = rules.activities.get(kind)
    label = f"activity:{kind}"
    events: dict[str, list[Event]] = {}
    for state, role, earned, lot_id, other in (
        (referrer, "referrer", rule.points if rule else 0, activity_lot_id(command.activity_id), referred_id),
        (referred, "referred", rule.referred_points if rule else 0, referred_lot_id(command.activity_id),
         command.member_id),
    ):
        points, caps = capped(state.earn, kind, earned, at, rules)
        lot, expires_at = _lot(state, lot_id, points, at, rules)
        events[state.member_id] = [ActivityPointsEarned(
            at, command.activity_id, kind, role, None, command.booking_id, other, points, lot, expires_at,  # type: ignore[arg-type]
            rules.version, ((label, earned), *caps))]
    return events


def _anniversary(state: MemberState, command: GrantAnniversary, rules: ProgramRules) -> list[Event]:
    since = state.earn.since
    if since is None:
        raise InvalidCommand(f"Member {state.member_id!r} has no activity to count anniversaries from.")
    if not 1 <= command.year <= ANNIVERSARY_YEARS_MAX:
        raise InvalidCommand(f"An anniversary is a year from 1 to {ANNIVERSARY_YEARS_MAX}.")
    if command.year in state.earn.anniversaries:
        return []  # granted already: once per anniversary, whoever asks again
    due = anniversary_at(since, command.year)
    if command.occurred_at < due:
        raise InvalidCommand(f"The anniversary {command.year} of member {state.member_id!r} is not due before {due}.")
    earned = rules.anniversary.points(command.year) if rules.anniversary is not None else 0
    at = command.occurred_at
    if state.status == "closed" and earned:
        # The year passes with nothing earned, so the scheduler does not find it due again.
        return [AnniversaryBonusGranted(at, command.year, since, 0, None, None, rules.version,
                                        ((f"anniversary:{command.year}", earned), (CLOSED, -earned)))]
    points, caps = capped(state.earn, ANNIVERSARY_SOURCE, earned, at, rules)
    lot_id, expires_at = _lot(state, anniversary_lot_id(command.year), points, at, rules)
    return [AnniversaryBonusGranted(at, command.year, since, points, lot_id, expires_at, rules.version,
                                    ((f"anniversary:{command.year}", earned), *caps))]


def cap_booking(state: MemberState, earned: PointsEarned, rules: ProgramRules) -> list[Event]:
    """A booking's earn under the caps in force on its parts: the `PointsEarned` with
    what each cap withheld in its breakdown, and the `BookingEarnCounted` of what each
    capped source granted. Only the earn itself, as it is decided (never an amendment)."""
    if not rules.booking_caps:
        return [earned]
    at = earned.occurred_at
    month = month_key(at)
    capped_sources = {cap.source for cap in rules.booking_caps}
    granted: dict[str, int] = {}
    breakdown: list[tuple[str, int]] = []
    withheld: list[tuple[str, int]] = []
    earn = state.earn
    for label, points in earned.breakdown:
        breakdown.append((label, points))
        source = booking_source(label)
        if source not in capped_sources:
            continue
        # Several labels of one source (two promotions) share its room.
        counted = EarnState(earn.since, earn.anniversaries, earn.rewarded, earn.referred_by,
                            earn.counts.set(f"{source}@{month}", earn.counted(source, month) + granted.get(source, 0)))
        allowed, caps = capped(counted, source, points, at, rules)
        withheld.extend(caps)
        granted[source] = granted.get(source, 0) + allowed
    total = earned.points + sum(p for _, p in withheld)
    merged: dict[str, int] = {}
    for label, points in withheld:
        merged[label] = merged.get(label, 0) + points
    event = PointsEarned(
        earned.occurred_at, earned.lot_id, earned.booking_id, earned.product, earned.amount, earned.currency, total,
        earned.qualifying_points, earned.status, earned.expires_at, earned.rules_version,
        (*breakdown, *merged.items()), earned.fx_rate, earned.converted_amount, earned.tier,
        earned.nights, earned.segments, earned.spend)
    counted_items = tuple((f"{s}@{month}", p) for s, p in sorted(granted.items()) if p)
    return [event, BookingEarnCounted(at, earned.booking_id, counted_items)] if counted_items else [event]
