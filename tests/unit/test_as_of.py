"""A member as of an instant and statements between two, over random histories of every
command (the movement properties' sequences), some with booking events posted back-dated:
as-of is the fold of the events up to the instant, and a statement's lines add up from
the as-of balance at its start to the one at its end."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import (
    AmendBooking,
    CancelBooking,
    CompleteBooking,
    ConfirmBooking,
    MemberState,
    PointsEarned,
    RefundBooking,
    evolve,
    fold,
)
from ledger.domain.asof import Statement, as_of_prefix, balances, state_as_of, statement
from ledger.store import StoredEvent
from projections.asof import member_as_of
from projections.balances import COUNTERS, Balances

from .test_movement_properties import (
    LIMITS,
    MEMBERS,
    START,
    STEPS_MAX,
    Choices,
    World,
    next_command,
    play,
    programme,
    same,
)

BOOKING_COMMANDS = (ConfirmBooking, CompleteBooking, CancelBooking, RefundBooking, AmendBooking)


class _Unchecked(World):
    # A back-dated command is decided at its own time, on a state that holds later-dated
    # events: the movement properties' checks are stated for time moving forward.
    def check(self, at: datetime) -> None:
        pass


def play_back_dated(c: Choices) -> World:
    """`play`'s sequences, with booking events now and then posted dated up to 30 days
    back, as a booking system catching up sends them."""
    world = _Unchecked(programme(c))
    for member in MEMBERS:
        world.run(CompleteBooking(member, START, "B-first", "hotel", Decimal(200), "EUR"))
    at = START
    for i in range(c.number(1, STEPS_MAX)):
        at += timedelta(days=c.pick([0, 1, 10, 60, 200]), minutes=c.number(0, 600))
        command = next_command(c, world, i, at)
        if command is None:
            continue
        if isinstance(command, BOOKING_COMMANDS) and c.pick([True, False]):
            command = dataclasses.replace(command, occurred_at=at - timedelta(days=c.number(0, 30)))
        world.run(command)
    return world


def _instants(data: st.DataObject, events: list) -> list[datetime]:
    """Instants on, just before and just after the events' times, and between them."""
    times = sorted({e.occurred_at for e in events}) or [START]
    drawn = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=4))
    shifts = data.draw(st.lists(st.sampled_from([timedelta(0), timedelta(microseconds=-1), timedelta(microseconds=1),
                                                 timedelta(days=3), timedelta(days=-400), timedelta(days=900)]),
                                min_size=len(drawn), max_size=len(drawn)))
    return [t + s for t, s in zip(drawn, shifts, strict=True)]


def _available(state: MemberState | None, at: datetime) -> int:
    return 0 if state is None else state.available(at)


@LIMITS
@given(st.data())
def test_as_of_is_the_fold_of_the_events_up_to_the_instant(data: st.DataObject) -> None:
    c = Choices.drawn(data)
    world = play(c, programme(c))  # time moves forward only
    for member in MEMBERS:
        events = world.events[member]
        for at in _instants(data, events):
            upto = [e for e in events if e.occurred_at <= at]
            state = state_as_of(member, events, at)
            if not upto:
                assert state is None
                continue
            assert state is not None
            same(state, fold(member, upto))
            # Lots past their date at the instant are not available, whether or not an
            # expiry was recorded by then.
            assert state.available(at) == sum(lot.remaining for lot in state.fifo(at)) - state.debt_owed(at)


@LIMITS
@given(st.data())
def test_as_of_with_back_dated_events_is_a_state_the_ledger_held(data: st.DataObject) -> None:
    c = Choices.drawn(data)
    world = play_back_dated(c)
    for member in MEMBERS:
        events = world.events[member]
        ends = set(world.ends[member])
        for at in _instants(data, events):
            prefix = list(as_of_prefix(events, at))
            k = len(prefix)
            assert events[:k] == prefix and all(e.occurred_at <= at for e in prefix)
            assert k == len(events) or events[k].occurred_at > at
            assert k in ends, "a whole command's events, never part of them"
            state = state_as_of(member, events, at)
            assert (state is None) == (k == 0)
            if state is not None:
                same(state, fold(member, prefix))
        # As of the latest time on the record, the member is as it is now.
        latest = max(e.occurred_at for e in events)
        same(state_as_of(member, events, latest), world.states[member])


