"""Every fast path of the domain against the straightforward code it replaced: the
generated `__init__`s, encoders and decoders, the decider's tier and the earn
arithmetic. Each must give the same values and raise the same errors."""

from __future__ import annotations

import dataclasses
import heapq
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from math import floor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from immutables import Map

from ledger.domain import (
    DEFAULT_RULES,
    Lot,
    MemberState,
    PointsEarned,
    PointsExpired,
    ProgramRules,
    SortedKeys,
    TierChanged,
    build_state,
    evolve,
    evolve_all,
    fold,
    from_data,
    tier_status,
    to_data,
)
from ledger.domain._frozen import ORIGINAL_INITS
from ledger.domain.decider import _tier
from ledger.domain.state import _evolve_in_draft
from ledger.domain.tierpolicy import points_in_window, recorded_rank, window_start
from ledger.domain.events import EVENT_TYPES, _from_data_reference, _to_data_reference
from ledger.domain.rules import DEFAULT_RULES_DICT, PRODUCTS, PROMOTION_DAYS_MAX

from .test_canonical_json import EVENTS
from .test_properties import START, commands, run

# --- the generated __init__ of frozen dataclasses ---------------------------------------

FAST_CLASSES = sorted(ORIGINAL_INITS, key=lambda cls: cls.__qualname__)
_values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.datetimes(), st.tuples(st.text(max_size=3)))


def _built_by_the_original(cls: type, *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    ORIGINAL_INITS[cls](obj, *args, **kwargs)
    return obj


def _slots(obj: Any) -> list[Any]:
    return [getattr(obj, f.name) for f in dataclasses.fields(obj)]


def test_every_domain_dataclass_has_the_fast_init() -> None:
    names = {cls.__name__ for cls in FAST_CLASSES}
    assert {"Lot", "MemberState", "TierStatus", "Command", "ConfirmBooking", "ExpirePoints", "Event"} <= names
    assert set(EVENT_TYPES) <= names


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FAST_CLASSES), st.data())
def test_fast_init_stores_what_the_dataclass_init_stores(cls: type, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    given_count = data.draw(st.integers(len(required), len(fields)))
    args = [data.draw(_values) for _ in fields[:given_count]]
    fast, original = cls(*args), _built_by_the_original(cls, *args)
    assert _slots(fast) == _slots(original)
    assert fast == original and repr(fast) == repr(original)
    by_name = {f.name: a for f, a in zip(fields, args, strict=False)}
    assert _slots(cls(**by_name)) == _slots(original)
    # Hashable when every value is (a default factory's dict, as CommandRequest's
    # metadata, is not).
    if all(isinstance(v, (int, str, datetime, tuple, type(None))) for v in _slots(original)) and cls is not MemberState:
        assert hash(fast) == hash(original)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, fields[0].name, None)


def test_fast_init_defaults_and_fresh_default_factories() -> None:
    a, b = MemberState("m"), MemberState("m")
    assert _slots(a) == _slots(_built_by_the_original(MemberState, "m"))
    # The defaults are shared, and immutable: a state's maps and orders never change.
    assert a == b and not a.lots and not a.closed and not a.bookings and not a.expiry and not a.qualifying
    assert isinstance(a.lots, Map) and a.lots.set("l", 1) is not a.lots and not a.lots
    lot = Lot("l", None, 5, 5, "active", None)
    assert (lot.qualifying, lot.spent, lot.expired) == (0, 0, 0)


@pytest.mark.parametrize("cls", FAST_CLASSES, ids=lambda cls: cls.__name__)
def test_fast_init_refuses_bad_arguments_with_the_same_message(cls: type) -> None:
    def message(build: Any, *args: Any, **kwargs: Any) -> str:
        with pytest.raises(TypeError) as info:
            build(*args, **kwargs)
        return str(info.value)

    too_many = [None] * (len(dataclasses.fields(cls)) + 1)
    for args, kwargs in (((), {}), (too_many, {}), ((), {"no_such_field": 1})):
        if not args and not kwargs and not any(
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in dataclasses.fields(cls)
        ):
            continue  # every field has a default: nothing is missing
        assert message(cls, *args, **kwargs) == message(
            lambda *a, **k: ORIGINAL_INITS[cls](object.__new__(cls), *a, **k), *args, **kwargs
        )


