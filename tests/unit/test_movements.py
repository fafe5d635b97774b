"""The movements, one decision per test: given these commands, when this one, then these
events (or this error). Holds, redemption reversals, partial refunds and amendments,
transfers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import (
    DEFAULT_RULES,
    AmendBooking,
    BookingAmended,
    BookingStateConflict,
    CaptureHold,
    Command,
    CompleteBooking,
    EarnReversed,
    Event,
    ExpireHolds,
    ExpirePoints,
    HoldCaptured,
    HoldNotFound,
    HoldReleased,
    InsufficientPoints,
    InvalidCommand,
    LimitExceeded,
    MemberState,
    MovementConflict,
    PlaceHold,
    PointsExpired,
    PointsHeld,
    PointsTransferredIn,
    PointsTransferredOut,
    ProgramRules,
    RedeemPoints,
    RedemptionNotFound,
    RedemptionReversed,
    RefundBooking,
    ReleaseHold,
    ReverseRedemption,
    TransferLimits,
    TransferPoints,
    decide,
    decide_streams,
    fold,
)
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.domain.timeutil import add_months

M = "member-1"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # outside every default promotion
E1 = add_months(T0, 24)  # the date of a lot earned at T0
DAY = timedelta(days=1)
RULES = DEFAULT_RULES
NEGATIVE = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})
GRACE = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "return_grace_days": 30})


def lots_add_up(state: MemberState) -> None:
    """Every lot keeps points == remaining + held + spent + expired - charged, and the
    member's held total is what its lots hold."""
    lots = state.all_lots().values()
    for lot in lots:
        assert lot.points == lot.remaining + lot.held + lot.spent + lot.expired - lot.charged, lot
    assert state.held == sum(lot.held for lot in lots) == sum(h.points for h in state.holds.values())


def given(*commands: Command, rules: ProgramRules = RULES, member: str = M,
          state: MemberState | None = None) -> MemberState:
    state = state or MemberState(member)
    for command in commands:
        state = fold(member, decide(state, command, rules), state)
        lots_add_up(state)
    return state


def then(state: MemberState, command: Command, rules: ProgramRules = RULES) -> tuple[MemberState, list[Event]]:
    events = decide(state, command, rules)
    after = fold(state.member_id, events, state)
    lots_add_up(after)
    return after, events


def complete(booking: str, at: datetime = T0, amount: str = "100.00", member: str = M) -> CompleteBooking:
    """A flight: 5 points a euro, and 500 more for the member's first booking."""
    return CompleteBooking(member, at, booking, "flight", Decimal(amount), "EUR")


def redeem(points: int, rid: str = "R1", at: datetime = T0) -> RedeemPoints:
    return RedeemPoints(M, at, rid, points, "reward-1", "hotel_discount")


def hold(points: int, hid: str = "H1", at: datetime = T0, until: datetime | None = None) -> PlaceHold:
    return PlaceHold(M, at, hid, points, "reward-1", "hotel_night", until or at + timedelta(hours=1))


def capture(points: int, hid: str = "H1", at: datetime = T0, rid: str = "C1") -> CaptureHold:
    return CaptureHold(M, at, hid, rid, points)


def reverse(points: int | None, rid: str = "R1", at: datetime = T0, vid: str = "V1") -> ReverseRedemption:
    return ReverseRedemption(M, at, rid, vid, points, "flight cancelled by the airline", "support-7")


def two_lots() -> MemberState:
    """1,000 points expiring at E1 and 500 expiring 30 days later."""
    return given(complete("B1"), complete("B2", at=T0 + 30 * DAY))


# Holds


