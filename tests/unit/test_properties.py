"""Properties of the domain for any sequence of commands, checked with Hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES,
    AdjustPoints,
    CancelBooking,
    CompleteBooking,
    ConfirmBooking,
    DebtSettled,
    EarnReversed,
    ExpirePoints,
    LedgerError,
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
    evolve,
    build_state,
    fold,
    from_snapshot,
    to_snapshot,
)
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.store import StoredEvent
from projections.balances import COUNTERS, Balances
from projections.expiry import ExpirySchedule

M = "m"
START = datetime(2025, 12, 1, tzinfo=UTC)
bookings = st.sampled_from(["B0", "B1", "B2", "B3", "B4", "B5"])
amounts = st.decimals(min_value=0, max_value=5000, places=2).map(Decimal)
products = st.sampled_from(["flight", "hotel", "package", "rail", "car"])


@st.composite
def commands(draw: st.DrawFn) -> list:
    at, out = START, []
    for i in range(draw(st.integers(1, 40))):
        at += timedelta(days=draw(st.integers(0, 200)), minutes=draw(st.integers(0, 600)))
        kind = draw(st.sampled_from(["confirm", "complete", "cancel", "refund", "redeem", "expire", "adjust"]))
        match kind:
            case "confirm":
                out.append(ConfirmBooking(M, at, draw(bookings), draw(products), draw(amounts), "EUR"))
            case "complete":
                out.append(CompleteBooking(M, at, draw(bookings), draw(products), draw(amounts), "EUR"))
            case "cancel":
                out.append(CancelBooking(M, at, draw(bookings)))
            case "refund":
                out.append(RefundBooking(M, at, draw(bookings)))
            case "redeem":
                out.append(RedeemPoints(M, at, f"R{i}", draw(st.integers(1, 30_000)), "rw", "miles"))
            case "expire":  # a few lots at a time, as the scheduler's bounded commands take them
                out.append(ExpirePoints(M, at, draw(st.sampled_from([1, 2, 1_000]))))
            case "adjust":
                points = draw(st.integers(-20_000, 20_000).filter(bool))
                out.append(AdjustPoints(M, at, f"A{i}", points, "goodwill", "support"))
    return out


def independent_lots(events: list) -> dict[str, list]:
    """What is left of each lot, from the events' own figures only: [remaining, status, expires_at]."""
    lots: dict[str, list] = {}
    for e in events:
        match e:
            case PointsEarned():
                lots[e.lot_id] = [e.points, e.status, e.expires_at]
            case PendingPointsActivated():
                lots[e.lot_id][1:] = ["active", e.expires_at]
            case PointsRedeemed() | PointsAdjusted() if e.lots:
                for lot_id, amount in e.lots:
                    lots[lot_id][0] -= amount
            case PointsAdjusted():
                lots[e.lot_id] = [e.points, "active", e.expires_at]  # type: ignore[index]
            case PointsExpired() | DebtSettled():
                lots[e.lot_id][0] -= e.points
            case EarnReversed():
                for lot_id, amount in e.lots:
                    lots[lot_id][0] -= amount
                lots[f"booking:{e.booking_id}"][1] = "reversed"
    return lots


def reference_available(events: list, at: datetime) -> int:
    """Available at `at`, from the events' amounts as simply as possible and without the
    figures of the expiry's own events: each lot's points less what was taken from it,
    the debt as the shortfalls debited. A lot the expiry job reached (any expiry event
    names it) and, at `at`, every other lot past its date, soonest first, pays the debt
    with what it has left and loses the rest. Available is what then remains on lots,
    less what is still owed."""
    lots: dict[str, list] = {}  # lot id -> [points left, active, expires_at]
    debt = 0

    def job(lot_id: str) -> None:
        nonlocal debt
        paid = min(debt, lots[lot_id][0])
        debt -= paid
        lots[lot_id][0] = 0

    for e in events:
        match e:
            case PointsEarned():
                lots[e.lot_id] = [e.points, e.status == "active", e.expires_at]
            case PendingPointsActivated():
                lots[e.lot_id][1:] = [True, e.expires_at]
            case PointsAdjusted() if e.points > 0:
                lots[e.lot_id] = [e.points, True, e.expires_at]  # type: ignore[index]
            case PointsRedeemed() | PointsAdjusted():
                for lot_id, amount in e.lots:
                    lots[lot_id][0] -= amount
            case EarnReversed():
                for lot_id, amount in e.lots:
                    lots[lot_id][0] -= amount
                lots[f"booking:{e.booking_id}"][1] = False
                debt += e.shortfall if e.shortfall_debited else 0
            case PointsExpired() | DebtSettled():
                job(e.lot_id)
    for lot_id, _ in sorted(((k, v) for k, v in lots.items() if v[1] and v[2] <= at), key=lambda kv: (kv[1][2], kv[0])):
        job(lot_id)
    return sum(left for left, active, _ in lots.values() if active) - debt