# --- to_data and from_data ---------------------------------------------------------------


def _with_types(data: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The data with each value's type, recursively: equal data of other types differ."""
    def typed(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return (type(value), [typed(v) for v in value])
        return (type(value), value)
    return [(k, *typed(v)) for k, v in data.items()]


def _check_round_trip(event: Any) -> None:
    data = to_data(event)
    assert _with_types(data) == _with_types(_to_data_reference(event))  # keys in the same order, same types
    name = type(event).__name__
    decoded = from_data(name, event.version, data)
    reference = _from_data_reference(type(event), data)
    assert type(decoded) is type(reference) and _slots(decoded) == _slots(reference)
    for value, ref in zip(_slots(decoded), _slots(reference), strict=True):
        assert type(value) is type(ref)
    assert decoded == event


def test_the_canonical_events_convert_as_the_reference_does() -> None:
    for event in EVENTS:
        _check_round_trip(event)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands(), st.booleans())
def test_decided_events_convert_as_the_reference_does(cmds: list, negative_allowed: bool) -> None:
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative_allowed})
    _, events = run(cmds, rules)
    for event in events:
        _check_round_trip(event)


def _outcome(decode: Any) -> tuple[Any, ...]:
    try:
        event = decode()
    except Exception as error:  # noqa: BLE001
        return ("raised", type(error), str(error), error.__context__ is None)
    return ("returned", type(event), _slots(event))


_GOOD = to_data(EVENTS[0])
_MALFORMED: list[Any] = [
    {k: v for k, v in _GOOD.items() if k != "lot_id"},  # missing
    {k: v for k, v in _GOOD.items() if k != "expires_at"},  # a missing datetime
    {**_GOOD, "extra": 1},  # unknown
    {**{k: v for k, v in _GOOD.items() if k != "lot_id"}, "extra": 1},  # as many keys, one of them wrong
    {**{k: v for k, v in _GOOD.items() if k != "breakdown"}, "extra": 1},
    {**_GOOD, "occurred_at": "not a date"},
    {**_GOOD, "occurred_at": 12},
    {**_GOOD, "occurred_at": None},  # passed through as None, as always
    {**_GOOD, "expires_at": None},
    {**_GOOD, "breakdown": [["a", "x"]]},
    {**_GOOD, "breakdown": [["a"]]},
    {**_GOOD, "breakdown": None},
    {**_GOOD, "breakdown": [[1, "2"]]},  # converted: str(1), int("2")
    list(_GOOD.items()),  # any mapping or pairs, as dict() takes them
    {},
]


@pytest.mark.parametrize("data", _MALFORMED)
def test_unexpected_data_decodes_or_fails_exactly_as_the_reference(data: Any) -> None:
    fast = _outcome(lambda: from_data("PointsEarned", PointsEarned.version, data))
    assert fast == _outcome(lambda: _from_data_reference(PointsEarned, data))
    if fast[0] == "raised":
        assert fast[3], "the error carries no context from the fast decoder"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["occurred_at", "lot_id", "points", "other"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=4), st.just("2026-05-04T10:00:00+00:00"))))
def test_any_data_decodes_or_fails_exactly_as_the_reference(data: dict[str, Any]) -> None:
    assert _outcome(lambda: from_data("PointsExpired", 1, data)) == _outcome(
        lambda: _from_data_reference(PointsExpired, data)
    )


# --- the decider's tier and the earn arithmetic ---------------------------------------------

_moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["B1", "B2"]), _moments, st.integers(0, 30_000)), max_size=20), _moments,
       st.integers(1, 36))