def test_a_hold_takes_points_off_its_lots_soonest_expiry_first() -> None:
    state, (held,) = then(two_lots(), hold(1200, at=T0 + 40 * DAY))
    assert held == PointsHeld(occurred_at=T0 + 40 * DAY, hold_id="H1", points=1200, reward_id="reward-1",
                              reward_kind="hotel_night", lots=(("booking:B1", 1000), ("booking:B2", 200)),
                              expires_at=T0 + 40 * DAY + timedelta(hours=1))
    assert state.available(T0 + 40 * DAY) == 300 and state.held == 1200
    assert (state.lot("booking:B1").held, state.lot("booking:B2").held) == (1000, 200)
    with pytest.raises(InsufficientPoints):  # held points are not available to anything else
        decide(state, redeem(301, at=T0 + 40 * DAY), RULES)


def test_a_capture_in_part_spends_soonest_first_and_releases_the_rest() -> None:
    at = T0 + 40 * DAY
    state = given(hold(1200, at=at), state=two_lots())
    state, (captured, released) = then(state, capture(1100, at=at + timedelta(minutes=5)))
    assert isinstance(captured, HoldCaptured) and captured.redemption_id == "C1"
    assert captured.points == 1100 and captured.lots == (("booking:B1", 1000), ("booking:B2", 100))
    assert isinstance(released, HoldReleased) and released.reason == "captured"
    assert released.points == 100 and released.lots == (("booking:B2", 100),)
    assert released.expired == released.forfeited == () and released.debt_repaid == 0
    assert state.available(at) == 400 and state.held == 0 and not state.holds
    assert state.holds_closed["H1"] == "captured"
    assert state.redemptions["C1"].lots == captured.lots  # a reversal can give it back


def test_a_capture_of_the_whole_hold_releases_nothing() -> None:
    state = given(hold(600), state=given(complete("B1")))
    _, events = then(state, capture(600))
    assert [type(e) for e in events] == [HoldCaptured]


def test_a_release_gives_the_points_back_to_their_lots() -> None:
    at = T0 + 40 * DAY
    before = two_lots()
    state = given(hold(1200, at=at), state=before)
    state, (released,) = then(state, ReleaseHold(M, at, "H1"))
    assert released.reason == "released" and released.points == 1200
    assert released.lots == (("booking:B1", 1000), ("booking:B2", 200)) and released.expired == ()
    assert state.available(at) == before.available(at) == 1500 and state.held == 0
    assert state.holds_closed["H1"] == "released"


def test_expire_holds_releases_only_the_holds_past_their_time() -> None:
    state = given(complete("B1"), hold(100, "H1", until=T0 + DAY), hold(200, "H2", until=T0 + 3 * DAY),
                  hold(300, "H3", until=T0 + 2 * DAY))
    state, events = then(state, ExpireHolds(M, T0 + 2 * DAY))
    assert [(e.hold_id, e.reason, e.lots) for e in events] == [
        ("H1", "expired", (("booking:B1", 100),)), ("H3", "expired", (("booking:B1", 300),))]
    assert list(state.holds) == ["H2"] and state.held == 200 and state.available(T0 + 2 * DAY) == 800
    assert state.holds_closed["H1"] == state.holds_closed["H3"] == "expired"
    assert decide(state, ExpireHolds(M, T0 + 2 * DAY), RULES) == []  # nothing more is due



def test_holds_expiring_together_on_a_lot_charged_less_than_they_hold_forfeit_only_the_charge() -> None:
    """Two holds on one lot whose booking was half refunded meanwhile: the refund
    charged the lot 250 of the 1,000 held. The releases of one ExpireHolds forfeit those
    250 once between them, and the rest comes back spendable."""
    state = given(complete("B1"), hold(500, "H1", until=T0 + DAY), hold(500, "H2", until=T0 + DAY),
                  AmendBooking(M, T0 + DAY / 2, "B1", "refunded", refund_amount=Decimal("50.00")))
    assert state.lot("booking:B1").charged == 250
    state, released = then(state, ExpireHolds(M, T0 + DAY))
    assert [(e.hold_id, e.forfeited, e.lots) for e in released] == [
        ("H1", (("booking:B1", 250),), (("booking:B1", 250),)), ("H2", (), (("booking:B1", 500),))]
    lot = state.lot("booking:B1")
    assert (lot.points, lot.remaining, lot.held, lot.charged) == (750, 750, 0, 0)
    assert state.available(T0 + DAY) == 750

