"""Tier policies (P4), pure: tiers on points, spend, nights, segments and bookings, in a
rolling or calendar-year window; upgrades at once, in the command of the earn that
qualifies; downgrades one tier at a time at evaluation dates after the grace days, with
a warning before; the tier in force sets the multiplier; and a replay under the stored
rule versions reproduces every tier event and every earn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES_DICT,
    EPOCH,
    CompleteBooking,
    ConfirmBooking,
    LedgerError,
    MemberState,
    PointsEarned,
    ProgramRules,
    ReviewTier,
    RuleBook,
    RuleVersion,
    TierChanged,
    TierWarning,
    decide,
    evolve,
    fold,
    to_snapshot,
    from_snapshot,
)
from ledger.domain.tierpolicy import last_evaluation, measures, next_evaluation, qualified, rank_of
from ledger.domain.rules import TierPolicy

M = "m"
T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)  # outside every default promotion


def rules(version: str = "p4.1", *, policy: dict | None = None, tiers: list[dict] | None = None) -> ProgramRules:
    return ProgramRules.from_dict({
        **DEFAULT_RULES_DICT, "version": version, "promotions": [], "first_booking_bonus": 0,
        "tiers": tiers or [
            {"name": "member", "multiplier": "1"},
            {"name": "silver", "multiplier": "1.25", "qualify": {"points": 5000, "nights": 10, "bookings": 6}},
            {"name": "gold", "multiplier": "1.5", "qualify": {"points": 15000, "spend": "3000", "segments": 20}},
            {"name": "platinum", "multiplier": "2", "qualify": {"points": 40000, "nights": 60}},
        ],
        "tier_policy": policy or {},
    })


def complete(booking: str, amount: str, at: datetime, product: str = "hotel", nights: int | None = None,
             segments: int | None = None, currency: str = "EUR") -> CompleteBooking:
    return CompleteBooking(M, at, booking, product, Decimal(amount), currency, nights, segments)


def run(state: MemberState, command, book: RuleBook) -> tuple[MemberState, list]:
    events = decide(state, command, book.at(command.occurred_at))
    return fold(M, events, state), events


def test_old_rule_sets_load_as_before_the_threshold_is_the_points_criterion() -> None:
    old = ProgramRules.from_dict(DEFAULT_RULES_DICT)
    assert [(t.name, t.threshold, t.criteria) for t in old.tiers] == [
        ("member", 0, (("points", Decimal(0)),)), ("silver", 5000, (("points", Decimal(5000)),)),
        ("gold", 15000, (("points", Decimal(15000)),)), ("platinum", 40000, (("points", Decimal(40000)),))]
    assert old.tier_policy == TierPolicy()


def test_nights_qualify_at_once_in_the_command_of_the_completed_stay() -> None:
    book = RuleBook.single(rules())
    state, _ = run(MemberState(M), complete("B1", "100", T0, nights=4), book)
    state, events = run(state, complete("B2", "100", T0 + timedelta(days=1), nights=6), book)
    earned, changed = events
    assert isinstance(earned, PointsEarned) and earned.nights == 6 and "tier:silver" not in dict(earned.breakdown)
    assert (changed.from_tier, changed.to_tier, changed.direction, changed.criterion, changed.value,
            changed.threshold) == ("member", "silver", "upgrade", "nights", "10", "10")
    # The next earn is at silver's multiplier, and its breakdown names the tier.
    _, (next_earn,) = run(state, complete("B3", "100", T0 + timedelta(days=2)), book)
    assert dict(next_earn.breakdown)["tier:silver"] == 250
    # A pending booking counts only once completed.
    pending = decide(state, ConfirmBooking(M, T0 + timedelta(days=2), "B4", "hotel", Decimal("9000"), "EUR", 90),
                     book.at(T0))
    assert [type(e) for e in pending] == [PointsEarned]


def test_spend_counts_bookings_in_other_currencies_converted_and_a_calendar_year_window() -> None:
    book = RuleBook([RuleVersion(rules(policy={"window": "calendar_year"}), EPOCH)])
    from ledger.domain import FxRates
    book = RuleBook(book.versions, [FxRates(EPOCH, "EUR", {"CNY": Decimal("8")})])
    state, _ = run(MemberState(M), complete("B1", "16000", datetime(2026, 12, 30, tzinfo=UTC), "car", currency="CNY"),
                   book)  # 2,000 EUR in 2026
    state, events = run(state, complete("B2", "1000", datetime(2027, 1, 2, tzinfo=UTC), "car"), book)
    assert [type(e) for e in events] == [PointsEarned]  # the 2026 spend does not count in 2027
    have = measures(state, book.at(T0), datetime(2027, 1, 2, tzinfo=UTC))
    assert have["spend"] == Decimal("1000.00") and have["bookings"] == 1
    state, events = run(state, complete("B3", "16000", datetime(2027, 1, 3, tzinfo=UTC), "car", currency="CNY"), book)
    assert events[0].spend == "2000.00"
    assert (events[-1].to_tier, events[-1].criterion, events[-1].value) == ("gold", "spend", "3000.00")


def test_evaluation_dates() -> None:
    since = datetime(2026, 5, 20, 8, 0, tzinfo=UTC)
    monthly, yearly, anniversary = (TierPolicy(evaluation=e) for e in ("monthly", "calendar_year_end", "anniversary"))
    assert last_evaluation(monthly, since, since) is None
    assert last_evaluation(monthly, since, datetime(2026, 8, 3, tzinfo=UTC)) == datetime(2026, 8, 1, tzinfo=UTC)
    assert next_evaluation(monthly, since, since) == datetime(2026, 6, 1, tzinfo=UTC)
    assert last_evaluation(yearly, since, datetime(2026, 12, 31, tzinfo=UTC)) is None
    assert last_evaluation(yearly, since, datetime(2028, 3, 1, tzinfo=UTC)) == datetime(2028, 1, 1, tzinfo=UTC)
    assert next_evaluation(anniversary, since, datetime(2027, 5, 20, 7, 0, tzinfo=UTC)) == datetime(
        2027, 5, 20, 8, 0, tzinfo=UTC)
    assert last_evaluation(anniversary, since, datetime(2029, 1, 1, tzinfo=UTC)) == datetime(2028, 5, 20, 8, 0,
                                                                                          tzinfo=UTC)


def test_a_downgrade_waits_for_the_grace_days_and_is_warned_of_once_before() -> None:
    book = RuleBook.single(rules(policy={"evaluation": "calendar_year_end", "grace_days": 10, "warning_days": 20}))
    state, events = run(MemberState(M), complete("B1", "4000", T0), book)  # 40,000 points: platinum
    assert events[-1].to_tier == "platinum"
    assert decide(state, ReviewTier(M, datetime(2027, 1, 1, tzinfo=UTC)), book.at(T0)) == []  # qualifies yet
    # The points leave the rolling window on 6 April 2027; the evaluation of 1 January
    # 2028 plus 10 days is the downgrade, warned of 20 days before: 22 December 2027.
    assert decide(state, ReviewTier(M, datetime(2027, 12, 21, tzinfo=UTC)), book.at(T0)) == []
    state, (warning,) = run(state, ReviewTier(M, datetime(2027, 12, 22, tzinfo=UTC)), book)
    assert isinstance(warning, TierWarning) and warning.downgrade_at == datetime(2028, 1, 11, tzinfo=UTC)
    assert decide(state, ReviewTier(M, datetime(2027, 12, 23, tzinfo=UTC)), book.at(T0)) == []
    assert decide(state, ReviewTier(M, datetime(2028, 1, 10, 23, tzinfo=UTC)), book.at(T0)) == []
    state, (down,) = run(state, ReviewTier(M, datetime(2028, 1, 11, tzinfo=UTC)), book)
    assert (down.from_tier, down.to_tier, down.evaluation_at) == ("platinum", "gold", datetime(2028, 1, 1, tzinfo=UTC))
    assert decide(state, ReviewTier(M, datetime(2028, 6, 1, tzinfo=UTC)), book.at(T0)) == []  # next: 2029
    # Soft landing: a year on, one more tier, not down to member at once.
    state, events = run(state, ReviewTier(M, datetime(2029, 1, 11, tzinfo=UTC)), book)
    assert [(e.from_tier, e.to_tier) for e in events] == [("gold", "silver")]


def test_a_snapshot_keeps_the_tier_in_force() -> None:
    book = RuleBook.single(rules())
    state, _ = run(MemberState(M), complete("B1", "1000", T0, nights=12, segments=3), book)
    assert state.tiers == ((T0, "silver"),) and state.tier_facts["B1"] == (None, 12, 3)
    state, _ = run(state, ReviewTier(M, datetime(2027, 6, 1, tzinfo=UTC)), book)
    again = from_snapshot(M, state.version, to_snapshot(state))
    assert (again.tiers, again.tier_warned, dict(again.tier_facts)) == (
        state.tiers, state.tier_warned, dict(state.tier_facts))


# Random histories: bookings (some with nights and segments) and reviews at increasing
# times, under a book of two or three versions whose tiers, multipliers and policies
# differ, the later ones published in the middle of the history.

POLICIES = st.fixed_dictionaries({
    "window": st.sampled_from(["rolling_12m", "calendar_year"]),
    "evaluation": st.sampled_from(["monthly", "anniversary", "calendar_year_end"]),
    "grace_days": st.integers(0, 40), "warning_days": st.integers(0, 40)})


@st.composite
def books(draw) -> RuleBook:
    versions = [RuleVersion(rules("p4.1", policy=draw(POLICIES)), EPOCH)]
    for n in range(draw(st.integers(0, 2))):
        start = T0 + timedelta(days=draw(st.integers(1, 700)))
        scale = draw(st.sampled_from([1, 2, 3]))
        tiers = [
            {"name": "member", "multiplier": "1"},
            {"name": "silver", "multiplier": "1.1", "qualify": {"points": 2000 * scale, "nights": 5 * scale}},
            {"name": "gold", "multiplier": "1.7", "qualify": {"points": 9000 * scale, "segments": 8 * scale}},
            {"name": "platinum", "multiplier": "2.5", "qualify": {"points": 30000 * scale, "bookings": 12 * scale}},
        ]
        if start not in [v.effective_from for v in versions]:
            versions.append(RuleVersion(rules(f"p4.{n + 2}", policy=draw(POLICIES), tiers=tiers), start))
    return RuleBook(versions)


@st.composite
def histories(draw) -> list:
    commands, at = [], T0
    for n in range(draw(st.integers(1, 40))):
        at += timedelta(days=draw(st.integers(0, 90)), hours=draw(st.integers(0, 23)))
        if draw(st.booleans()):
            product = draw(st.sampled_from(["hotel", "flight", "rail"]))
            commands.append(complete(
                f"B{n}", str(draw(st.integers(0, 3000))), at, product,
                nights=draw(st.none() | st.integers(0, 30)) if product == "hotel" else None,
                segments=draw(st.none() | st.integers(0, 6)) if product != "hotel" else None))
        else:
            commands.append(ReviewTier(M, at))
    return commands


def _decided(book: RuleBook, commands: list) -> list[tuple[MemberState, object, list]]:
    state, out = MemberState(M), []
    for command in commands:
        try:
            events = decide(state, command, book.at(command.occurred_at))
        except LedgerError:
            continue
        out.append((state, command, events))
        for event in events:
            state = evolve(state, event)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), histories())
def test_soft_landing_upgrades_at_once_and_a_replay_reproduces_every_tier_and_multiplier(book, commands) -> None:
    decided = _decided(book, commands)
    downgraded_for: set[datetime] = set()
    for before, command, events in decided:
        at = command.occurred_at
        rules_then = book.at(at)
        after = fold(M, events, before)
        for event in events:
            if isinstance(event, TierChanged) and event.direction == "downgrade":
                # Never two tiers in one evaluation: one tier down, once per evaluation date.
                assert rank_of(rules_then, event.to_tier) == rank_of(rules_then, event.from_tier) - 1
                assert event.evaluation_at not in downgraded_for
                downgraded_for.add(event.evaluation_at)
                assert len([e for e in events if isinstance(e, TierChanged)]) == 1
            if isinstance(event, TierChanged) and event.direction == "upgrade":
                assert isinstance(command, CompleteBooking) and events[0] is not event  # after the earn
        if isinstance(command, CompleteBooking):
            # Upgrades at once: after the command, the tier its changes put in force is at
            # least the one the member qualifies for.
            q = qualified(rules_then, measures(after, rules_then, at))[0]
            assert q == 0 or rank_of(rules_then, after.tier_recorded_at(at)) >= q
            earned = events[0]
            assert isinstance(earned, PointsEarned)
            # The multiplier is the tier in force's before the earn, named in the breakdown.
            tier = rules_then.tiers[max(rank_of(rules_then, before.tier_recorded_at(at)),
                                        qualified(rules_then, measures(before, rules_then, at))[0])]
            labels = [label for label, _ in earned.breakdown if label.startswith("tier:")]
            assert labels == ([] if tier.multiplier == 1 else [f"tier:{tier.name}"])
    # The replay: each command decided again on the state folded from the stored events,
    # under the version each event names (or in force at its time), gives the same events.
    stored = [event for _, _, events in decided for event in events]
    state, i = MemberState(M), 0
    for _, command, events in decided:
        version = next((book.version(e.rules_version) for e in events if hasattr(e, "rules_version")), None)
        rules_then = version.rules if version is not None else book.at(command.occurred_at)
        assert decide(state, command, rules_then) == events
        state = fold(M, stored[i:i + len(events)], state)
        i += len(events)