def test_the_deciders_tier_is_tier_status_tier(qualifying: list, at: datetime, window: int) -> None:
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "tier_window_months": window})
    # Tiers that share a threshold (two at 0): the last of them is the member's.
    shared = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "tier_window_months": window, "tiers": [
        {"name": "basic", "threshold": 0, "multiplier": "1"}, {"name": "welcome", "threshold": 0, "multiplier": "1.5"},
        {"name": "gold", "threshold": 100, "multiplier": "2"}, {"name": "gold-plus", "threshold": 100, "multiplier": "3"},
    ]})
    state = MemberState("m", 1, qualifying=SortedKeys.of(((at, b, points) for b, at, points in qualifying),
                                                         weighted=True))
    assert sorted(state.qualifying_entries()) == sorted((at, points) for _, at, points in qualifying)
    assert _tier(state, at, shared) == tier_status(state.qualifying_entries(), at, shared).tier
    assert _tier(state, at, rules) == tier_status(state.qualifying_entries(), at, rules).tier


def _compute_earn_reference(
    rules: ProgramRules, *, product: str, amount: Decimal, currency: str, tier: str, first_booking: bool, at: datetime
) -> tuple[int, int, tuple[tuple[str, int], ...]]:
    """`ProgramRules.compute_earn` as it was first written."""
    base = int((amount * rules.rate(product, currency)).to_integral_value(rounding=ROUND_FLOOR))
    breakdown: list[tuple[str, int]] = [(f"base:{product}:{currency}", base)]
    multiplier = rules.tier(tier).multiplier
    if multiplier != 1:
        breakdown.append((f"tier:{tier}", int((base * (multiplier - 1)).to_integral_value(ROUND_FLOOR))))
    on = at.date()
    for promo in rules.promotions:
        if promo.applies(product, on):
            bonus = base * (promo.multiplier - 1)
            breakdown.append((f"promotion:{promo.name}", int(bonus.to_integral_value(ROUND_FLOOR))))
    if first_booking and rules.first_booking_bonus:
        breakdown.append(("first_booking_bonus", rules.first_booking_bonus))
    return sum(points for _, points in breakdown), base, tuple(breakdown)


def _result(compute: Any) -> tuple[Any, ...]:
    try:
        return ("returned", compute())
    except Exception as error:  # noqa: BLE001
        return ("raised", type(error), str(error))


_amounts = st.one_of(
    st.decimals(min_value=-100, max_value=100_000, places=2),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1e40"), Decimal("-1e-40"), Decimal("NaN"), Decimal("-Infinity"), Decimal("0.999999")]),
)
_rules = [
    DEFAULT_RULES,
    ProgramRules.from_dict({
        **DEFAULT_RULES_DICT,
        "tiers": [{"name": "a", "threshold": 0, "multiplier": "0.5"},
                  {"name": "b", "threshold": 1, "multiplier": "1.333"},
                  {"name": "c", "threshold": 2, "multiplier": "1"}],
        "promotions": [{"name": "p", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "multiplier": "0.7"},
                       {"name": "q", "starts_on": "2026-06-01", "ends_on": "2026-06-30", "multiplier": "3.01",
                        "products": ["rail"]}],
        "first_booking_bonus": 0,
    }),
]


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_rules), st.data(), _amounts, st.sampled_from(["flight", "hotel", "package", "rail", "x"]),
       st.sampled_from(["EUR", "JPY", "SEK", "XXX"]), st.booleans(), _moments)
def test_compute_earn_is_the_reference(
    rules: ProgramRules, data: st.DataObject, amount: Decimal, product: str, currency: str, first: bool, at: datetime
) -> None:
    tier = data.draw(st.sampled_from([t.name for t in rules.tiers]))
    kwargs = dict(product=product, amount=amount, currency=currency, tier=tier, first_booking=first, at=at)
    assert _result(lambda: rules.compute_earn(**kwargs)) == _result(lambda: _compute_earn_reference(rules, **kwargs))