@pytest.mark.parametrize("ending", ["captured", "released", "expired"])
@pytest.mark.parametrize("then_try", ["capture", "release"])
def test_a_hold_that_ended_refuses_capture_and_release(ending: str, then_try: str) -> None:
    end = {"captured": capture(50, rid="C0"), "released": ReleaseHold(M, T0, "H1"),
           "expired": ExpireHolds(M, T0 + 2 * DAY)}[ending]
    state = given(complete("B1"), hold(100, until=T0 + DAY), end)
    attempt = capture(100, at=T0 + 2 * DAY) if then_try == "capture" else ReleaseHold(M, T0 + 2 * DAY, "H1")
    with pytest.raises(MovementConflict) as refused:
        decide(state, attempt, RULES)
    assert refused.value.details["hold_status"] == ending


def test_a_hold_past_its_time_is_over_before_the_scheduler_releases_it() -> None:
    state = given(complete("B1"), hold(100, until=T0 + DAY))
    with pytest.raises(MovementConflict) as refused:
        decide(state, capture(100, at=T0 + DAY), RULES)
    assert refused.value.details["hold_status"] == "expired"
    with pytest.raises(MovementConflict):
        decide(state, ReleaseHold(M, T0 + DAY, "H1"), RULES)


def test_holds_refuse_an_unknown_hold_a_reused_id_and_more_than_is_held() -> None:
    state = given(complete("B1"), hold(100))
    with pytest.raises(HoldNotFound):
        decide(state, capture(10, hid="H9"), RULES)
    with pytest.raises(MovementConflict):
        decide(state, hold(10), RULES)  # H1 again
    with pytest.raises(MovementConflict):
        decide(state, capture(101), RULES)
    state = given(redeem(10, rid="R1"), state=state)
    with pytest.raises(MovementConflict):  # the redemption id is taken
        decide(state, capture(10, rid="R1"), RULES)


# A held lot that reaches its date


def held_past_its_date() -> MemberState:
    """Lot B1 (1,000, date E1) with 600 of it held from the day before its date until 20
    days after, and the expiry job run the day after its date (lot B2 lasts 30 days more)."""
    state = given(hold(600, at=E1 - DAY, until=E1 + 20 * DAY), state=two_lots())
    state, expired = then(state, ExpirePoints(M, E1 + DAY))
    assert expired == [PointsExpired(occurred_at=E1 + DAY, lot_id="booking:B1", points=400)]  # not the held 600
    lot = state.lot("booking:B1")
    assert (lot.remaining, lot.held, lot.expired) == (0, 600, 400)
    assert decide(state, ExpirePoints(M, E1 + 2 * DAY), RULES) == []
    return state


def test_the_expiry_job_does_not_expire_held_points_and_a_capture_spends_them_past_the_date() -> None:
    state, (captured,) = then(held_past_its_date(), capture(600, at=E1 + 2 * DAY))
    assert captured.lots == (("booking:B1", 600),)
    lot = state.lot("booking:B1")
    assert (lot.remaining, lot.held, lot.spent, lot.expired) == (0, 0, 600, 400)
    assert state.available(E1 + 2 * DAY) == 500


@pytest.mark.parametrize("end", ["release", "expire"])
def test_a_held_lot_past_its_date_takes_its_points_back_expired(end: str) -> None:
    command = ReleaseHold(M, E1 + 2 * DAY, "H1") if end == "release" else ExpireHolds(M, E1 + 20 * DAY)
    state, (released,) = then(held_past_its_date(), command)
    assert released.lots == () and released.expired == (("booking:B1", 600),)
    lot = state.lot("booking:B1")
    assert (lot.remaining, lot.held, lot.expired) == (0, 0, 1000)
    assert state.available(command.occurred_at) == 500


# Redemption reversals


