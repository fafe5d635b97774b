"""The rule book: the version in force at any instant, and replays under the stored
versions that reproduce every earn exactly, over random histories with versions
published in the middle."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES,
    EPOCH,
    CompleteBooking,
    FxRates,
    ConfirmBooking,
    LedgerError,
    MemberState,
    PointsEarned,
    ProgramRules,
    RuleBook,
    RuleVersion,
    decide,
    evolve,
)
from ledger.domain.rules import DEFAULT_RULES_DICT

START = datetime(2026, 1, 1, tzinfo=UTC)
products = st.sampled_from(["flight", "hotel", "package", "rail", "car"])


def _rules(name: str, rate: int, silver: str, bonus: int) -> ProgramRules:
    return ProgramRules.from_dict({
        **DEFAULT_RULES_DICT, "version": name, "first_booking_bonus": bonus,
        "earn_rates": {p: {"EUR": str(rate + i)} for i, p in enumerate(["flight", "hotel", "package", "rail", "car"])},
        "tiers": [{"name": "member", "threshold": 0, "multiplier": "1"},
                  {"name": "silver", "threshold": 2_000, "multiplier": silver},
                  {"name": "gold", "threshold": 20_000, "multiplier": "2"}],
    })


@given(starts=st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True),
       instant=st.integers(-100, 11_000))
def test_at_picks_the_version_in_force(starts: list[int], instant: int) -> None:
    versions = [RuleVersion(_rules(f"v{s}", 1, "1.25", 0), START + timedelta(hours=s)) for s in starts]
    book = RuleBook(reversed(versions))  # in any order
    at = START + timedelta(hours=instant)
    in_force = [v for v in versions if v.effective_from <= at]
    expected = max(in_force, key=lambda v: v.effective_from) if in_force else min(
        versions, key=lambda v: v.effective_from)  # before the first: the first
    assert book.at(at) is expected.rules
    assert book.version_at(at) is expected
    assert book.version(expected.rules.version) is expected


def test_a_version_starts_at_its_instant_exactly() -> None:
    later = _rules("2027.1", 9, "1.5", 0)
    book = RuleBook([RuleVersion(DEFAULT_RULES, EPOCH), RuleVersion(later, START)])
    assert book.at(START - timedelta(microseconds=1)) is DEFAULT_RULES
    assert book.at(START) is later
    assert book.latest.rules is later


@given(starts=st.lists(st.integers(0, 1_000), min_size=1, max_size=6, unique=True),
       fx_starts=st.lists(st.integers(0, 1_000), max_size=6, unique=True),
       instants=st.lists(st.integers(-50, 1_100), min_size=1, max_size=30))
def test_at_in_any_order_of_instants_is_the_version_and_the_rates_in_force(
        starts: list[int], fx_starts: list[int], instants: list[int]) -> None:
    """`at` keeps its last answer for the instants it holds for: a sequence of instants
    (repeated, forwards, backwards, on a start exactly) gets what a fresh book gives."""
    versions = [RuleVersion(_rules(f"v{s}", 1, "1.25", 0), START + timedelta(hours=s)) for s in starts]
    rates = [FxRates(START + timedelta(hours=s), "EUR", {"USD": Decimal(1 + n)}) for n, s in enumerate(fx_starts)]
    book = RuleBook(versions, rates)
    for hours in [*instants, *starts, *fx_starts, *instants]:
        at = START + timedelta(hours=hours)
        fresh = RuleBook(versions, rates).at(at)
        assert book.at(at) == fresh
        assert book.at(at).version == book.version_at(at).rules.version
        assert book.at(at).fx == book.fx_at(at)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple]:
    """Steps in processing order: ("publish", rules, effective_from) at the processing
    clock or later, or ("command", command), dated at the clock or back-dated up to
    90 days; the clock moves forward between steps."""
    clock, steps, booking = START, [], 0
    for i in range(draw(st.integers(1, 40))):
        clock += timedelta(hours=draw(st.integers(0, 24 * 20)))
        if draw(st.integers(0, 4)) == 0:
            lead = timedelta(hours=draw(st.integers(1, 24 * 30)))  # later than now, as publishing requires
            rules = _rules(f"v{i}", draw(st.integers(0, 20)), draw(st.sampled_from(["1", "1.25", "1.5"])),
                           draw(st.sampled_from([0, 100, 500])))
            steps.append(("publish", rules, clock + lead))
            continue
        at = clock - timedelta(hours=draw(st.integers(0, 24 * 90)) if draw(st.booleans()) else 0)
        booking += 1
        kind = draw(st.sampled_from([ConfirmBooking, CompleteBooking]))
        amount = draw(st.decimals(min_value=0, max_value=3000, places=2))
        steps.append(("command", kind("m", at, f"B{booking}", draw(products), Decimal(amount), "EUR")))
    return steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_replay_under_the_stored_versions_reproduces_every_earn(steps: list[tuple]) -> None:
    versions = [RuleVersion(DEFAULT_RULES, EPOCH)]
    book = RuleBook(versions)
    state = MemberState("m")
    decided: list[tuple[MemberState, object, PointsEarned, datetime]] = []  # state before, command, event, when
    for step in steps:
        if step[0] == "publish":
            if step[2] in {v.effective_from for v in versions}:
                continue  # one version per start, as the table's unique index says
            versions.append(RuleVersion(step[1], step[2]))
            book = RuleBook(versions)
            continue
        command = step[1]
        try:
            events = decide(state, command, book.at(command.occurred_at))
        except LedgerError:
            continue
        for event in events:
            if isinstance(event, PointsEarned):
                decided.append((state, command, event, command.occurred_at))
            state = evolve(state, event)
    final = RuleBook(versions)
    starts = sorted(v.effective_from for v in versions)
    for before, command, event, at in decided:
        stored = final.version(event.rules_version)
        assert stored is not None
        # The rule for late and back-dated events: the version in force at occurred_at,
        # which no later publication changes (a version never starts in the past).
        assert stored.effective_from == starts[bisect_right(starts, at) - 1]
        assert final.at(at) is stored.rules
        replayed, *_ = decide(before, command, stored.rules)
        assert (replayed.points, replayed.breakdown, replayed.qualifying_points) == (
            event.points, event.breakdown, event.qualifying_points)
        assert replayed == event
