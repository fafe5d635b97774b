"""Given these events, when this command, then these events (or this error)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import (
    ReviewTier,
    AmendBooking,
    MovementConflict,
    DEFAULT_RULES,
    AdjustPoints,
    BookingNotFound,
    BookingStateConflict,
    CancelBooking,
    CompleteBooking,
    ConfirmBooking,
    DebtSettled,
    EarnReversed,
    Event,
    ExpirePoints,
    InsufficientPoints,
    InvalidCommand,
    MemberNotFound,
    MemberState,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    ProgramRules,
    RedeemPoints,
    RefundBooking,
    decide,
    fold,
)
from ledger.domain.rules import DEFAULT_RULES_DICT

M = "member-1"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # outside every default promotion
RULES = DEFAULT_RULES


def given(*commands, rules: ProgramRules = RULES) -> tuple[MemberState, list[Event]]:
    state, history = MemberState(M), []
    for command in commands:
        events = decide(state, command, rules)
        state = fold(M, events, state)
        history += events
    return state, history


def confirm(booking: str = "B1", amount: str = "100.00", product: str = "flight", at: datetime = T0, currency: str = "EUR"):
    return ConfirmBooking(M, at, booking, product, Decimal(amount), currency)


def complete(booking: str = "B1", amount: str = "100.00", product: str = "flight", at: datetime = T0):
    return CompleteBooking(M, at, booking, product, Decimal(amount), "EUR")


def redeem(points: int, rid: str = "R1", at: datetime = T0):
    return RedeemPoints(M, at, rid, points, "reward-1", "hotel_discount")


def test_confirm_earns_pending_points_with_rule_breakdown_and_first_booking_bonus() -> None:
    state, _ = given()
    (event,) = decide(state, confirm(amount="100.00"), RULES)
    assert isinstance(event, PointsEarned)
    assert event.status == "pending" and event.expires_at is None
    assert event.breakdown == (("base:flight:EUR", 500), ("first_booking_bonus", 500))
    assert event.points == 1000 and event.qualifying_points == 500
    assert event.rules_version == RULES.version


def test_second_booking_gets_no_first_booking_bonus() -> None:
    state, _ = given(confirm("B1"))
    (event,) = decide(state, confirm("B2"), RULES)
    assert event.points == 500


def test_amount_rounds_down_per_rule() -> None:
    state, _ = given(confirm("B0"))
    (event,) = decide(state, confirm("B2", amount="10.19", product="rail"), RULES)  # 10.19 * 3 = 30.57
    assert event.points == 30


def test_completion_activates_pending_points_with_expiry_24_months_after_activation() -> None:
    state, _ = given(confirm())
    done = T0 + timedelta(days=10)
    (event,) = decide(state, complete(at=done), RULES)
    assert event == PendingPointsActivated(
        occurred_at=done, lot_id="booking:B1", booking_id="B1", points=1000, qualifying_points=500,
        expires_at=datetime(2028, 5, 14, 10, 0, tzinfo=UTC),
    )


def test_completion_without_confirmation_earns_active_points() -> None:
    state, _ = given()
    (event,) = decide(state, complete(), RULES)
    assert isinstance(event, PointsEarned) and event.status == "active"
    assert event.expires_at == datetime(2028, 5, 4, 10, 0, tzinfo=UTC)


def test_completing_twice_is_a_conflict() -> None:
    state, _ = given(confirm(), complete())
    with pytest.raises(BookingStateConflict):
        decide(state, complete(), RULES)


def test_completing_in_another_currency_than_the_booking_is_a_conflict() -> None:
    # A refund or an amendment in another currency is refused; a completion in one
    # activated the points earned in the first currency as if it were the same booking.
    state, _ = given(confirm())
    usd = CompleteBooking(M, T0, "B1", "flight", Decimal("100.00"), "USD")
    with pytest.raises(BookingStateConflict, match="was in EUR"):
        decide(state, usd, RULES)
    (event,) = decide(state, complete(), RULES)
    assert isinstance(event, PendingPointsActivated)


def test_confirming_a_known_booking_is_a_conflict() -> None:
    state, _ = given(confirm())
    with pytest.raises(BookingStateConflict):
        decide(state, confirm(), RULES)


def test_off_season_promotion_doubles_base_points() -> None:
    state, _ = given(confirm("B0"))
    january = datetime(2026, 2, 1, tzinfo=UTC)
    (event,) = decide(state, confirm("B1", amount="100", at=january), RULES)
    assert dict(event.breakdown)["promotion:off-season-winter-2026"] == 500
    assert event.points == 1000 and event.qualifying_points == 500


def test_promotion_limited_to_products() -> None:
    state, _ = given(confirm("B0"))
    november = datetime(2026, 11, 20, tzinfo=UTC)
    (flight,) = decide(state, confirm("B1", amount="100", at=november), RULES)
    (hotel,) = decide(state, confirm("B2", amount="100", product="hotel", at=november), RULES)
    assert flight.points == 500
    assert hotel.points == 2000


def test_tier_in_force_at_earn_time_sets_the_multiplier() -> None:
    # 1,000 EUR of flights completed = 5,000 qualifying points: silver from then on.
    state, _ = given(complete("B1", amount="1000"))
    (event,) = decide(state, confirm("B2", amount="100", at=T0 + timedelta(days=1)), RULES)
    assert dict(event.breakdown)["tier:silver"] == 125
    # A year and a day later the qualifying points left the window, but silver is the
    # tier in force until a tier review downgrades it, at an evaluation date.
    later = T0 + timedelta(days=367)
    (kept,) = decide(state, confirm("B3", amount="100", at=later), RULES)
    assert dict(kept.breakdown)["tier:silver"] == 125
    # The review warns first: the next evaluation date (monthly: 1 June) is within 30 days.
    (warning,) = decide(state, ReviewTier(M, later), RULES)
    assert (warning.tier, warning.to_tier, warning.downgrade_at) == ("silver", "member", datetime(2027, 6, 1, tzinfo=UTC))
    state = fold(M, [warning], state)
    assert decide(state, ReviewTier(M, later), RULES) == []  # warned once
    june = datetime(2027, 6, 1, tzinfo=UTC)
    (downgrade,) = decide(state, ReviewTier(M, june), RULES)
    assert (downgrade.from_tier, downgrade.to_tier, downgrade.direction) == ("silver", "member", "downgrade")
    (after,) = decide(fold(M, [downgrade], state), confirm("B3", amount="100", at=june), RULES)
    assert "tier:silver" not in dict(after.breakdown)


def test_pending_points_do_not_qualify_for_tier() -> None:
    state, _ = given(confirm("B1", amount="1000"))
    (event,) = decide(state, confirm("B2", amount="100", at=T0 + timedelta(days=1)), RULES)
    assert not any(rule.startswith("tier:") for rule, _ in event.breakdown)


def test_unsupported_currency_is_refused() -> None:
    with pytest.raises(InvalidCommand, match="XOF"):
        decide(MemberState(M), confirm(currency="XOF"), RULES)


def test_naive_time_is_refused() -> None:
    with pytest.raises(InvalidCommand):
        decide(MemberState(M), confirm(at=datetime(2026, 1, 1)), RULES)


def test_redemption_takes_soonest_expiring_lots_first() -> None:
    state, _ = given(complete("B1", at=T0), complete("B2", at=T0 - timedelta(days=30)))
    (event,) = decide(state, redeem(700), RULES)
    assert isinstance(event, PointsRedeemed)
    assert event.lots == (("booking:B2", 500), ("booking:B1", 200))


def test_redemption_cannot_overdraw() -> None:
    state, _ = given(complete())
    with pytest.raises(InsufficientPoints) as err:
        decide(state, redeem(1001), RULES)
    assert err.value.available == 1000


def test_pending_points_are_not_spendable() -> None:
    state, _ = given(confirm())
    with pytest.raises(InsufficientPoints):
        decide(state, redeem(1), RULES)


def test_lots_past_their_date_are_not_spendable_before_the_expiry_job() -> None:
    state, _ = given(complete())
    after = T0 + timedelta(days=2 * 366)
    with pytest.raises(InsufficientPoints):
        decide(state, redeem(1, at=after), RULES)


def test_redeeming_for_an_unknown_member() -> None:
    with pytest.raises(MemberNotFound):
        decide(MemberState(M), redeem(1), RULES)


def test_expiry_takes_only_what_is_left_and_is_idempotent() -> None:
    state, _ = given(complete(), redeem(300))
    after = T0 + timedelta(days=2 * 366)
    events = decide(state, ExpirePoints(M, after), RULES)
    assert events == [PointsExpired(occurred_at=after, lot_id="booking:B1", points=700)]
    assert decide(fold(M, events, state), ExpirePoints(M, after), RULES) == []


def test_expiry_before_the_date_does_nothing() -> None:
    state, _ = given(complete())
    assert decide(state, ExpirePoints(M, T0 + timedelta(days=30)), RULES) == []


def test_cancellation_reverses_pending_points() -> None:
    state, _ = given(confirm())
    (event,) = decide(state, CancelBooking(M, T0, "B1"), RULES)
    assert event == EarnReversed(
        occurred_at=T0, booking_id="B1", reason="cancelled", points=1000, lots=(("booking:B1", 1000),),
        pending_points=1000, qualifying_points=0, shortfall=0, shortfall_debited=False,
    )
    after = fold(M, [event], state)
    assert after.pending == 0 and after.balance == 0


def test_refund_after_completion_claws_back_and_records_what_was_spent_as_shortfall() -> None:
    state, _ = given(complete("B1"), complete("B2"), redeem(1200))  # B1: 1000 (spent), B2: 500 (300 left)
    (event,) = decide(state, RefundBooking(M, T0, "B1"), RULES)
    assert event.points == 0 and event.shortfall == 1000 and not event.shortfall_debited
    assert event.qualifying_points == 500
    after = fold(M, [event], state)
    assert after.balance == 300


def test_refund_shortfall_becomes_a_negative_balance_when_the_rules_allow() -> None:
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})
    state, _ = given(complete("B1"), redeem(800), rules=rules)
    (event,) = decide(state, RefundBooking(M, T0, "B1"), rules)
    assert event.points == 200 and event.shortfall == 800 and event.shortfall_debited
    after = fold(M, [event], state)
    assert after.balance == -800 and after.available(T0) == -800
    with pytest.raises(InsufficientPoints):
        decide(fold(M, decide(after, complete("B2"), rules), after), redeem(1, "R2"), rules)


def test_reversing_twice_or_an_unknown_booking() -> None:
    state, _ = given(confirm(), CancelBooking(M, T0, "B1"))
    with pytest.raises(BookingStateConflict):
        decide(state, RefundBooking(M, T0, "B1"), RULES)
    with pytest.raises(BookingNotFound):
        decide(state, CancelBooking(M, T0, "nope"), RULES)


def test_completing_a_cancelled_booking_is_a_conflict() -> None:
    state, _ = given(confirm(), CancelBooking(M, T0, "B1"))
    with pytest.raises(BookingStateConflict):
        decide(state, complete(), RULES)


def test_positive_adjustment_creates_a_lot_with_reason_and_actor() -> None:
    state, _ = given(complete())
    (event,) = decide(state, AdjustPoints(M, T0, "A1", 250, "Delayed flight LH123", "support-anna"), RULES)
    assert isinstance(event, PointsAdjusted)
    assert event.lot_id == "adjustment:A1" and event.expires_at == datetime(2028, 5, 4, 10, 0, tzinfo=UTC)
    assert event.reason == "Delayed flight LH123" and event.actor == "support-anna"
    assert fold(M, [event], state).balance == 1250


def test_negative_adjustment_takes_from_lots_and_cannot_overdraw() -> None:
    state, _ = given(complete())
    (event,) = decide(state, AdjustPoints(M, T0, "A1", -400, "duplicate credit", "support"), RULES)
    assert event.lots == (("booking:B1", 400),)
    with pytest.raises(InsufficientPoints):
        decide(state, AdjustPoints(M, T0, "A2", -1001, "too much", "support"), RULES)


@pytest.mark.parametrize("points,reason", [(0, "x"), (10, "  "), (RULES.adjustment_points_max + 1, "x")])
def test_invalid_adjustments(points: int, reason: str) -> None:
    state, _ = given(complete())
    with pytest.raises(InvalidCommand):
        decide(state, AdjustPoints(M, T0, "A1", points, reason, "support"), RULES)


def test_adjusting_an_unknown_member() -> None:
    with pytest.raises(MemberNotFound):
        decide(MemberState(M), AdjustPoints(M, T0, "A1", 10, "goodwill", "support"), RULES)


@pytest.mark.parametrize("year", [1, 1899, 9001, 9999])
def test_times_outside_the_supported_years_are_refused(year: int) -> None:
    with pytest.raises(InvalidCommand, match="between the years"):
        decide(MemberState(M), confirm(at=datetime(year, 6, 1, tzinfo=UTC)), RULES)


@pytest.mark.parametrize("tiers", [
    [{"name": "member", "threshold": 0, "multiplier": "1"}, {"name": "member", "threshold": 10, "multiplier": "2"}],
    [{"name": "member", "threshold": 5, "multiplier": "1"}],
    [{"name": "member", "threshold": 0, "multiplier": "1"}, {"name": "gold", "threshold": 10, "multiplier": "2"},
     {"name": "silver", "threshold": 5, "multiplier": "1.5"}],
])
def test_rules_with_ambiguous_tiers_are_refused_when_loaded(tiers: list) -> None:
    with pytest.raises(ValueError, match="tier"):
        ProgramRules.from_dict({**DEFAULT_RULES_DICT, "tiers": tiers})


def test_a_debt_paid_off_by_later_points_is_not_charged_again_when_they_expire() -> None:
    """Complete A for 800, redeem 700, refund A: -700. Earn B (1,000), redeem 300: 0, since
    700 of B pay the debt. When B reaches its date those 700 settle the debt; nothing of
    B is left to expire, and available stays 0 (the debt is never charged twice)."""
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})
    b_at = T0 + timedelta(days=1)
    history = [complete("A", amount="60.00"), redeem(700, "R1"), RefundBooking(M, T0, "A")]
    assert given(*history, rules=rules)[0].available(T0) == -700
    state, _ = given(*history, complete("B", amount="200.00", at=b_at), redeem(300, "R2", at=b_at), rules=rules)
    assert state.available(b_at) == 0
    b_expires = state.lot("booking:B").expires_at
    assert b_expires is not None
    assert state.available(b_expires) == 0  # past its date, before the expiry job: still 0
    events = decide(state, ExpirePoints(M, b_expires), rules)
    assert events == [DebtSettled(occurred_at=b_expires, lot_id="booking:B", points=700)]
    after = fold(M, events, state)
    assert after.available(b_expires) == 0 and after.debt == 0 and after.lot("booking:B").remaining == 0


def test_expiry_takes_at_most_lots_max_lots_soonest_first_and_the_next_command_goes_on() -> None:
    state, _ = given(*(complete(f"B{i}", at=T0 + timedelta(days=4 - i)) for i in range(5)))
    after = T0 + timedelta(days=800)
    first = decide(state, ExpirePoints(M, after, 2), RULES)
    assert [e.lot_id for e in first] == ["booking:B4", "booking:B3"]
    state = fold(M, first, state)
    assert [e.lot_id for e in decide(state, ExpirePoints(M, after, 2), RULES)] == ["booking:B2", "booking:B1"]
    with pytest.raises(InvalidCommand):
        decide(state, ExpirePoints(M, after, 0), RULES)


def test_a_partial_refund_or_amendment_in_another_currency_than_the_booking_is_refused() -> None:
    state, _ = given(complete("B1", "100.00"))
    for command in (
        AmendBooking(M, T0, "B1", "refunded", refund_amount=Decimal("10.00"), currency="USD"),
        AmendBooking(M, T0, "B1", "amended", amount=Decimal("120.00"), currency="CNY"),
    ):
        with pytest.raises(BookingStateConflict, match="was in EUR"):
            decide(state, command, RULES)
    (event,) = decide(state, AmendBooking(M, T0, "B1", "refunded", refund_amount=Decimal("10.00"), currency="EUR"),
                      RULES)
    assert event.points == -50


def test_a_reused_redemption_id_or_credit_adjustment_id_is_refused_rather_than_replacing_the_first() -> None:
    state, _ = given(complete("B1", "1000.00"), redeem(100, "R1"),
                     AdjustPoints(M, T0, "A1", 300, "complaint", "agent"))
    with pytest.raises(MovementConflict, match="Redemption 'R1' exists already"):
        decide(state, redeem(50, "R1"), RULES)
    with pytest.raises(MovementConflict, match="Adjustment 'A1' exists already"):
        decide(state, AdjustPoints(M, T0, "A1", 200, "complaint", "agent"), RULES)
    assert decide(state, AdjustPoints(M, T0, "A1", -200, "complaint", "agent"), RULES)  # a debit makes no lot