def test_a_reversal_in_part_returns_to_the_latest_expiring_lots_first_and_then_the_rest() -> None:
    state = given(redeem(1200, at=T0 + 60 * DAY), state=two_lots())
    assert state.redemptions["R1"].lots == (("booking:B1", 1000), ("booking:B2", 200))
    state, (part,) = then(state, reverse(300, at=T0 + 90 * DAY))
    assert isinstance(part, RedemptionReversed) and part.points == 300
    assert part.lots == (("booking:B2", 200), ("booking:B1", 100))
    assert part.expired == part.forfeited == part.regranted == () and part.grace_lot_id is None
    assert state.available(T0 + 90 * DAY) == 600
    # The points are back on the lots they came from, which keep their own dates.
    b2 = state.lot("booking:B2")
    assert b2.remaining == 500 and b2.expires_at == add_months(T0 + 30 * DAY, 24)
    assert state.lot("booking:B1").expires_at == E1
    state, (rest,) = then(state, reverse(None, at=T0 + 91 * DAY, vid="V2"))
    assert rest.points == 900 and rest.lots == (("booking:B1", 900),)
    assert state.available(T0 + 91 * DAY) == 1500 and state.redemptions["R1"].reversible == 0
    with pytest.raises(MovementConflict) as refused:
        decide(state, reverse(None, at=T0 + 92 * DAY, vid="V3"), RULES)
    assert refused.value.details["reversible"] == 0


def test_a_reversal_refuses_more_than_is_left_and_an_unknown_redemption() -> None:
    state = given(complete("B1"), redeem(300))
    with pytest.raises(MovementConflict):
        decide(state, reverse(301), RULES)
    with pytest.raises(RedemptionNotFound):
        decide(state, reverse(1, rid="R9"), RULES)


def test_a_captured_hold_is_reversed_as_a_redemption() -> None:
    state = given(complete("B1"), hold(400), capture(400))
    state, (back,) = then(state, reverse(None, rid="C1"))
    assert back.lots == (("booking:B1", 400),) and state.available(T0) == 1000


def test_points_returned_to_a_lot_past_its_date_come_back_expired() -> None:
    state = given(complete("B1"), redeem(800, at=T0 + DAY))
    state, (back,) = then(state, reverse(None, at=E1 + 10 * DAY))
    assert back.lots == () and back.expired == (("booking:B1", 800),) and back.grace_lot_id is None
    assert state.lot("booking:B1").expired == 800 and state.available(E1 + 10 * DAY) == 0


def test_with_a_grace_period_points_returned_to_a_lot_past_its_date_come_back_on_a_grace_lot() -> None:
    state = given(complete("B1"), redeem(800, at=T0 + DAY), rules=GRACE)
    at = E1 + 10 * DAY  # ten days after the lot's date: inside the 30 days of grace
    state, (back,) = then(state, reverse(None, at=at), GRACE)
    assert back.regranted == (("booking:B1", 800),) and back.lots == back.expired == ()
    assert back.grace_lot_id == "grace:V1" and back.expires_at == at + 30 * DAY
    grace = state.lot("grace:V1")
    assert (grace.points, grace.remaining, grace.expires_at) == (800, 800, at + 30 * DAY)
    assert state.lot("booking:B1").points == 200  # the regranted points left the old lot
    assert state.available(at) == 800
    # More than the grace period after the lot's date: expired after all.
    late = given(complete("B1"), redeem(800, at=T0 + DAY), rules=GRACE)
    _, (too_late,) = then(late, reverse(None, at=E1 + 30 * DAY), GRACE)
    assert too_late.expired == (("booking:B1", 800),) and too_late.regranted == ()


def test_a_reversal_id_that_made_a_grace_lot_already_is_refused() -> None:
    """A second grace lot of that id would take the place of the first, and its points vanish."""
    state = given(complete("B1"), redeem(300, "R1", at=T0 + DAY), redeem(200, "R2", at=T0 + DAY),
                  reverse(None, "R1", at=E1 + DAY, vid="V1"), rules=GRACE)
    with pytest.raises(MovementConflict) as refused:
        decide(state, reverse(None, "R2", at=E1 + DAY, vid="V1"), GRACE)
    assert refused.value.details == {"reversal_id": "V1"}
    _, (back,) = then(state, reverse(None, "R2", at=E1 + DAY, vid="V2"), GRACE)
    assert back.regranted == (("booking:B1", 200),)