@LIMITS
@given(st.data())
def test_statement_lines_add_up_from_the_as_of_balance_at_its_start_to_the_one_at_its_end(
        data: st.DataObject) -> None:
    c = Choices.drawn(data)
    world = play_back_dated(c) if data.draw(st.booleans()) else play(c, programme(c))
    for member in MEMBERS:
        events = world.events[member]
        instants = sorted(set(_instants(data, events)) | {START - timedelta(days=1)})
        instants.append(instants[-1] + timedelta(days=data.draw(st.sampled_from([1, 400, 1200]))))
        previous: Statement | None = None
        for start, end in zip(instants, instants[1:], strict=False):
            s = statement(member, events, start, end)
            assert balances(s), s
            assert s.opening == _available(state_as_of(member, events, start), start)
            assert s.closing == _available(state_as_of(member, events, end), end)
            assert s.events == len(list(as_of_prefix(events, end))) - len(list(as_of_prefix(events, start)))
            if previous is not None:  # statements back to back chain
                assert previous.closing == s.opening and previous.closing_pending == s.opening_pending
            previous = s
        # Over the whole history: everything earned in the span, by rule.
        whole = statement(member, events, START - timedelta(days=1), max(instants[-1], START + timedelta(days=1)))
        assert balances(whole) and whole.opening == 0


def test_a_statement_names_earnings_by_rule_and_expiry_at_the_lots_date() -> None:
    """Given a booking earned and one redemption, and the lot's date passing without the
    expiry job: the statement credits the booking's breakdown rule by rule and debits the
    rest as expired at the date."""
    at = datetime(2026, 1, 10, tzinfo=UTC)
    earned = PointsEarned(at, "booking:B1", "B1", "flight", "100.00", "EUR", 1_100, 1_000, "active",
                          at + timedelta(days=30), "v1", (("base:flight:EUR", 1_000), ("first_booking_bonus", 100)))
    from ledger.domain import PointsRedeemed

    redeemed = PointsRedeemed(at + timedelta(days=1), "R1", 300, "rw", "miles", (("booking:B1", 300),))
    s = statement("m", [earned, redeemed], at - timedelta(days=1), at + timedelta(days=60))
    assert (s.opening, s.closing, s.events) == (0, 0, 2)
    assert s.earned_by_source == {"base:flight:EUR": 1_000, "first_booking_bonus": 100}
    assert (s.credits["earned"], s.debits["redeemed"], s.debits["expired"]) == (1_100, 300, 800)
    assert balances(s)
    before_expiry = statement("m", [earned, redeemed], at + timedelta(days=2), at + timedelta(days=29))
    assert (before_expiry.opening, before_expiry.closing, before_expiry.events) == (800, 800, 0)


def _stored(member: str, events: list) -> list[StoredEvent]:
    return [StoredEvent(i + 1, member, i + 1, e, {}, e.occurred_at, b"") for i, e in enumerate(events)]


def _totals_event_by_event(member: str, stored: list[StoredEvent]) -> list:
    """The balances read model's row as the live runner builds it: each amendment's lot
    status read as it stood before the amendment."""
    state = MemberState(member)
    totals = Balances(lot_status=lambda _, lot_id: state.lot(lot_id).status)
    for s in stored:
        totals.apply(s)
        state = evolve(state, s.event)
    return totals.rows[member]


@LIMITS
@given(st.data())
def test_the_lifetime_totals_as_of_an_instant_are_the_balances_read_models(data: st.DataObject) -> None:
    c = Choices.drawn(data)
    world = play(c, programme(c))
    for member in MEMBERS:
        events = world.events[member]
        at = data.draw(st.sampled_from(_instants(data, events)))
        stored = _stored(member, list(as_of_prefix(events, at)))
        member_at = member_as_of(member, stored)
        if not stored:
            assert member_at is None
            continue
        assert member_at is not None
        row = _totals_event_by_event(member, stored)
        assert member_at.totals == dict(zip(COUNTERS, row, strict=False))
        assert (member_at.last_activity, member_at.position) == (row[-2], row[-1])
        same(member_at.state, fold(member, [s.event for s in stored]))
        # The read model's available (whatever the lots' dates) is the state's.
        assert member_at.totals["available"] == member_at.state.balance