def conserved(events: list, state: MemberState) -> None:
    """Conservation, the ledger's invariant: every point that came in (earned, pending or
    active, or credited) is still on a lot or went out (redeemed, debited, expired, taken
    back by a reversal, or paid a debt); every point owed (a shortfall debited) is owed
    still or was paid."""
    came_in = went_out = owed = paid = 0
    for e in events:
        match e:
            case PointsEarned():
                came_in += e.points
            case PointsAdjusted() if e.points > 0:
                came_in += e.points
            case PointsRedeemed() | PointsAdjusted():
                assert abs(e.points) == sum(n for _, n in e.lots)
                went_out += abs(e.points)
            case PointsExpired():
                went_out += e.points
            case DebtSettled():
                went_out += e.points
                paid += e.points
            case EarnReversed():
                went_out += sum(n for _, n in e.lots)
                owed += e.shortfall if e.shortfall_debited else 0
    assert came_in == sum(lot.remaining for lot in state.all_lots().values()) + went_out
    assert owed == state.debt + paid and state.debt >= 0


def run(cmds: list, rules: ProgramRules) -> tuple[MemberState, list]:
    state, events = MemberState(M), []
    for command in cmds:
        try:
            new = decide(state, command, rules)
        except LedgerError:
            continue
        for event in new:
            state = evolve(state, event)
        events += new
        if isinstance(command, RedeemPoints):
            assert state.available(command.occurred_at) >= -state.debt
        if not rules.allow_negative_balance:
            assert state.debt == 0
            assert state.available(command.occurred_at) >= 0
        assert all(lot.remaining >= 0 for lot in state.all_lots().values())
        indexes_agree(state)
    return state, events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands(), st.booleans())
def test_balances_add_up_and_match_the_projections(cmds: list, negative_allowed: bool) -> None:
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative_allowed})
    state, events = run(cmds, rules)
    at = cmds[-1].occurred_at

    lots = independent_lots(events)
    assert {k: v[0] for k, v in lots.items()} == {k: lot.remaining for k, lot in state.all_lots().items()}
    assert state.available(at) == reference_available(events, at)
    conserved(events, state)

    stored = [StoredEvent(i + 1, M, i + 1, e, {}, START, b"") for i, e in enumerate(events)]
    balances, expiry = Balances(), ExpirySchedule()
    for s in stored:
        balances.apply(s)
        expiry.apply(s)
    if not events:
        return
    row = dict(zip(COUNTERS, balances.rows[M], strict=False))
    assert row["available"] == state.balance
    assert row["pending"] == state.pending
    assert row["debt"] == state.debt
    assert row["available"] == (
        row["lifetime_earned"] + row["lifetime_adjusted"] - row["lifetime_redeemed"] - row["lifetime_expired"]
        - (row["lifetime_reversed"] - sum(e.pending_points for e in events if isinstance(e, EarnReversed)))
        - row["debt"] - sum(e.points for e in events if isinstance(e, DebtSettled))
    )
    assert {lot: r[2] for (_, lot), r in expiry.rows.items()} == {
        k: lot.remaining for k, lot in state.all_lots().items()}


@settings(max_examples=200, deadline=None)
@given(commands())
def test_redemptions_never_overdraw(cmds: list) -> None:
    state = MemberState(M)
    for command in cmds:
        before = state.available(command.occurred_at)
        try:
            new = decide(state, command, DEFAULT_RULES)
        except LedgerError:
            continue
        for event in new:
            state = evolve(state, event)
        if isinstance(command, RedeemPoints):
            assert command.points <= before
            assert state.available(command.occurred_at) == before - command.points