@pytest.mark.parametrize("rules", [RULES, NEGATIVE], ids=["no-debt", "negative-allowed"])
def test_points_returned_to_a_lot_whose_booking_was_refunded_are_forfeited_and_repay_the_debt(
    rules: ProgramRules,
) -> None:
    state = given(complete("B1"), complete("B2", at=T0 + DAY), redeem(800, at=T0 + 2 * DAY), rules=rules)
    state, (refunded,) = then(state, RefundBooking(M, T0 + 3 * DAY, "B1"), rules)
    assert isinstance(refunded, EarnReversed) and refunded.points == 200 and refunded.shortfall == 800
    assert refunded.shortfall_debited is rules.allow_negative_balance
    debt = 800 if rules.allow_negative_balance else 0
    assert state.debt == debt and state.available(T0 + 3 * DAY) == 500 - debt
    state, (back,) = then(state, reverse(None, at=T0 + 4 * DAY), rules)
    assert back.forfeited == (("booking:B1", 800),) and back.lots == back.expired == ()
    assert back.debt_repaid == debt
    assert state.debt == 0 and state.available(T0 + 4 * DAY) == 500
    assert state.lot("booking:B1").charged == 0


@pytest.mark.parametrize("rules", [RULES, NEGATIVE], ids=["no-debt", "negative-allowed"])
def test_held_points_of_a_booking_refunded_meanwhile_are_forfeited_when_released(rules: ProgramRules) -> None:
    state = given(complete("B1"), complete("B2", at=T0 + DAY), hold(800, at=T0 + 2 * DAY, until=E1),
                  RefundBooking(M, T0 + 3 * DAY, "B1"), rules=rules)
    debt = 800 if rules.allow_negative_balance else 0  # held points count as spent: the checkout has them
    assert state.debt == debt
    state, (released,) = then(state, ReleaseHold(M, T0 + 4 * DAY, "H1"), rules)
    assert released.forfeited == (("booking:B1", 800),) and released.debt_repaid == debt
    assert state.debt == 0 and state.available(T0 + 4 * DAY) == 500


# Partial refunds and amendments


def refund(amount: str, at: datetime, booking: str = "B1") -> AmendBooking:
    return AmendBooking(M, at, booking, "refunded", refund_amount=Decimal(amount))


def amend(amount: str, at: datetime = T0, booking: str = "B1") -> AmendBooking:
    return AmendBooking(M, at, booking, "amended", amount=Decimal(amount))


def test_partial_refunds_that_add_up_to_the_booking_take_back_exactly_its_points_rule_by_rule() -> None:
    winter = datetime(2026, 2, 1, tzinfo=UTC)  # off-season: double points
    state = given(complete("B1", at=winter))
    earned = dict(state.lot("booking:B1").breakdown)
    assert earned == {"base:flight:EUR": 500, "promotion:off-season-winter-2026": 500, "first_booking_bonus": 500}
    changes: dict[str, int] = dict.fromkeys(earned, 0)
    amended = []
    for n, part in enumerate(["33.33", "33.33", "33.34"], 1):
        state, (event,) = then(state, refund(part, winter + n * DAY))
        assert isinstance(event, BookingAmended) and event.reason == "refunded"
        amended.append(event)
        for label, change in event.breakdown:
            changes[label] += change
    # Each rule in proportion, rounded down, of what the booking holds at the time.
    assert [dict(e.breakdown)["base:flight:EUR"] for e in amended] == [-167, -167, -166]
    # The first-booking bonus stays whole while anything of the booking is left.
    assert [dict(e.breakdown)["first_booking_bonus"] for e in amended] == [0, 0, -500]
    assert changes == {label: -points for label, points in earned.items()}
    assert sum(e.points for e in amended) == -1500
    assert [e.amount for e in amended] == ["66.67", "33.34", "0.00"]
    lot = state.lot("booking:B1")
    assert (lot.points, lot.remaining, lot.amount) == (0, 0, "0.00")
    assert set(dict(lot.breakdown).values()) == {0}
    assert state.available(winter + 4 * DAY) == 0
    with pytest.raises(BookingStateConflict):  # nothing is left to refund
        decide(state, refund("0.01", winter + 5 * DAY), RULES)


