"""Bookings in any currency: converted to the programme currency at the rate in force at
their time (rounded half-even to cents), a per-currency rate winning, refused naming the
currency without either; partial refunds at the original rate; and earn events stored
before conversions existed (version 1) still read and still verify."""

from __future__ import annotations

import dataclasses

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from math import floor

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES,
    EPOCH,
    AmendBooking,
    CompleteBooking,
    CurrencyNotEarned,
    FxRates,
    InvalidCommand,
    MemberState,
    POINTS_HELD_MAX,
    PointsEarned,
    RuleBook,
    RuleVersion,
    decide,
    evolve,
    from_data,
    to_data,
)
from ledger.store.events import GENESIS_HASH, StoredEvent, canonical_bytes, chain_hash, verify_chain

T = datetime(2026, 4, 1, 8, tzinfo=UTC)  # outside every promotion
LATER = T + timedelta(days=30)
BOOK = RuleBook([RuleVersion(DEFAULT_RULES, EPOCH)], [
    FxRates(EPOCH, "EUR", {"CNY": Decimal("7.8"), "USD": Decimal("1.08"), "JPY": Decimal("162")}),
    FxRates(LATER, "EUR", {"CNY": Decimal("7.5")}),
])


def _earn(at: datetime, amount: str, currency: str, product: str = "flight") -> PointsEarned:
    (event,) = decide(MemberState("m"), CompleteBooking("m", at, "B1", product, Decimal(amount), currency), BOOK.at(at))
    assert isinstance(event, PointsEarned)
    return event


@given(amount=st.decimals(min_value=0, max_value=10_000_000, places=2),
       rate=st.decimals(min_value=Decimal("0.0001"), max_value=100_000, places=4),
       product=st.sampled_from(["flight", "hotel", "package", "rail", "car"]))
def test_conversion_rounds_half_even_to_cents_then_earns_at_the_programme_rate(
        amount: Decimal, rate: Decimal, product: str) -> None:
    book = RuleBook([RuleVersion(DEFAULT_RULES, EPOCH)], [FxRates(EPOCH, "EUR", {"CNY": rate})])
    event, *_ = decide(MemberState("m"), CompleteBooking("m", T, "B1", product, amount, "CNY"), book.at(T))
    converted = (amount / rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    base = floor(converted * DEFAULT_RULES.earn_rates[product]["EUR"])
    assert (event.fx_rate, event.converted_amount) == (str(rate), str(converted))
    assert event.breakdown == ((f"base:{product}:EUR", base), ("first_booking_bonus", 500))
    assert (event.amount, event.currency, event.qualifying_points) == (str(amount), "CNY", base)


def test_the_rate_in_force_at_the_booking_time_converts() -> None:
    assert (_earn(T, "780.00", "CNY").converted_amount, _earn(T, "780.00", "CNY").points) == ("100.00", 1000)
    after = _earn(LATER, "780.00", "CNY")
    assert (after.fx_rate, after.converted_amount, after.breakdown[0]) == ("7.5", "104.00", ("base:flight:EUR", 520))


def test_a_rate_of_the_currencys_own_wins_over_conversion() -> None:
    usd = _earn(T, "100.00", "USD")  # the default rules earn 4.60 per USD on flights
    assert (usd.fx_rate, usd.converted_amount, usd.breakdown[0]) == (None, None, ("base:flight:USD", 460))


def test_a_currency_with_no_rate_in_force_is_refused_naming_it() -> None:
    _earn(T, "100.00", "JPY")  # JPY has a rate of its own in the default rules
    with pytest.raises(CurrencyNotEarned) as refused:
        _earn(LATER, "100.00", "HKD")
    assert refused.value.details == {"currency": "HKD", "field": "currency"} and "HKD" in refused.value.message
    with pytest.raises(CurrencyNotEarned):
        decide(MemberState("m"), CompleteBooking("m", T, "B1", "hotel", Decimal(5), "CNY"), DEFAULT_RULES)  # no rates


def test_a_partial_refund_takes_back_at_the_original_rate() -> None:
    earned = _earn(T, "780.00", "CNY")
    state = evolve(MemberState("m"), earned)
    # Rates changed since (7.8 -> 7.5): a quarter of the booking refunded takes back a quarter of what it earned.
    (amended,) = decide(state, AmendBooking("m", LATER, "B1", "refunded", refund_amount=Decimal("195.00")),
                        BOOK.at(LATER))
    assert amended.breakdown == (("base:flight:EUR", -125), ("first_booking_bonus", 0))  # 500 earned; 130 at 7.5


def test_earn_events_stored_as_version_1_read_and_verify() -> None:
    event = _earn(T, "100.00", "EUR")
    v1 = {k: v for k, v in to_data(event).items()
          if k not in ("fx_rate", "converted_amount", "tier", "nights", "segments", "spend")}
    body = canonical_bytes(v1)
    stored_hash = chain_hash(GENESIS_HASH, "m", 1, "PointsEarned", 1, body)
    read = from_data("PointsEarned", 1, orjson.loads(body))
    assert read == dataclasses.replace(event, tier=None) and read.fx_rate is None
    stored = StoredEvent(1, "m", 1, read, {}, T, stored_hash, 1)
    assert verify_chain([stored]) is None
    assert verify_chain([StoredEvent(1, "m", 1, read, {}, T, stored_hash)]) == 1  # hashed as version 2: no match


def test_points_a_member_could_not_hold_are_refused_not_earned() -> None:
    # The smallest exchange rate the schema takes (0.000000001) converts the largest
    # amount (10,000,000) into 10^16 EUR: 2 x 10^17 points an earn, and 46 of them put a
    # balance past PostgreSQL's bigint, which stopped the projections on that event for good.
    book = RuleBook([RuleVersion(DEFAULT_RULES, EPOCH)], [FxRates(EPOCH, "EUR", {"CNY": Decimal("0.000000001")})])
    rules = book.at(T)
    with pytest.raises(InvalidCommand) as refused:
        decide(MemberState("m"), CompleteBooking("m", T, "B1", "hotel", Decimal("10000000.00"), "CNY"), rules)
    assert refused.value.details.get("field") == "amount", refused.value.details
    # Up to the bound it earns, and a member's open points never pass it.
    small, *_ = decide(MemberState("m"), CompleteBooking("m", T, "B1", "hotel", Decimal("10.00"), "CNY"), rules)
    assert isinstance(small, PointsEarned) and small.points == 100_000_000_500
    state = evolve(MemberState("m"), small)
    bound = dataclasses.replace(state, active=POINTS_HELD_MAX - 100)
    with pytest.raises(InvalidCommand):
        decide(bound, CompleteBooking("m", T, "B2", "hotel", Decimal("10.00"), "EUR"), rules)
    # An amendment up is an earn too.
    with pytest.raises(InvalidCommand):
        decide(state, AmendBooking("m", T, "B1", "amended", amount=Decimal("10000000.00"), currency="CNY"), rules)
