"""Members (M2): a member's status, and the merge of a duplicate into a survivor. Pure,
as the decider.

Status. `active` spends and earns; `suspended` (a fraud review) earns, but redeems,
holds, captures and transfers nothing, in or out, and pays no share of a household
redemption; `closed` earns nothing new (a booking it never earned on, an activity and a
referral are refused; its anniversaries pass with nothing earned) and spends nothing
either; what it has is kept or forfeited per the rules' `on_close`.
Cancellations, refunds, amendments and completions of bookings it earned on apply in
every status (they are the booking system's facts, and take points back). Suspended
and closed go back to active; a closed member cannot be suspended. A merged member is
closed for good.

Merge. The survivor's stream gets every lot of the duplicate as it stands (open and
closed, with its dates, counters and booking), its bookings, its debt and its
reversible redemptions, so that a later cancellation, refund, amendment or reversal of
them applies to the survivor; the duplicate's stream records that it left, and is
closed with `merged_into`. Refused: a member into itself, a member unknown, merged,
closed or suspended (the fraud team clears it first), a duplicate with open holds
(released or captured first: they belong to a checkout in progress) or in a household
(it leaves first), and two members who share a booking, a lot or a redemption id (one
booking on both accounts is a double credit for support to take back first).
"""

from __future__ import annotations

from collections.abc import Mapping

from .commands import (
    AmendBooking,
    CancelBooking,
    CaptureHold,
    ChangeMemberStatus,
    Command,
    CompleteBooking,
    ConfirmBooking,
    ExpireHolds,
    ExpirePoints,
    HoldReward,
    MergeMembers,
    PlaceHold,
    RedeemPoints,
    RedeemReward,
    RefundBooking,
    TransferPoints,
)
from .earn import RecordActivity
from .enrolment import EraseMember
from .errors import InvalidCommand, MemberMerged, MemberNotFound, MemberStatusConflict, MovementConflict
from .events import STATUS_REASONS, Event, MemberMergedAway, MemberMergedIn, MemberStatusChanged, PointsAdjusted
from .rules import ProgramRules
from .state import MemberState, lot_row

STATUSES = ("active", "suspended", "closed")
# (from, to) a status may change; the same status again changes nothing.
TRANSITIONS = frozenset({("active", "suspended"), ("active", "closed"), ("suspended", "active"),
                         ("suspended", "closed"), ("closed", "active")})
# Commands a merged member's id still takes: they go to the survivor (see `Ledger`).
REDIRECTED = (ConfirmBooking, CompleteBooking, CancelBooking, RefundBooking, AmendBooking)
# Commands that spend or move a member's points: only an active member's.
SPENDING = (RedeemPoints, PlaceHold, CaptureHold, RedeemReward, HoldReward, TransferPoints)
CONFLICTING_IDS_SHOWN_MAX = 5


def close_adjustment_id(version: int) -> str:
    return f"close:{version}"


def check_member(state: MemberState, command: Command) -> None:
    """Refuse a command its member's status does not allow (see the module's text)."""
    if state.merged_into is not None:
        if isinstance(command, (ExpirePoints, ExpireHolds)):
            return  # the schedulers: a merged member has nothing left to expire
        if isinstance(command, EraseMember):
            return  # the duplicate's personal data is its own, to erase as any member's
        raise MemberMerged(state.member_id, state.merged_into)
    if state.status == "active":
        return
    if isinstance(command, SPENDING):
        raise MemberStatusConflict(f"Member {state.member_id!r} is {state.status}: it cannot redeem, hold or transfer "
                                   "points.", state.member_id, state.status)
    if state.status == "closed" and isinstance(command, (ConfirmBooking, CompleteBooking)) and (
            command.booking_id not in state.bookings):
        raise MemberStatusConflict(f"Member {state.member_id!r} is closed: it earns on no new booking.",
                                   state.member_id, state.status)
    if state.status == "closed" and isinstance(command, RecordActivity):  # the referrer's or the referred's
        raise MemberStatusConflict(f"Member {state.member_id!r} is closed: it earns on no new activity.",
                                   state.member_id, state.status)


def check_paying(state: MemberState) -> None:
    """A member paying a share of a household redemption must be active."""
    if state.merged_into is not None:
        raise MemberMerged(state.member_id, state.merged_into)
    if state.status != "active":
        raise MemberStatusConflict(f"Member {state.member_id!r} is {state.status}: the household redemption would draw "
                                   "on its points.", state.member_id, state.status)