def test_the_promotions_remembered_per_day_stay_bounded_and_right() -> None:
    rules = ProgramRules.from_dict(DEFAULT_RULES_DICT)
    bound = PROMOTION_DAYS_MAX * len(PRODUCTS)
    day = datetime(2025, 1, 1, 12, tzinfo=UTC)
    for i in range(3 * PROMOTION_DAYS_MAX):
        at = day + timedelta(days=i)
        for product in PRODUCTS:
            kwargs = dict(product=product, amount=Decimal("123.45"), currency="EUR", tier="gold", first_booking=False,
                          at=at)
            assert rules.compute_earn(**kwargs) == _compute_earn_reference(rules, **kwargs)
        assert len(rules._promotions_on) <= bound


@settings(max_examples=500, deadline=None)
@given(st.decimals(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=True, allow_infinity=True))
def test_floor_of_a_product_is_its_floor_to_integral_value(a: Decimal, b: Decimal) -> None:
    """What compute_earn floors is always a product (never a signalling NaN, the one
    value the two differ on: the multiplication raises first)."""
    assert _result(lambda: floor(a * b)) == _result(lambda: int((a * b).to_integral_value(rounding=ROUND_FLOOR)))


# --- available(), available_and_pending() and spendable_lots(), with Lot.spendable inlined -----------------------------

# Every active lot has a date: each event that makes one active carries it.
_lots = st.builds(
    Lot, st.sampled_from(["l1", "l2", "l3", "l4", "l5"]), st.none(), st.integers(0, 100), st.integers(-5, 100),
    st.sampled_from(["pending", "active", "reversed"]), st.one_of(st.none(), _moments),
).filter(lambda lot: lot.status != "active" or lot.expires_at is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(_lots, max_size=8), st.integers(0, 50), _moments, st.integers(1, 4))
def test_available_and_spendable_lots_agree_with_lot_spendable(lots: list[Lot], debt: int, at: datetime,
                                                                lots_max: int) -> None:
    """The state's totals and expiry order against a walk over every lot, as the state
    answered before it kept them."""
    by_id = {lot.lot_id: lot for lot in lots}
    state = build_state("m", 1, by_id.values(), debt=debt)
    spendable = [lot for lot in by_id.values() if lot.spendable(at)]
    # Points past their date, not expired yet, go to the debt first (see MemberState.debt_owed).
    due = [lot for lot in by_id.values()
           if lot.status == "active" and lot.remaining > 0 and lot.expires_at is not None and not lot.spendable(at)]
    overdue = sum(lot.remaining for lot in due)
    assert state.overdue(at) == overdue
    assert state.available(at) == sum(lot.remaining for lot in spendable) - max(debt - overdue, 0)
    assert state.spendable_lots(at) == sorted(spendable, key=lambda lot: (lot.expires_at, lot.lot_id))
    assert state.due_lots(at, lots_max) == heapq.nsmallest(lots_max, due, key=lambda lot: (lot.expires_at, lot.lot_id))
    pending = sum(lot.remaining for lot in by_id.values() if lot.status == "pending")
    assert state.available_and_pending(at) == (state.available(at), pending)
    assert state.balance == sum(lot.remaining for lot in by_id.values()
                                if lot.status == "active" and lot.remaining > 0) - debt
    assert state.all_lots() == by_id


def test_naive_and_aware_times_still_fail_to_compare() -> None:
    lot = Lot("l", None, 5, 5, "active", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    state = build_state("m", 1, [lot])
    with pytest.raises(TypeError):
        state.available(datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        state.available_and_pending(datetime(2026, 1, 1))
    assert state.available(START) == 5 and START.date() < date(2026, 1, 1)


# --- add_months ----------------------------------------------------------------------------


def _add_months_reference(moment: datetime, months: int) -> datetime:
    import calendar

    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 12, 31),
                    timezones=st.none() | st.just(UTC) | st.timezones()),
       st.integers(-120, 120), st.booleans())
def test_add_months_is_replace_with_the_day_clamped(moment: datetime, months: int, fold: bool) -> None:
    from ledger.domain.timeutil import add_months

    moment = moment.replace(fold=int(fold))
    result = add_months(moment, months)
    expected = _add_months_reference(moment, months)
    assert result == expected and result.tzinfo is expected.tzinfo and result.fold == expected.fold
    assert type(result) is type(expected) and result.isoformat() == expected.isoformat()