def test_a_refund_of_more_than_is_left_of_the_booking_is_refused() -> None:
    state = given(complete("B1"), refund("60.00", T0 + DAY))
    with pytest.raises(BookingStateConflict):
        decide(state, refund("40.01", T0 + 2 * DAY), RULES)


def test_an_amendment_up_earns_in_proportion_rule_by_rule() -> None:
    state, (up,) = then(given(complete("B1")), amend("150.00", T0 + DAY))
    assert up.points == 250 and up.breakdown == (("base:flight:EUR", 250), ("first_booking_bonus", 0))
    assert up.qualifying_points == 250 and up.lots == () and up.shortfall == 0
    lot = state.lot("booking:B1")
    assert (lot.points, lot.remaining, lot.amount, lot.qualifying) == (1250, 1250, "150.00", 750)
    assert decide(state, amend("150.00", T0 + 2 * DAY), RULES) == []  # the same amount: nothing to do


@pytest.mark.parametrize("rules", [RULES, NEGATIVE], ids=["no-debt", "negative-allowed"])
def test_an_amendment_down_takes_back_what_is_left_and_the_rest_is_the_shortfall(rules: ProgramRules) -> None:
    state = given(complete("B1"), amend("150.00", T0 + DAY), redeem(1100, at=T0 + 2 * DAY), rules=rules)
    state, (down,) = then(state, amend("20.00", T0 + 3 * DAY), rules)
    # base 750 -> floor(750 * 20 / 150) = 100; the first-booking bonus stays.
    assert down.points == -650 and down.breakdown == (("base:flight:EUR", -650), ("first_booking_bonus", 0))
    assert down.lots == (("booking:B1", 150),) and down.shortfall == 500
    assert down.shortfall_debited is rules.allow_negative_balance
    lot = state.lot("booking:B1")
    assert (lot.points, lot.remaining, lot.charged, lot.amount) == (600, 0, 500, "20.00")
    debt = 500 if rules.allow_negative_balance else 0
    assert state.debt == debt and state.available(T0 + 3 * DAY) == -debt
    # The redemption's points that come back now are forfeited up to the charge.
    state, (back,) = then(state, reverse(None, at=T0 + 4 * DAY), rules)
    assert back.forfeited == (("booking:B1", 500),) and back.lots == (("booking:B1", 600),)
    assert back.debt_repaid == debt and state.debt == 0 and state.available(T0 + 4 * DAY) == 600


def test_an_amendment_to_nothing_takes_the_first_booking_bonus_too() -> None:
    state, (gone,) = then(given(complete("B1")), amend("0", T0 + DAY))
    assert gone.points == -1000 and dict(gone.breakdown)["first_booking_bonus"] == -500
    assert state.available(T0 + DAY) == 0


# Transfers


def run_streams(states: dict[str, MemberState], command: Command,
                rules: ProgramRules = RULES) -> dict[str, list[Event]]:
    decided = decide_streams({m: states[m] for m in command.member_ids}, command, rules)
    for member, events in decided.items():
        states[member] = fold(member, events, states[member])
        lots_add_up(states[member])
    return decided


def members(*names: str) -> dict[str, MemberState]:
    """Each member with one booking of 1,000 points at T0 (the first-booking bonus included)."""
    return {name: given(complete(f"{name}-B1", member=name), member=name) for name in names}


