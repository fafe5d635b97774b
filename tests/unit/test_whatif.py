"""What-if replays (`ledger.domain.whatif`), over random histories with rule versions
published in the middle: priced again under the rules that were in force, every sum
differs by exactly zero; under a draft that doubles one product's rate, exactly that
product's points (and its take-backs) double."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    EPOCH,
    AmendBooking,
    CancelBooking,
    CompleteBooking,
    ConfirmBooking,
    LedgerError,
    MemberState,
    PointsEarned,
    ProgramRules,
    RefundBooking,
    RuleBook,
    RuleVersion,
    decide,
    evolve,
)
from ledger.domain.events import ActivityPointsEarned, BookingAmended, EarnReversed
from ledger.domain.rules import DEFAULT_RULES_DICT, FxRates
from ledger.domain.whatif import Replay

START = datetime(2026, 1, 1, tzinfo=UTC)
PRODUCTS = ["flight", "hotel", "package", "rail", "car"]
FX = FxRates(EPOCH, "EUR", {"CNY": Decimal("7.8")})


def _rules(name: str, rate: int, silver: str, bonus: int, *, doubled: str | None = None,
           cap: int | None = None) -> ProgramRules:
    return ProgramRules.from_dict({
        **DEFAULT_RULES_DICT, "version": name, "first_booking_bonus": bonus,
        "earn_rates": {p: {"EUR": str((rate + i) * (2 if p == doubled else 1))} for i, p in enumerate(PRODUCTS)},
        "tiers": [{"name": "member", "threshold": 0, "multiplier": "1"},
                  {"name": "silver", "threshold": 2_000, "multiplier": silver},
                  {"name": "gold", "threshold": 20_000, "multiplier": "2"}],
        "caps": [] if cap is None else [{"source": "promotion", "period": "month", "max_points": cap}],
    })


@st.composite
def histories(draw: st.DrawFn, *, versions: bool = True, whole: bool = False) -> list[tuple]:
    """Steps in processing order: ("publish", rules, effective_from) later than the
    clock, or ("command", command): bookings (some in CNY, converted), then
    cancellations, refunds and amendments of earlier bookings."""
    clock, steps, booking = START, [], 0
    for i in range(draw(st.integers(1, 40))):
        clock += timedelta(hours=draw(st.integers(0, 24 * 20)))
        if versions and draw(st.integers(0, 4)) == 0:
            lead = timedelta(hours=draw(st.integers(1, 24 * 30)))
            rules = _rules(f"v{i}", draw(st.integers(0, 20)), draw(st.sampled_from(["1", "1.25", "1.5"])),
                           draw(st.sampled_from([0, 100, 500])),
                           cap=draw(st.sampled_from([None, 50, 5_000])))
            steps.append(("publish", rules, clock + lead))
            continue
        at = clock - timedelta(hours=draw(st.integers(0, 24 * 90)) if draw(st.booleans()) else 0)
        if booking and draw(st.integers(0, 3)) == 0:
            target = f"B{draw(st.integers(1, booking))}"
            kind = draw(st.sampled_from(["cancel", "refund", "amend", "partial"]))
            if kind == "cancel":
                command = CancelBooking("m", clock, target)
            elif kind == "refund":
                command = RefundBooking("m", clock, target)
            elif kind == "amend":
                command = AmendBooking("m", clock, target, "amended", amount=Decimal(draw(st.integers(0, 3000))))
            else:
                command = AmendBooking("m", clock, target, "refunded", refund_amount=Decimal(draw(st.integers(1, 500))))
            steps.append(("command", command))
            continue
        booking += 1
        kind = draw(st.sampled_from([ConfirmBooking, CompleteBooking]))
        amount = Decimal(draw(st.integers(0, 3000))) if whole else draw(
            st.decimals(min_value=0, max_value=3000, places=2))
        currency = "EUR" if whole else draw(st.sampled_from(["EUR", "EUR", "CNY"]))
        steps.append(("command", kind("m", at, f"B{booking}", draw(st.sampled_from(PRODUCTS)), amount, currency)))
    return steps


def run(steps: list[tuple], first: ProgramRules) -> tuple[RuleBook, list]:
    """The history decided as the ledger decides it: (the book of every version, the events)."""
    versions = [RuleVersion(first, EPOCH)]
    book = RuleBook(versions, [FX])
    state, events = MemberState("m"), []
    for step in steps:
        if step[0] == "publish":
            if step[2] not in {v.effective_from for v in versions}:
                versions.append(RuleVersion(step[1], step[2]))
                book = RuleBook(versions, [FX])
            continue
        command = step[1]
        try:
            decided = decide(state, command, book.at(command.occurred_at))
        except LedgerError:
            continue
        for event in decided:
            events.append(event)
            state = evolve(state, event)
    return book, events


def replay(book: RuleBook, events: list) -> Replay:
    """Every earn and take-back through `Replay`, as the simulation feeds them."""
    sums = Replay(book)
    earns: dict[str, tuple[int, int]] = {}
    for event in events:
        if isinstance(event, PointsEarned):
            breakdown = [list(entry) for entry in event.breakdown]
            simulated = sums.booking(event.occurred_at, event.product, event.amount, event.currency,
                                     event.converted_amount, event.tier, event.points, breakdown, (True, True))
            assert simulated == sums.price_booking(event.occurred_at, event.product, event.amount, event.currency,
                                                   event.converted_amount, event.tier, breakdown)
            earns[event.booking_id] = (event.points, simulated)
        elif isinstance(event, ActivityPointsEarned):
            sums.activity(event.occurred_at, event.activity_type, event.role, event.points, event.breakdown,
                          (True, True))
        elif isinstance(event, EarnReversed | BookingAmended):
            taken = -event.points if isinstance(event, EarnReversed) else event.points
            sums.take_back(taken, earns[event.booking_id], (True, True))
    return sums


def _differences(rows: dict[str, list[int]]) -> set[int]:
    return {simulated - actual for actual, simulated in rows.values()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_the_rules_in_force_as_the_draft_give_a_difference_of_exactly_zero(steps: list[tuple]) -> None:
    book, events = run(steps, _rules("first", 5, "1.25", 500))
    sums = replay(book, events)
    assert sums.earns == sum(isinstance(e, PointsEarned) for e in events)
    assert sums.take_backs == sum(isinstance(e, EarnReversed | BookingAmended) for e in events)
    assert sums.not_earned == 0
    for rows in (sums.by_product, sums.by_tier, sums.by_rule):
        assert _differences(rows) <= {0}
    assert sums.earned[0] == sums.earned[1] == sum(e.points for e in events if isinstance(e, PointsEarned))
    assert sums.taken_back[0] == sums.taken_back[1]
    assert sums.outstanding[0] == sums.outstanding[1]
    result = sums.result(cost_per_point=(Decimal("0.01"), Decimal("0.01")), currency="EUR")
    assert result["net"]["difference"] == 0 and result["liability"]["difference_value"] == "0.00"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(versions=False, whole=True), st.sampled_from(PRODUCTS), st.sampled_from(["1", "2"]))
def test_a_draft_that_doubles_one_products_rate_doubles_exactly_that_products_points(
        steps: list[tuple], product: str, silver: str) -> None:
    # Whole amounts and whole multipliers, no first booking bonus: every rule's points are
    # a whole multiple of the rate, so doubling the rate doubles them exactly.
    rules = _rules("v0", 5, silver, 0)
    _, events = run(steps, rules)
    draft = _rules("draft", 5, silver, 0, doubled=product)
    sums = replay(RuleBook([RuleVersion(draft, EPOCH)], [FX]), events)
    for name, (actual, simulated) in sums.by_product.items():
        assert simulated == (2 * actual if name == product else actual)
    assert sums.earned[1] - sums.earned[0] == sums.by_product.get(product, [0, 0])[0]
    doubled = {e.booking_id for e in events if isinstance(e, PointsEarned) and e.product == product}
    taken = [(-e.points if isinstance(e, EarnReversed) else e.points, e.booking_id) for e in events
             if isinstance(e, EarnReversed | BookingAmended)]
    assert sums.taken_back == [sum(t for t, _ in taken), sum(2 * t if b in doubled else t for t, b in taken)]


def test_a_cap_withholds_again_at_most_what_the_draft_grants_and_a_product_the_draft_drops_earns_nothing() -> None:
    at = START + timedelta(days=10)  # in the default rules' winter promotion
    capped = _rules("v0", 5, "1", 0, cap=10)
    book, events = run([("command", CompleteBooking("m", at, "B1", "hotel", Decimal("100"), "EUR"))], capped)
    (earned,) = [e for e in events if isinstance(e, PointsEarned)]
    assert dict(earned.breakdown)["cap:promotion:month"] < 0
    no_promotion = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "d", "promotions": [],
                                           "first_booking_bonus": 0})
    sums = replay(RuleBook([RuleVersion(no_promotion, EPOCH)]), events)
    assert sums.by_rule["cap:promotion:month"] == [dict(earned.breakdown)["cap:promotion:month"], 0]
    assert sums.earned[1] == 1000  # the draft's base: 100 EUR at 10 a euro, nothing withheld
    no_hotel = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "d",
                                       "earn_rates": {"flight": {"EUR": "5"}}})
    sums = replay(RuleBook([RuleVersion(no_hotel, EPOCH)]), events)
    assert (sums.not_earned, sums.earned[1]) == (1, 0)