# --- evolve without a draft: tier changes, and a command's two events -------------------------

_changes = st.lists(st.tuples(_moments, st.sampled_from(["silver", "gold", "platinum"])), max_size=4)


@settings(max_examples=300, deadline=None)
@given(_changes, _moments, st.sampled_from(["silver", "gold", "platinum"]))
def test_evolve_of_a_tier_change_is_the_drafts(changes: list, at: datetime, to_tier: str) -> None:
    """Dated after every change so far (an upgrade, the usual case) or before some (a
    change recorded late): the fast path keeps the changes in the draft's order."""
    state = fold("m", [TierChanged(when, "basic", name, "upgrade", "points", "1", "1", "v1", None)
                       for when, name in changes])
    event = TierChanged(at, "basic", to_tier, "upgrade", "points", "1", "1", "v1", None)
    assert evolve(state, event) == _evolve_in_draft(state, event)
    assert evolve(state, event).tiers == tuple(sorted((*state.tiers, (at, to_tier)), key=lambda c: c[0]))


@settings(max_examples=200, deadline=None)
@given(_changes, st.lists(_moments, min_size=1, max_size=4), st.booleans())
def test_evolve_all_of_an_earn_and_its_upgrade_is_the_fold(changes: list, earns: list, pending: bool) -> None:
    state = fold("m", [TierChanged(when, "basic", name, "upgrade", "points", "1", "1", "v1", None)
                       for when, name in changes])
    for n, at in enumerate(earns):
        earned = PointsEarned(at, f"L{n}", f"B{n}", "flight", "10.00", "EUR", 10 + n, 10,
                              "pending" if pending else "active",
                              None if pending else at + timedelta(days=365), "v1", (("base:flight:EUR", 10 + n),))
        upgrade = TierChanged(at, "basic", "gold", "upgrade", "points", "1", "1", "v1", None)
        for events in ([earned], [earned, upgrade], [upgrade, earned], [earned, upgrade, upgrade]):
            assert evolve_all(state, events) == fold("m", events, state)
        state = evolve_all(state, [earned, upgrade])


# --- the window's points without the window's start -------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 36), _moments, st.lists(st.tuples(st.sampled_from(["start", "shortest", "at"]),
                                                       st.integers(-2, 2), st.sampled_from([timedelta(microseconds=1),
                                                                                            timedelta(days=1)]),
                                                       st.integers(0, 500)), min_size=1, max_size=10),
       st.sampled_from(["rolling_12m", "calendar_year"]))
def test_points_in_window_is_the_sum_over_the_window(window: int, at: datetime, entries: list, kind: str) -> None:
    """Entries on either side of the window's start, of its shortest length (28 days a
    month) and of its end: the sum without the start's calendar arithmetic is the sum
    over (start, at]."""
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "tier_window_months": window,
                                    "tier_policy": {"window": kind}})
    start = window_start(rules, at)
    anchors = {"start": start, "shortest": at - timedelta(days=28 * window), "at": at}
    keys = [(anchors[anchor] + step * unit, f"B{n}", points) for n, (anchor, step, unit, points) in enumerate(entries)]
    state = MemberState("m", 1, qualifying=SortedKeys.of(keys, weighted=True))
    assert points_in_window(state, rules, at) == sum(p for when, _, p in keys if start < when <= at)


def test_recorded_rank_follows_the_state_and_the_instant() -> None:
    rules = DEFAULT_RULES
    top = rules.tiers[-1].name
    state = fold("m", [TierChanged(START, "basic", top, "upgrade", "points", "1", "1", "v1", None)])
    assert recorded_rank(state, rules, START - timedelta(seconds=1)) == 0
    assert recorded_rank(state, rules, START) == len(rules.tiers) - 1
    assert recorded_rank(state, rules, START - timedelta(seconds=1)) == 0  # not the answer kept for START
    assert recorded_rank(MemberState("m"), rules, START) == 0
