"""`decide(state, command, rules) -> events`: the ledger's rules, pure."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from math import floor

from .commands import (
    AdjustPoints,
    AmendBooking,
    CaptureHold,
    ExpireHolds,
    PlaceHold,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
    CancelBooking,
    Command,
    CompleteBooking,
    ConfirmBooking,
    ExpirePoints,
    RedeemPoints,
    RefundBooking,
    AddHouseholdMember,
    CreateHousehold,
    RedeemForHousehold,
    RemoveHouseholdMember,
    household_stream_id,
    is_household_stream,
    reward_stream_id,
    DefineReward,
    ReviewTier,
)
from .errors import (
    HouseholdChanged,
    HouseholdInsufficientPoints,
    HouseholdMemberNotFound,
    HouseholdNotFound,
    BookingNotFound,
    BookingStateConflict,
    HoldNotFound,
    InsufficientPoints,
    InvalidCommand,
    LimitExceeded,
    MemberNotFound,
    MovementConflict,
    RedemptionNotFound,
)
from .events import (
    BookingAmended,
    DebtSettled,
    HoldCaptured,
    HoldReleased,
    PointsHeld,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
    EarnReversed,
    Event,
    LotTake,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    HouseholdCreated,
    HouseholdJoined,
    HouseholdLeft,
    HouseholdMemberAdded,
    HouseholdMemberRemoved,
    HouseholdPointsRedeemed,
    PointsRedeemedForHousehold,
)
from .enrolment import MEMBER_COMMANDS, MemberNotEnrolled, decide_member
from .rules import CENT, ProgramRules
from .state import Hold, Lot, MemberState, evolve, transfer_year
from .tierpolicy import points_in_window, review, tier_in_force, upgrade
from .timeutil import add_months


YEAR_MIN, YEAR_MAX = 1900, 9000
# The most points a member's open lots (active, pending and held) may hold: the largest
# integer a JSON number carries exactly (2^53 - 1), far below PostgreSQL's bigint, which
# the read models sum in. The rules' schema alone allows an earn of 2 x 10^17 points (the
# largest amount converted at the smallest exchange rate), and balances past the bigint
# stopped the projections on that event for good; an earn past this bound is refused.
POINTS_HELD_MAX = 2**53 - 1


def booking_lot_id(booking_id: str) -> str:
    return f"booking:{booking_id}"


def adjustment_lot_id(adjustment_id: str) -> str:
    return f"adjustment:{adjustment_id}"


def decide_streams(states: Mapping[str, MemberState], command: Command, rules: ProgramRules) -> dict[str, list[Event]]:
    """The events a command appends to each stream, given the states of every member it
    reads (`command.member_ids`); pure, as `decide`. A command of one member goes
    through `decide`; a transfer reads and writes both members."""
    if isinstance(command, MergeMembers):
        _check_time(command)
        return merge(states, command)
    if isinstance(command, TransferPoints):
        _check_time(command)
        check_member(states[command.member_id], command)
        check_member(states[command.to_member_id], command)
        return _transfer(states[command.member_id], states[command.to_member_id], command, rules)
    if isinstance(command, (CreateHousehold, AddHouseholdMember, RemoveHouseholdMember, RedeemForHousehold)):
        _check_time(command)
        for member_id in command.member_ids[1:]:
            member = states[member_id]
            if member.merged_into is not None:
                raise MemberMerged(member_id, member.merged_into)
        household_events = _household(states, command, rules)
        if isinstance(command, RedeemForHousehold):
            for member_id in household_events:
                if member_id != command.member_id:
                    check_paying(states[member_id])
        return household_events
    if isinstance(command, CATALOGUE_COMMANDS):
        _check_time(command)
        member = states[command.member_id]
        if member.status != "active" or member.merged_into is not None:
            check_member(member, command)
        return decide_catalogue(states, command, rules)
    if isinstance(command, EARN_COMMANDS):  # P3
        _check_time(command)
        # A referral reads two streams, neither of which may be a merged duplicate's (its
        # points went to the survivor, and nothing reads its stream any more) or a closed
        # member's (see `check_member`).
        for member_id in command.member_ids:
            check_member(states[member_id], command)
        return decide_earn(states, command, rules)
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
        elif isinstance(event, BookingAmended):
            if event.points > 0:
                points += event.points
            else:
                points -= sum(p for _, p in event.lots) + (event.shortfall if event.shortfall_debited else 0)
    return points


def _check_time(command: Command) -> None:
    if command.occurred_at.tzinfo is None:
        raise InvalidCommand("occurred_at must carry a time zone offset.")
    if not YEAR_MIN <= command.occurred_at.year <= YEAR_MAX:
        # Expiry and tier windows add and subtract months: keep well inside datetime's range.
        raise InvalidCommand(f"occurred_at must be between the years {YEAR_MIN} and {YEAR_MAX}.")


def decide(state: MemberState, command: Command, rules: ProgramRules) -> list[Event]:
    _check_time(command)
    if (state.status != "active" or state.merged_into is not None) and not isinstance(command, ChangeMemberStatus):
        check_member(state, command)
    match command:
        case ConfirmBooking():
            return cap_booking(state, _earn(state, command, rules, status="pending"), rules)
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
        case AmendBooking():
            return _amend(state, command, rules)
        case PlaceHold():
            return [_hold(state, command)]
        case CaptureHold():
            return _capture(state, command)
        case ReleaseHold():
            hold = _open_hold(state, command.hold_id, command.occurred_at)
            _check_free_form(state, "hold", hold.hold_id)
            return [_release(state, hold, "released", command.occurred_at)]
        case ExpireHolds():
            return _expire_holds(state, command)
        case DefineReward():  # one stream, the reward's: the handler asks `decide` for it
            return define_reward(state, command)
        case ReverseRedemption():
            _check_free_form(state, "redemption", command.redemption_id)
            return [_reverse_redemption(state, command, rules)]
        # Members (M2)
        case ChangeMemberStatus():
            return change_status(state, command, rules)
        case ReviewTier():
            return review(state, command.occurred_at, rules)
        case _ if isinstance(command, EARN_COMMANDS):  # P3: an activity of one member, an anniversary
            return decide_earn({state.member_id: state}, command, rules)[state.member_id]
        # Members (M1): enrolment, profile changes, erasure.
        case _ if isinstance(command, MEMBER_COMMANDS):
            return decide_member(state, command)
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")


def _check_free_form(state: MemberState, movement: str, movement_id: str) -> None:
    """A hold or redemption of a catalogue reward gives its unit of stock back when it is
    released or reversed, so its command must read the reward's stream too."""
    reward_id = state.catalogue.get((movement, movement_id))
    if reward_id is not None:
        raise InvalidCommand(f"The {movement} {movement_id!r} is of catalogue reward {reward_id!r}: its command "
                             f"must read the stream {reward_stream_id(reward_id)!r}.")


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
    if not state.exists and not rules.enrol_on_first_booking:
        raise MemberNotEnrolled(command.member_id)
    if command.amount < 0:
        raise InvalidCommand("A booking amount cannot be negative.")
    tier = _tier(state, command.occurred_at, rules)
    amount, currency, fx = command.amount, command.currency, None
    if command.product in rules.earn_rates and currency not in rules.earn_rates[command.product]:
        # Converted at the rate in force (see ProgramRules.conversion), which the event
        # records: a partial refund or an amendment scales the booking's points by its
        # amounts in its own currency, so it keeps this rate whatever rates come later.
        fx = rules.conversion(command.product, amount, currency)
        if fx is not None:
            amount, currency = fx[0], rules.programme_currency
    points, qualifying, breakdown = rules.compute_earn(
        product=command.product,
        amount=amount,
        currency=currency,
        tier=tier,
        first_booking=not state.bookings,
        at=command.occurred_at,
    )
    _check_points_held(state, points)
    # Positional, in field order (keyword arguments cost a third more, on every earn):
    # occurred_at, lot_id, booking_id, product, amount, currency, points,
    # qualifying_points, status, expires_at, rules_version, breakdown, fx_rate, converted_amount, tier,
    # nights, segments, spend.
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
        None if fx is None else str(fx[1]),
        None if fx is None else str(fx[0]),
        tier,
        command.nights,
        command.segments,
        None if command.currency == rules.programme_currency else _spend(command.amount, command.currency, fx, rules),
    )


