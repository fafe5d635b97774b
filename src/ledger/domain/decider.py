"""`decide(state, command, rules) -> events`: the ledger's rules, pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from .commands import (
    AdjustPoints,
    CancelBooking,
    Command,
    CompleteBooking,
    ConfirmBooking,
    ExpirePoints,
    RedeemPoints,
    RefundBooking,
)
from .errors import BookingNotFound, BookingStateConflict, InsufficientPoints, InvalidCommand, MemberNotFound
from .events import (
    DebtSettled,
    EarnReversed,
    Event,
    LotTake,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
)
from .rules import ProgramRules
from .state import MemberState
from .timeutil import add_months


YEAR_MIN, YEAR_MAX = 1900, 9000


def booking_lot_id(booking_id: str) -> str:
    return f"booking:{booking_id}"


def adjustment_lot_id(adjustment_id: str) -> str:
    return f"adjustment:{adjustment_id}"


def decide_streams(states: Mapping[str, MemberState], command: Command, rules: ProgramRules) -> dict[str, list[Event]]:
    """The events a command appends to each stream, given the states of every member it
    reads (`command.member_ids`); pure, as `decide`. A command of one member goes
    through `decide`: this is the thin adapter a command across members extends."""
    return {command.member_id: decide(states[command.member_id], command, rules)}


def net_earned(events: Iterable[Event]) -> int:
    """Points a booking's events earned (positive) or took back (negative): a reversal
    takes back what the booking earned, and the shortfall it could not take from any
    lot when that became a debt. What the booking-event answer reports."""
    points = 0
    for event in events:
        if isinstance(event, PointsEarned):
            points += event.points
        elif isinstance(event, EarnReversed):
            points -= event.points + (event.shortfall if event.shortfall_debited else 0)
    return points


def decide(state: MemberState, command: Command, rules: ProgramRules) -> list[Event]:
    if command.occurred_at.tzinfo is None:
        raise InvalidCommand("occurred_at must carry a time zone offset.")
    if not YEAR_MIN <= command.occurred_at.year <= YEAR_MAX:
        # Expiry and tier windows add and subtract months: keep well inside datetime's range.
        raise InvalidCommand(f"occurred_at must be between the years {YEAR_MIN} and {YEAR_MAX}.")
    match command:
        case ConfirmBooking():
            return [_earn(state, command, rules, status="pending")]
        case CompleteBooking():
            return _complete(state, command, rules)
        case CancelBooking():
            return [_reverse(state, command.booking_id, "cancelled", command.occurred_at, rules)]
        case RefundBooking():
            return [_reverse(state, command.booking_id, "refunded", command.occurred_at, rules)]
        case RedeemPoints():
            return [_redeem(state, command)]
        case AdjustPoints():
            return [_adjust(state, command, rules)]
        case ExpirePoints():
            return _expire(state, command)
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")


def _expire(state: MemberState, command: ExpirePoints) -> list[Event]:
    """The `lots_max` soonest lots due, in order of their dates: what is left of each
    pays off the member's debt first (`MemberState.debt_owed` says why), and the rest
    expires."""
    if command.lots_max < 1:
        raise InvalidCommand("An expiry must take at least one lot.")
    at = command.occurred_at
    # From the front of the state's expiry order: it walks only the lots it takes.
    due = state.due_lots(at, command.lots_max)
    debt = state.debt
    events: list[Event] = []
    for lot in due:
        settled = min(debt, lot.remaining)
        if settled:
            events.append(DebtSettled(occurred_at=at, lot_id=lot.lot_id, points=settled))
            debt -= settled
        if lot.remaining > settled:
            events.append(PointsExpired(occurred_at=at, lot_id=lot.lot_id, points=lot.remaining - settled))
    return events


def _earn(state: MemberState, command: ConfirmBooking | CompleteBooking, rules: ProgramRules, *, status: str) -> PointsEarned:
    if command.booking_id in state.bookings:
        raise BookingStateConflict(f"Booking {command.booking_id!r} already earned points for this member.")
    if command.amount < 0:
        raise InvalidCommand("A booking amount cannot be negative.")
    tier = _tier(state, command.occurred_at, rules)
    points, qualifying, breakdown = rules.compute_earn(
        product=command.product,
        amount=command.amount,
        currency=command.currency,
        tier=tier,
        first_booking=not state.bookings,
        at=command.occurred_at,
    )
    # Positional, in field order (keyword arguments cost a third more, on every earn):
    # occurred_at, lot_id, booking_id, product, amount, currency, points,
    # qualifying_points, status, expires_at, rules_version, breakdown.
    return PointsEarned(
        command.occurred_at,
        booking_lot_id(command.booking_id),
        command.booking_id,
        command.product,
        str(command.amount),
        command.currency,
        points,
        qualifying,
        status,  # type: ignore[arg-type]
        add_months(command.occurred_at, rules.expiry_months) if status == "active" else None,
        rules.version,
        breakdown,
    )


def _tier(state: MemberState, at: datetime, rules: ProgramRules) -> str:
    """The member's tier at `at`: `tier_status(state.qualifying_entries(), at, rules).tier`
    (a unit test holds the two to the same answer), without the list of entries and the
    parts of a `TierStatus` only the tier projection needs. Every earn asks it: the
    window's total comes from the state's sums by date, not from a walk of every entry."""
    total = 0
    if state.qualifying.size:  # else (a first booking) there is no window to work out
        total = state.qualifying.weight_between(add_months(at, -rules.tier_window_months), at)
    name = rules.tiers[0].name
    for tier in rules.tiers:
        if tier.threshold <= total:
            name = tier.name
    return name


def _complete(state: MemberState, command: CompleteBooking, rules: ProgramRules) -> list[Event]:
    lot_id = state.bookings.get(command.booking_id)
    if lot_id is None:
        return [_earn(state, command, rules, status="active")]
    lot = state.lot(lot_id)
    if lot.status != "pending":
        raise BookingStateConflict(f"Booking {command.booking_id!r} is already {lot.status}; it cannot complete again.")
    return [
        PendingPointsActivated(
            occurred_at=command.occurred_at,
            lot_id=lot_id,
            booking_id=command.booking_id,
            points=lot.remaining,
            qualifying_points=lot.qualifying,
            expires_at=add_months(command.occurred_at, rules.expiry_months),
        )
    ]


def _reverse(state: MemberState, booking_id: str, reason: str, at: datetime, rules: ProgramRules) -> EarnReversed:
    lot_id = state.bookings.get(booking_id)
    if lot_id is None:
        raise BookingNotFound(f"Booking {booking_id!r} never earned points for member {state.member_id!r}.")
    lot = state.lot(lot_id)  # a closed lot too: a refund may come after its points were spent
    if lot.status == "reversed":
        raise BookingStateConflict(f"Booking {booking_id!r} was already reversed.")
    takes: tuple[LotTake, ...] = ((lot_id, lot.remaining),) if lot.remaining else ()
    qualifying = lot.qualifying if lot.qualified_at is not None else 0  # what its tier entry counts
    return EarnReversed(
        occurred_at=at,
        booking_id=booking_id,
        reason=reason,  # type: ignore[arg-type]
        points=lot.remaining,
        lots=takes,
        pending_points=lot.remaining if lot.status == "pending" else 0,
        qualifying_points=qualifying,
        shortfall=lot.spent,
        shortfall_debited=rules.allow_negative_balance and lot.spent > 0,
    )


def _take_fifo(state: MemberState, points: int, at: datetime) -> tuple[LotTake, ...]:
    available = state.available(at)
    if points > available:
        raise InsufficientPoints(requested=points, available=max(available, 0))
    takes: list[LotTake] = []
    left = points
    for lot in state.fifo(at):  # lazily: only the lots it takes from are walked
        take = min(left, lot.remaining)
        takes.append((lot.lot_id, take))
        left -= take
        if left == 0:
            break
    assert left == 0, "available covered the request, so the lots must"
    return tuple(takes)


def _redeem(state: MemberState, command: RedeemPoints) -> PointsRedeemed:
    if not state.exists:
        raise MemberNotFound(state.member_id)
    if command.points <= 0:
        raise InvalidCommand("A redemption must be for a positive number of points.")
    return PointsRedeemed(
        occurred_at=command.occurred_at,
        redemption_id=command.redemption_id,
        points=command.points,
        reward_id=command.reward_id,
        reward_kind=command.reward_kind,
        lots=_take_fifo(state, command.points, command.occurred_at),
    )


def _adjust(state: MemberState, command: AdjustPoints, rules: ProgramRules) -> PointsAdjusted:
    if not state.exists:
        raise MemberNotFound(state.member_id)
    if command.points == 0 or abs(command.points) > rules.adjustment_points_max:
        raise InvalidCommand(f"An adjustment must be non-zero and at most {rules.adjustment_points_max} points either way.")
    if not command.reason.strip():
        raise InvalidCommand("An adjustment needs a reason.")
    credit = command.points > 0
    return PointsAdjusted(
        occurred_at=command.occurred_at,
        adjustment_id=command.adjustment_id,
        points=command.points,
        reason=command.reason,
        actor=command.actor,
        lot_id=adjustment_lot_id(command.adjustment_id) if credit else None,
        expires_at=add_months(command.occurred_at, rules.expiry_months) if credit else None,
        lots=() if credit else _take_fifo(state, -command.points, command.occurred_at),
    )