def transfer(frm: str, to: str, points: int, tid: str, at: datetime = T0 + 60 * DAY) -> TransferPoints:
    return TransferPoints(frm, at, tid, to, points, "family")


def test_a_transfer_keeps_each_source_lots_date_and_origin() -> None:
    states = {"A": two_lots(), **members("B")}
    states["A"] = replace(states["A"], member_id="A")  # two_lots is the default member's
    decided = run_streams(states, transfer("A", "B", 1200, "T1"))
    (out,) = decided["A"]
    assert isinstance(out, PointsTransferredOut) and out.to_member_id == "B" and out.points == 1200
    assert out.lots == (("booking:B1", 1000), ("booking:B2", 200))
    assert decided["B"] == [
        PointsTransferredIn(occurred_at=T0 + 60 * DAY, transfer_id="T1", from_member_id="A", lot_id="transfer:T1:1",
                            points=1000, expires_at=E1, origin_lot_id="A/booking:B1", reason="family"),
        PointsTransferredIn(occurred_at=T0 + 60 * DAY, transfer_id="T1", from_member_id="A", lot_id="transfer:T1:2",
                            points=200, expires_at=add_months(T0 + 30 * DAY, 24), origin_lot_id="A/booking:B2",
                            reason="family"),
    ]
    at = T0 + 60 * DAY
    assert states["A"].available(at) == 300 and states["B"].available(at) == 2200
    assert states["A"].transfers[1:3] == (1200, 1) and states["B"].transfers[3:5] == (1200, 1)
    # The received points expire with their source lots' dates.
    assert [e.points for e in decide(states["B"], ExpirePoints("B", E1 + DAY), RULES)] == [1000, 1000]


def test_a_transfer_id_the_receiver_was_credited_by_already_is_refused() -> None:
    """Its lots would take the place of the first transfer's, and those points vanish."""
    states = members("A", "B", "C")
    run_streams(states, transfer("A", "B", 300, "T1"))
    with pytest.raises(MovementConflict) as refused:
        run_streams(states, transfer("C", "B", 500, "T1"))
    assert refused.value.details == {"transfer_id": "T1"}
    assert states["B"].available(T0 + 60 * DAY) == 1300 and states["C"].available(T0 + 60 * DAY) == 1000
    assert run_streams(states, transfer("A", "C", 300, "T1"))  # another receiver: no lot of its is taken

def test_a_transfer_refuses_what_the_sender_does_not_have_and_a_member_to_itself() -> None:
    states = members("A", "B")
    with pytest.raises(InsufficientPoints):
        run_streams(states, transfer("A", "B", 1001, "T1"))
    with pytest.raises(InvalidCommand, match="two different members"):
        run_streams(states, transfer("A", "A", 100, "T2"))


@pytest.mark.parametrize(("limit", "setting", "first", "second"), [
    ("points_min", 100, None, ("A", "B", 99)),
    ("sent_points_per_year", 500, ("A", "B", 300), ("A", "C", 300)),
    ("sent_count_per_year", 1, ("A", "B", 100), ("A", "C", 100)),
    ("received_points_per_year", 500, ("A", "B", 300), ("C", "B", 300)),
    ("received_count_per_year", 1, ("A", "B", 100), ("C", "B", 100)),
])
def test_each_transfer_limit_refuses_with_its_name_and_a_new_year_starts_again(
    limit: str, setting: int, first: tuple | None, second: tuple,
) -> None:
    rules = replace(RULES, transfers=TransferLimits(**{limit: setting}))
    states = members("A", "B", "C")
    if first is not None:
        run_streams(states, transfer(*first, "T1"), rules)
    with pytest.raises(LimitExceeded) as refused:
        run_streams(states, transfer(*second, "T2"), rules)
    assert refused.value.limit == limit and refused.value.details == {"limit": limit}
    if limit != "points_min":
        next_year = datetime(2027, 1, 1, tzinfo=UTC)
        assert run_streams(states, transfer(*second, "T3", at=next_year), rules)