def _check_points_held(state: MemberState, points: int) -> None:
    if state.active + state.pending + state.held + points > POINTS_HELD_MAX:
        raise InvalidCommand(f"The booking would earn {points} points, which would put the member's points past the"
                             f" most a member may hold ({POINTS_HELD_MAX}).", field="amount")


def _spend(amount: Decimal, currency: str, fx: tuple[Decimal, Decimal] | None, rules: ProgramRules) -> str | None:
    """P4: a booking's amount in the programme currency, as tier spend counts it: the
    converted amount it earned on, else converted at the rate in force (rounded half-even
    to cents); None when no rate is in force."""
    if fx is not None:
        return str(fx[0])
    rates = rules.fx
    rate = rates.rate(currency) if rates is not None and rates.base == rules.programme_currency else None
    return None if not rate else str((amount / rate).quantize(CENT, rounding=ROUND_HALF_EVEN))


def _tier(state: MemberState, at: datetime, rules: ProgramRules) -> str:
    """The member's tier in force at `at` (`ledger.domain.tierpolicy.tier_in_force`): the
    higher of the one its tier changes put in force and the one it qualifies for. For a
    member with no tier change, under rules that qualify on points only, that is
    `tier_status(state.qualifying_entries(), at, rules).tier`, as before tier policies:
    worked out here for that case, which every earn of such a member asks."""
    if state.tiers or not rules.tier_points_only:
        return tier_in_force(state, rules, at)
    total = points_in_window(state, rules, at)
    name = rules.tiers[0].name
    for tier in rules.tiers:
        if tier.threshold <= total:
            name = tier.name
    return name