def _snapshot(state: MemberState) -> tuple:
    """Everything a state holds, spelt out as plain values."""
    return (state, dict(state.lots), dict(state.closed), dict(state.bookings), list(state.expiry),
            list(state.qualifying), state.active, state.pending, state.debt)


def indexes_agree(state: MemberState) -> None:
    """What the state keeps beside its lots is what its lots give, worked out from
    scratch: only open lots are hot, the expiry order holds exactly the open active
    lots, the tier entries and the totals are theirs."""
    lots = state.all_lots()
    assert all(lot.status == "pending" or (lot.status == "active" and lot.remaining > 0)
               for lot in state.lots.values())
    assert not any(lot.status == "pending" or (lot.status == "active" and lot.remaining > 0)
                   for lot in state.closed.values())
    assert list(state.expiry) == sorted((lot.expires_at, lot.lot_id) for lot in lots.values()
                                        if lot.status == "active" and lot.remaining > 0)
    assert sorted(state.qualifying_entries()) == sorted(
        (lot.qualified_at, lot.qualifying) for lot in lots.values() if lot.qualified_at is not None)
    assert state.active == sum(lot.remaining for lot in lots.values() if lot.status == "active")
    assert state.pending == sum(lot.remaining for lot in lots.values() if lot.status == "pending")
    assert _snapshot(state) == _snapshot(build_state(
        state.member_id, state.version, lots.values(), state.bookings.items(), state.debt, state.holds.values(),
        state.holds_closed.items(), state.redemptions.values(), state.transfers, tiers=state.tiers,
        tier_warned=state.tier_warned, tier_facts=state.tier_facts.items(), earn=state.earn))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands(), st.booleans(), st.data())
def test_fold_gives_the_state_evolve_gives_one_event_at_a_time(cmds: list, negative_allowed: bool, data) -> None:
    """`fold` keeps mutable locals where `evolve` builds a new state per event: from no
    state, and from any state part-way through, they must agree exactly."""
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative_allowed})
    _, events = run(cmds, rules)
    states = [MemberState(M)]
    for event in events:
        states.append(evolve(states[-1], event))
    for state in states:
        indexes_agree(state)
    assert _snapshot(fold(M, events)) == _snapshot(states[-1])
    assert _snapshot(fold(M, iter(events))) == _snapshot(states[-1])
    k = data.draw(st.integers(0, len(events)))
    before = _snapshot(states[k])[1:]
    assert _snapshot(fold("ignored", events[k:], states[k])) == _snapshot(states[-1])
    assert _snapshot(states[k])[1:] == before  # the state folded from is left as it was
    assert fold(M, [], states[k]) is states[k]
    assert _snapshot(fold(M, events[:k])) == _snapshot(states[k])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands(), st.booleans(), st.data())
def test_a_snapshot_gives_back_the_state_it_was_taken_of(cmds: list, negative_allowed: bool, data) -> None:
    """A snapshot (through JSON, as stored) stands for the fold of the history up to its
    version: the state must come back exactly, and decide the same events from there."""
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative_allowed})
    _, events = run(cmds, rules)
    k = data.draw(st.integers(0, len(events)))
    state = fold(M, events[:k])
    stored = orjson.loads(orjson.dumps(to_snapshot(state)))
    back = from_snapshot(M, state.version, stored)
    assert _snapshot(back) == _snapshot(state)
    assert fold(M, events[k:], back) == fold(M, events)
    for command in cmds:
        try:
            expected = decide(state, command, rules)
        except LedgerError as error:
            expected = repr(error)
        try:
            got = decide(back, command, rules)
        except LedgerError as error:
            got = repr(error)
        assert got == expected


NEGATIVE_RULES = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands())
def test_available_under_expiry_with_a_negative_balance_is_what_the_events_give(cmds: list) -> None:
    """With the negative-balance policy, after every command and at any later time (past
    dates the expiry job has not reached yet included), available is the reference's,
    and points are conserved: a debt is paid once, never charged again at expiry."""
    state, events = MemberState(M), []
    for command in cmds:
        try:
            new = decide(state, command, NEGATIVE_RULES)
        except LedgerError:
            continue
        state = fold(M, new, state)
        events += new
        for at in (command.occurred_at, command.occurred_at + timedelta(days=400)):
            assert state.available(at) == reference_available(events, at)
        conserved(events, state)