def change_status(state: MemberState, command: ChangeMemberStatus, rules: ProgramRules) -> list[Event]:
    if not state.exists:
        raise MemberNotFound(state.member_id)
    if state.merged_into is not None:
        raise MemberMerged(state.member_id, state.merged_into)
    if command.status not in STATUSES:
        raise InvalidCommand(f"Unknown status {command.status!r}.", field="status")
    if command.reason not in STATUS_REASONS:
        raise InvalidCommand(f"Unknown reason {command.reason!r}.", field="reason")
    if command.status == state.status:
        return []  # already so: changing it again changes nothing
    if (state.status, command.status) not in TRANSITIONS:
        raise MemberStatusConflict(f"Member {state.member_id!r} is {state.status} and cannot become {command.status}.",
                                   state.member_id, state.status)
    at = command.occurred_at
    events: list[Event] = []
    if command.status == "closed":
        if state.holds:
            raise MemberStatusConflict(f"Member {state.member_id!r} has {len(state.holds)} open holds: they are "
                                       "captured or released before it closes.", state.member_id, state.status)
        available = state.available(at)
        if rules.on_close == "forfeit" and available > 0:
            from .decider import _take_fifo  # the decider imports this module: at call time
            events.append(PointsAdjusted(
                occurred_at=at, adjustment_id=close_adjustment_id(state.version), points=-available,
                reason="account_closed", actor=command.actor, lot_id=None, expires_at=None,
                lots=_take_fifo(state, available, at)))
    events.append(MemberStatusChanged(occurred_at=at, from_status=state.status, to_status=command.status,
                                      reason=command.reason, actor=command.actor))
    return events


def _shared(a: object, b: object) -> list[str]:
    return sorted(set(a) & set(b))[:CONFLICTING_IDS_SHOWN_MAX]  # type: ignore[call-overload]


def merge(states: Mapping[str, MemberState], command: MergeMembers) -> dict[str, list[Event]]:
    if command.duplicate_id == command.member_id:
        raise InvalidCommand("A member cannot be merged into itself.", field="member_id")
    if command.reason not in STATUS_REASONS:
        raise InvalidCommand(f"Unknown reason {command.reason!r}.", field="reason")
    survivor, duplicate = states[command.member_id], states[command.duplicate_id]
    for state in (survivor, duplicate):
        if not state.exists:
            raise MemberNotFound(state.member_id)
        if state.merged_into is not None:
            raise MemberMerged(state.member_id, state.merged_into)
        if state.status != "active":
            raise MemberStatusConflict(f"Member {state.member_id!r} is {state.status}: only active members merge.",
                                       state.member_id, state.status)
    dup_id = duplicate.member_id
    if duplicate.holds:
        raise MovementConflict(f"Member {dup_id!r} has {len(duplicate.holds)} open holds: capture or release them "
                               "before the merge.", member_id=dup_id, open_holds=len(duplicate.holds))
    if duplicate.household_id is not None:
        raise MovementConflict(f"Member {dup_id!r} is in household {duplicate.household_id!r}: it leaves it before "
                               "the merge.", member_id=dup_id, household_id=duplicate.household_id)
    lots = duplicate.all_lots()
    for what, ids in (("bookings", _shared(duplicate.bookings.keys(), survivor.bookings.keys())),
                      ("lots", _shared(lots, survivor.all_lots())),
                      ("redemptions", _shared(duplicate.redemptions.keys(), survivor.redemptions.keys()))):
        if ids:
            raise MovementConflict(f"Both members have the {what} {', '.join(map(repr, ids))}: support settles them "
                                   "before the merge.", conflicting=what)
    at = command.occurred_at
    open_lots = tuple(sorted((lot.lot_id, lot.remaining) for lot in duplicate.lots.values() if lot.remaining))
    away = MemberMergedAway(occurred_at=at, merged_into=survivor.member_id, reason=command.reason, actor=command.actor,
                            lots=open_lots, pending=duplicate.pending, debt=duplicate.debt,
                            qualifying=tuple(sorted({b for _, b, _ in duplicate.qualifying if b is not None})))
    moved = MemberMergedIn(
        occurred_at=at, from_member_id=dup_id, reason=command.reason, actor=command.actor,
        moved_lots=tuple(lot_row(lots[lot_id]) for lot_id in sorted(lots)),
        bookings=tuple(sorted(duplicate.bookings.items())), debt=duplicate.debt,
        redemptions=tuple((r.redemption_id, r.points, r.lots) for _, r in sorted(duplicate.redemptions.items())),
        catalogue=tuple((kind, movement_id, reward_id)
                        for (kind, movement_id), reward_id in sorted(duplicate.catalogue.items())),
    )
    return {survivor.member_id: [moved], dup_id: [away]}