def _complete(state: MemberState, command: CompleteBooking, rules: ProgramRules) -> list[Event]:
    lot_id = state.bookings.get(command.booking_id)
    if lot_id is None:
        return _upgraded(state, *cap_booking(state, _earn(state, command, rules, status="active"), rules), rules=rules)
    lot = state.lot(lot_id)
    if lot.status != "pending":
        raise BookingStateConflict(f"Booking {command.booking_id!r} is already {lot.status}; it cannot complete again.")
    _check_currency(lot, command.booking_id, command.currency)
    return _upgraded(state, PendingPointsActivated(
            occurred_at=command.occurred_at,
            lot_id=lot_id,
            booking_id=command.booking_id,
            points=lot.remaining,
            qualifying_points=lot.qualifying,
            expires_at=add_months(command.occurred_at, rules.expiry_months),
        ), rules=rules)


def _upgraded(state: MemberState, event: PointsEarned | PendingPointsActivated, *counted: Event,
              rules: ProgramRules) -> list[Event]:
    """P4: the event that makes a booking count towards tiers (with what the caps counted
    of it, P3), then the upgrade it qualifies the member for, if any (an upgrade is at
    once, in the same unit of work)."""
    return [event, *counted, *upgrade(state, event, rules)]


def _reverse(state: MemberState, booking_id: str, reason: str, at: datetime, rules: ProgramRules) -> EarnReversed:
    lot_id = state.bookings.get(booking_id)
    if lot_id is None:
        raise BookingNotFound(f"Booking {booking_id!r} never earned points for member {state.member_id!r}.")
    lot = state.lot(lot_id)  # a closed lot too: a refund may come after its points were spent
    if lot.status == "reversed":
        raise BookingStateConflict(f"Booking {booking_id!r} was already reversed.")
    takes: tuple[LotTake, ...] = ((lot_id, lot.remaining),) if lot.remaining else ()
    qualifying = lot.qualifying if lot.qualified_at is not None else 0  # what its tier entry counts
    # Spent or held and not charged already (by a partial refund): held points count as
    # spent, since a hold guarantees them to its checkout; if the hold is released, they
    # come back forfeited (`_returns`).
    shortfall = lot.spent + lot.held - lot.charged
    return EarnReversed(
        occurred_at=at,
        booking_id=booking_id,
        reason=reason,  # type: ignore[arg-type]
        points=lot.remaining,
        lots=takes,
        pending_points=lot.remaining if lot.status == "pending" else 0,
        qualifying_points=qualifying,
        shortfall=shortfall,
        shortfall_debited=rules.allow_negative_balance and shortfall > 0,
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
    if command.redemption_id in state.redemptions:  # its record would take the other's place, unreversible
        raise MovementConflict(f"Redemption {command.redemption_id!r} exists already.",
                               redemption_id=command.redemption_id)
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
    if credit and _has_lot(state, adjustment_lot_id(command.adjustment_id)):  # its points would vanish
        raise MovementConflict(f"Adjustment {command.adjustment_id!r} exists already.",
                               adjustment_id=command.adjustment_id)
    return PointsAdjusted(
        occurred_at=command.occurred_at,
        adjustment_id=command.adjustment_id,
        points=command.points,
        reason=command.reason,
        actor=command.actor,
        lot_id=adjustment_lot_id(command.adjustment_id) if credit else None,
        expires_at=add_months(command.occurred_at, rules.expiry_months) if credit else None,
        lots=() if credit else _take_fifo(state, -command.points, command.occurred_at),
        case_id=command.case_id, category=command.category, booking_id=command.booking_id,
    )


FIRST_BOOKING_RULE = "first_booking_bonus"


def _check_currency(lot: Lot, booking_id: str, currency: str) -> None:
    """A later event of a booking (its completion, a partial refund, an amendment) in another
    currency than the booking's is not about the booking the ledger holds."""
    if lot.currency is not None and currency != lot.currency:
        raise BookingStateConflict(f"Booking {booking_id!r} was in {lot.currency}; a change in {currency} cannot"
                                   " apply to it.")


def _amend(state: MemberState, command: AmendBooking, rules: ProgramRules) -> list[Event]:
    """A partial refund or an amendment: each rule of what the booking holds now moves in
    proportion to the amount (rounded down), but the first-booking bonus, which stays
    whole while anything is left of the booking. Partial refunds that add up to the
    booking thus take back exactly what it earned, and never more."""
    lot_id = state.bookings.get(command.booking_id)
    if lot_id is None:
        raise BookingNotFound(f"Booking {command.booking_id!r} never earned points for member {state.member_id!r}.")
    lot = state.lot(lot_id)
    if lot.status == "reversed":
        raise BookingStateConflict(f"Booking {command.booking_id!r} was already reversed.")
    if command.currency is not None:
        _check_currency(lot, command.booking_id, command.currency)
    before = Decimal(lot.amount) if lot.amount is not None else Decimal(0)
    if command.reason == "refunded":
        refund = command.refund_amount
        if refund is None or not 0 < refund <= before:
            raise BookingStateConflict(
                f"A refund of {refund} is more than the {before} left of booking {command.booking_id!r}.")
        after = before - refund
    else:
        if command.amount is None or command.amount < 0:
            raise InvalidCommand("An amendment needs the booking's new amount, zero or more.")
        after = command.amount
        if after == before:
            return []
    changes = tuple((label, _scaled(label, points, before, after) - points) for label, points in lot.breakdown)
    delta = sum(change for _, change in changes)
    if delta > 0:
        _check_points_held(state, delta)
    qualifying = (floor(lot.qualifying * after / before) if before else lot.qualifying) - lot.qualifying
    takes: tuple[LotTake, ...] = ()
    shortfall = 0
    if delta < 0:
        taken = min(-delta, lot.remaining)
        takes = ((lot_id, taken),) if taken else ()
        # What the lot no longer holds was spent or held (the shortfall), or expired: that
        # is lost already and not taken again.
        shortfall = min(-delta - taken, lot.spent + lot.held - lot.charged)
    return [BookingAmended(
        occurred_at=command.occurred_at, booking_id=command.booking_id,
        reason=command.reason,  # type: ignore[arg-type]
        amount=str(after), points=delta, qualifying_points=qualifying, breakdown=changes, lots=takes,
        pending_points=sum(p for _, p in takes) if lot.status == "pending" else 0, shortfall=shortfall,
        shortfall_debited=rules.allow_negative_balance and shortfall > 0,
    )]


def _scaled(label: str, points: int, before: Decimal, after: Decimal) -> int:
    if label == FIRST_BOOKING_RULE:
        return points if after > 0 else 0
    if not before:  # a booking of no amount earned only fixed bonuses: nothing to scale
        return points
    return floor(points * after / before)


def _hold(state: MemberState, command: PlaceHold) -> PointsHeld:
    if not state.exists:
        raise MemberNotFound(state.member_id)
    if command.points <= 0:
        raise InvalidCommand("A hold must be for a positive number of points.")
    if command.hold_id in state.holds or command.hold_id in state.holds_closed:
        raise MovementConflict(f"Hold {command.hold_id!r} exists already.")
    if command.expires_at <= command.occurred_at:
        raise InvalidCommand("A hold must end after it starts.")
    return PointsHeld(
        occurred_at=command.occurred_at, hold_id=command.hold_id, points=command.points,
        reward_id=command.reward_id, reward_kind=command.reward_kind,
        lots=_take_fifo(state, command.points, command.occurred_at), expires_at=command.expires_at,
    )


def _open_hold(state: MemberState, hold_id: str, at: datetime) -> Hold:
    """The hold, if it is still open at `at`: a hold past its `expires_at` is over even
    before the scheduler releases it."""
    hold = state.holds.get(hold_id)
    if hold is None:
        ended = state.holds_closed.get(hold_id)
        if ended is None:
            raise HoldNotFound(f"Member {state.member_id!r} has no hold {hold_id!r}.", hold_id=hold_id)
        raise MovementConflict(f"Hold {hold_id!r} was {ended} already.", hold_id=hold_id, hold_status=ended)
    if hold.expires_at <= at:
        raise MovementConflict(f"Hold {hold_id!r} expired at {hold.expires_at.isoformat()}.", hold_id=hold_id,
                               hold_status="expired")
    return hold


def _capture(state: MemberState, command: CaptureHold) -> list[Event]:
    hold = _open_hold(state, command.hold_id, command.occurred_at)
    if command.points != hold.points and ("hold", hold.hold_id) in state.catalogue:
        raise MovementConflict(f"Hold {hold.hold_id!r} is of a catalogue reward at {hold.points} points: it is "
                               "captured whole or released.", hold_id=hold.hold_id, held=hold.points)
    if not 0 < command.points <= hold.points:
        raise MovementConflict(f"Hold {hold.hold_id!r} holds {hold.points} points; {command.points} cannot be "
                               "captured.", hold_id=hold.hold_id, held=hold.points)
    if command.redemption_id in state.redemptions:
        raise MovementConflict(f"Redemption {command.redemption_id!r} exists already.")
    captured: list[LotTake] = []
    rest: list[LotTake] = []
    left = command.points
    for lot_id, points in hold.lots:  # soonest expiry first, as they were held
        take = min(left, points)
        left -= take
        if take:
            captured.append((lot_id, take))
        if points > take:
            rest.append((lot_id, points - take))
    at = command.occurred_at
    events: list[Event] = [HoldCaptured(
        occurred_at=at, hold_id=hold.hold_id, redemption_id=command.redemption_id, points=command.points,
        reward_id=hold.reward_id, reward_kind=hold.reward_kind, lots=tuple(captured),
    )]
    if rest:
        events.append(_release(state, Hold(hold.hold_id, hold.points - command.points, tuple(rest), hold.expires_at,
                                           hold.reward_id, hold.reward_kind), "captured", at))
    return events


def _release(state: MemberState, hold: Hold, reason: str, at: datetime) -> HoldReleased:
    restored, expired, forfeited, _, debt_repaid = _returns(state, hold.lots, at, grace_days=0)
    return HoldReleased(
        occurred_at=at, hold_id=hold.hold_id, reason=reason, points=hold.points,  # type: ignore[arg-type]
        lots=restored, expired=expired, forfeited=forfeited, debt_repaid=debt_repaid,
    )


def _expire_holds(state: MemberState, command: ExpireHolds) -> list[Event]:
    """The `holds_max` soonest open holds whose time is up, released as expired; each
    decided on the state the releases before it left (two holds may share a lot, whose
    charged points only one of them can forfeit)."""
    if command.holds_max < 1:
        raise InvalidCommand("An expiry of holds must take at least one hold.")
    at = command.occurred_at
    catalogue = state.catalogue
    due = sorted((h for h in state.holds.values() if h.expires_at <= at and (
        ("hold", h.hold_id) not in catalogue  # a catalogue hold is released with its reward's stream read
        or reward_stream_id(catalogue[("hold", h.hold_id)]) in command.reward_streams)),
        key=lambda h: (h.expires_at, h.hold_id))
    events: list[Event] = []
    for hold in due[: command.holds_max]:
        released = _release(state, hold, "expired", at)
        state = evolve(state, released)
        events.append(released)
    return events


def _returns(state: MemberState, takes: Iterable[LotTake], at: datetime, *, grace_days: int) -> tuple[
        tuple[LotTake, ...], tuple[LotTake, ...], tuple[LotTake, ...], tuple[LotTake, ...], int]:
    """Points going back to the lots they came from, split by what each lot is now:
    (spendable again, expired, forfeited, regranted, debt repaid). A lot charged with a
    shortfall (its booking was taken back, in part or whole) keeps that much: those
    points are forfeited, and pay off the member's debt first. A lot past its date takes
    them back expired, unless `grace_days`: points of a lot that reached its date less
    than that long ago are regranted on a new lot (the caller makes it)."""
    restored: list[LotTake] = []
    expired: list[LotTake] = []
    forfeited: list[LotTake] = []
    regranted: list[LotTake] = []
    for lot_id, points in takes:
        lot = state.lot(lot_id)
        lost = min(points, lot.charged)
        if lost:
            forfeited.append((lot_id, lost))
        back = points - lost
        if not back:
            continue
        if lot.expires_at is not None and lot.expires_at > at:
            restored.append((lot_id, back))
        elif grace_days and lot.expires_at is not None and at - lot.expires_at < timedelta(days=grace_days):
            regranted.append((lot_id, back))
        else:
            expired.append((lot_id, back))
    debt_repaid = min(sum(p for _, p in forfeited), state.debt)
    return tuple(restored), tuple(expired), tuple(forfeited), tuple(regranted), debt_repaid


def _has_lot(state: MemberState, lot_id: str) -> bool:
    """Whether the member has (or had) a lot of this id: a new lot of the same id would
    take its place, and its points would vanish."""
    return lot_id in state.lots or lot_id in state.closed


def grace_lot_id(reversal_id: str) -> str:
    return f"grace:{reversal_id}"


def _reverse_redemption(state: MemberState, command: ReverseRedemption, rules: ProgramRules) -> RedemptionReversed:
    """Points of a redemption back to the lots it took them from, latest expiry first
    (the points worth most to the member), all or part of what is not reversed yet."""
    redemption = state.redemptions.get(command.redemption_id)
    if redemption is None:
        raise RedemptionNotFound(f"Member {state.member_id!r} has no redemption {command.redemption_id!r}.",
                                 redemption_id=command.redemption_id)
    if not command.reason.strip():
        raise InvalidCommand("A reversal needs a reason.")
    if _has_lot(state, grace_lot_id(command.reversal_id)):  # its points would go on that lot's place
        raise MovementConflict(f"Reversal {command.reversal_id!r} exists already.", reversal_id=command.reversal_id)
    left = redemption.reversible
    points = left if command.points is None else command.points
    if points <= 0 or points > left:
        raise MovementConflict(
            f"Redemption {command.redemption_id!r} has {left} points left to reverse; {points} cannot be.",
            redemption_id=command.redemption_id, reversible=left)
    order = sorted(redemption.lots, key=lambda take: (state.lot(take[0]).expires_at, take[0]), reverse=True)
    takes: list[LotTake] = []
    for lot_id, available in order:
        take = min(points, available)
        takes.append((lot_id, take))
        points -= take
        if not points:
            break
    at = command.occurred_at
    restored, expired, forfeited, regranted, debt_repaid = _returns(state, takes, at,
                                                                    grace_days=rules.return_grace_days)
    return RedemptionReversed(
        occurred_at=at, redemption_id=command.redemption_id, reversal_id=command.reversal_id,
        points=sum(p for _, p in takes), reason=command.reason, actor=command.actor, lots=restored, expired=expired,
        forfeited=forfeited, debt_repaid=debt_repaid, regranted=regranted,
        grace_lot_id=grace_lot_id(command.reversal_id) if regranted else None,
        expires_at=at + timedelta(days=rules.return_grace_days) if regranted else None,
    )


def transfer_lot_id(transfer_id: str, n: int) -> str:
    return f"transfer:{transfer_id}:{n}"


def _transfer(sender: MemberState, receiver: MemberState, command: TransferPoints,
              rules: ProgramRules) -> dict[str, list[Event]]:
    """Points from the sender's lots, soonest expiry first, onto new lots of the
    receiver's that keep each source lot's date and name it as their origin."""
    if command.member_id == command.to_member_id:
        raise InvalidCommand("A transfer needs two different members.")
    for state in (sender, receiver):
        if not state.exists:
            raise MemberNotFound(state.member_id)
    if command.points <= 0:
        raise InvalidCommand("A transfer must be for a positive number of points.")
    if not command.reason.strip():
        raise InvalidCommand("A transfer needs a reason.")
    if _has_lot(receiver, transfer_lot_id(command.transfer_id, 1)):  # its lots would go on those lots' place
        raise MovementConflict(f"Transfer {command.transfer_id!r} exists already.", transfer_id=command.transfer_id)
    at = command.occurred_at
    sent, received = transfer_year(sender, at), transfer_year(receiver, at)
    limit = rules.transfers.refusal(sent[1:3], received[3:5], command.points)  # type: ignore[arg-type]
    if limit is not None:
        raise LimitExceeded(f"The transfer of {command.points} points breaks the programme's transfer limit "
                            f"{limit!r} ({getattr(rules.transfers, limit)}).", limit=limit)
    takes = _take_fifo(sender, command.points, at)
    out = PointsTransferredOut(occurred_at=at, transfer_id=command.transfer_id, to_member_id=command.to_member_id,
                               points=command.points, reason=command.reason, lots=takes)
    credits: list[Event] = []
    for n, (lot_id, points) in enumerate(takes, 1):
        expires_at = sender.lot(lot_id).expires_at
        assert expires_at is not None, "only active lots are spendable"
        credits.append(PointsTransferredIn(
            occurred_at=at, transfer_id=command.transfer_id, from_member_id=command.member_id,
            lot_id=transfer_lot_id(command.transfer_id, n), points=points, expires_at=expires_at,
            origin_lot_id=f"{command.member_id}/{lot_id}", reason=command.reason,
        ))
    return {command.member_id: [out], command.to_member_id: credits}


# Households. The household is a stream of its own (`household_stream_id`), whose state
# keeps its roster (`MemberState.household_roster`, the head first); each member's stream
# keeps the household it is in (`MemberState.household_id`). A change of the roster
# appends to both streams in one transaction, so a member's stream moves whenever it
# joins or leaves: a household redemption that took from a member who left meanwhile
# fails its expected version and is decided again.


def _household(states: Mapping[str, MemberState], command: CreateHousehold | AddHouseholdMember |
               RemoveHouseholdMember | RedeemForHousehold, rules: ProgramRules) -> dict[str, list[Event]]:
    if command.member_id != household_stream_id(command.household_id):
        raise InvalidCommand(f"A command of household {command.household_id!r} goes to its own stream.")
    household = states[command.member_id]
    for member_id in command.member_ids[1:]:
        if is_household_stream(member_id):
            raise InvalidCommand(f"{member_id!r} is a household, not a member.")
    if isinstance(command, CreateHousehold):
        return _create_household(household, states[command.head_member_id], command)
    if not household.exists:
        raise HouseholdNotFound(f"No household {command.household_id!r} is known to the ledger.",
                                household_id=command.household_id)
    match command:
        case AddHouseholdMember():
            return _add_household_member(household, states[command.household_member_id], command, rules)
        case RemoveHouseholdMember():
            return _remove_household_member(household, command)
        case RedeemForHousehold():
            return _redeem_for_household(household, [states[m] for m in command.roster], command)
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")


def _check_joinable(member: MemberState) -> None:
    if not member.exists:
        raise MemberNotFound(member.member_id)
    if member.household_id is not None:
        raise MovementConflict(f"Member {member.member_id!r} is in household {member.household_id!r} already; a "
                               "member is in one household at most.", household_id=member.household_id)


def _create_household(household: MemberState, head: MemberState, command: CreateHousehold) -> dict[str, list[Event]]:
    if household.exists:
        raise MovementConflict(f"Household {command.household_id!r} exists already.", household_id=command.household_id)
    _check_joinable(head)
    at = command.occurred_at
    return {
        household.member_id: [HouseholdCreated(occurred_at=at, household_id=command.household_id,
                                               head_member_id=head.member_id)],
        head.member_id: [HouseholdJoined(occurred_at=at, household_id=command.household_id, role="head")],
    }


def _add_household_member(household: MemberState, member: MemberState, command: AddHouseholdMember,
                          rules: ProgramRules) -> dict[str, list[Event]]:
    if member.member_id in household.household_roster:
        return {}  # in already: adding it again changes nothing
    _check_joinable(member)
    if len(household.household_roster) >= rules.household_members_max:
        raise LimitExceeded(f"Household {command.household_id!r} has {len(household.household_roster)} members, the "
                            f"programme's most ({rules.household_members_max}).", limit="household_members_max")
    at = command.occurred_at
    return {
        household.member_id: [HouseholdMemberAdded(occurred_at=at, household_id=command.household_id,
                                                   member_id=member.member_id)],
        member.member_id: [HouseholdJoined(occurred_at=at, household_id=command.household_id, role="member")],
    }


def _remove_household_member(household: MemberState, command: RemoveHouseholdMember) -> dict[str, list[Event]]:
    member_id = command.household_member_id
    if member_id not in household.household_roster:
        raise HouseholdMemberNotFound(f"Member {member_id!r} is not in household {command.household_id!r}.",
                                      household_id=command.household_id, member_id=member_id)
    if member_id == household.household_roster[0]:
        raise MovementConflict(f"Member {member_id!r} is the head of household {command.household_id!r} and cannot "
                               "leave it.", household_id=command.household_id)
    at = command.occurred_at
    return {
        household.member_id: [HouseholdMemberRemoved(occurred_at=at, household_id=command.household_id,
                                                     member_id=member_id)],
        member_id: [HouseholdLeft(occurred_at=at, household_id=command.household_id)],
    }


def _spendable(member: MemberState, at: datetime) -> Iterator[tuple[tuple[datetime, str, str], Lot]]:
    """The member's spendable lots, soonest expiry first, keyed for the household's order."""
    for lot in member.fifo(at):
        assert lot.expires_at is not None, "only active lots are spendable"
        yield (lot.expires_at, member.member_id, lot.lot_id), lot


def _redeem_for_household(household: MemberState, members: list[MemberState],
                          command: RedeemForHousehold) -> dict[str, list[Event]]:
    """The members' lots taken soonest expiry first across the household (ties by member
    id, then lot id), none taking more from a member than it has available."""
    roster = household.household_roster
    if not set(roster) <= set(command.roster):
        # A member joined after the sender read the roster: this command did not read its
        # stream, so neither its lots nor what the household has in all are known here.
        # Sent again on the fresh roster, it applies. (A member who left is only left out.)
        raise HouseholdChanged(f"The members of household {command.household_id!r} changed while the redemption "
                               "was sent; send it again.", household_id=command.household_id)
    members = [m for m in members if m.member_id in roster]
    assert all(m.household_id == command.household_id for m in members), "a roster member's stream says so too"
    if command.points <= 0:
        raise InvalidCommand("A redemption must be for a positive number of points.")
    rid = command.redemption_id
    if rid in household.redemptions or any(rid in m.redemptions for m in members):
        raise MovementConflict(f"Redemption {rid!r} exists already.", redemption_id=rid)
    at = command.occurred_at
    left_by_member = {m.member_id: max(m.available(at), 0) for m in members}
    available = sum(left_by_member.values())
    if command.points > available:
        raise HouseholdInsufficientPoints(command.household_id, command.points, available)
    takes: dict[str, list[LotTake]] = {}
    left = command.points
    order = heapq.merge(*(_spendable(m, at) for m in members), key=lambda item: item[0])
    for (_, member_id, lot_id), lot in order:  # lazily: only the lots it takes from are walked
        take = min(left, lot.remaining, left_by_member[member_id])
        if take:
            takes.setdefault(member_id, []).append((lot_id, take))
            left_by_member[member_id] -= take
            left -= take
            if left == 0:
                break
    assert left == 0, "available covered the request, so the lots must"
    events: dict[str, list[Event]] = {}
    shares: list[tuple[str, int]] = []
    for member in members:  # in the roster's order
        member_takes = takes.get(member.member_id)
        if member_takes:
            points = sum(p for _, p in member_takes)
            shares.append((member.member_id, points))
            events[member.member_id] = [PointsRedeemedForHousehold(
                occurred_at=at, household_id=command.household_id, redemption_id=rid, points=points,
                reward_id=command.reward_id, reward_kind=command.reward_kind, lots=tuple(member_takes))]
    events[household.member_id] = [HouseholdPointsRedeemed(
        occurred_at=at, household_id=command.household_id, redemption_id=rid, points=command.points,
        reward_id=command.reward_id, reward_kind=command.reward_kind, shares=tuple(shares))]
    return events


# At the end: the catalogue's decisions build on this module's functions.
from .catalogue import CATALOGUE_COMMANDS, decide_catalogue, define_reward  # noqa: E402
# Members (M2): status and merges.
from .commands import ChangeMemberStatus, MergeMembers  # noqa: E402
from .errors import MemberMerged  # noqa: E402
from .members import change_status, check_member, check_paying, merge  # noqa: E402
# P3: earn beyond bookings and caps, which build on this module's state and rules.
from .earn import EARN_COMMANDS, cap_booking, decide_earn  # noqa: E402
