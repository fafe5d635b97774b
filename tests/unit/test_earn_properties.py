"""Earn beyond bookings (P3), checked with Hypothesis: caps are never exceeded over any
sequence of booking earns, activities, anniversaries and reversals across periods; each
activity type earns its rule; a referral earns once per referred member; and a replay
under the stored versions reproduces every earn's points and breakdown."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    EPOCH,
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
    decide_streams,
    evolve,
    fold,
    from_snapshot,
    to_snapshot,
)
from ledger.domain.earn import GrantAnniversary, RecordActivity, anniversary_at
from ledger.domain.earn_rules import ACTIVITY_TYPES, BOOKING_SOURCES, CAP_SOURCES, booking_source
from ledger.domain.events import ActivityPointsEarned, AnniversaryBonusGranted
from ledger.domain.rules import DEFAULT_RULES_DICT

START = datetime(2026, 10, 20, tzinfo=UTC)
MEMBERS = ("m0", "m1", "m2")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rules(version: str, draw: st.DrawFn, *, caps: bool = True) -> ProgramRules:
    activities = {kind: {"points": draw(st.integers(0, 300)), "per_booking_once": draw(st.booleans()),
                         "referred_points": draw(st.integers(0, 300))} for kind in ACTIVITY_TYPES}
    cap_list = [{"source": draw(st.sampled_from(CAP_SOURCES)), "period": draw(st.sampled_from(["month", "year"])),
                 "max_points": draw(st.integers(0, 2_000))} for _ in range(draw(st.integers(0, 4) if caps else st.just(0)))]
    return ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": version, "activities": activities,
                                   "anniversary": {"per_year": draw(st.integers(0, 500))}, "caps": cap_list})


@st.composite
def histories(draw: st.DrawFn, versions_max: int = 1) -> tuple[RuleBook, list]:
    versions = [RuleVersion(_rules("v0", draw), EPOCH)]
    at = START
    for n in range(1, draw(st.integers(1, versions_max))):
        versions.append(RuleVersion(_rules(f"v{n}", draw), START + timedelta(days=draw(st.integers(1, 500)))))
    commands: list = []
    for i in range(draw(st.integers(1, 40))):
        at += timedelta(days=draw(st.integers(0, 60)), minutes=draw(st.integers(0, 600)))
        member = draw(st.sampled_from(MEMBERS))
        booking = draw(st.sampled_from(["B0", "B1", "B2", "B3"]))
        match draw(st.sampled_from(["confirm", "complete", "cancel", "refund", "activity", "referral", "anniversary"])):
            case "confirm" | "complete" as kind:
                cls = ConfirmBooking if kind == "confirm" else CompleteBooking
                commands.append(cls(member, at, booking, "flight", Decimal(draw(st.integers(0, 3_000))), "EUR"))
            case "cancel":
                commands.append(CancelBooking(member, at, booking))
            case "refund":
                commands.append(RefundBooking(member, at, booking))
            case "activity":
                kind = draw(st.sampled_from([k for k in ACTIVITY_TYPES if k != "referral.completed"]))
                commands.append(RecordActivity(member, at, f"a{i}", kind, "wechat" if kind == "social.shared" else None,
                                               draw(st.sampled_from([None, booking]))))
            case "referral":
                commands.append(RecordActivity(member, at, f"r{i}", "referral.completed",
                                               referred_member_id=draw(st.sampled_from(MEMBERS))))
            case "anniversary":
                commands.append(GrantAnniversary(member, at, draw(st.integers(1, 3))))
    return RuleBook(versions), commands


def run(book: RuleBook, commands: list) -> tuple[dict[str, MemberState], list[tuple[object, dict[str, MemberState], dict]]]:
    """Each command decided under the version in force at its time; (final states, and
    per applied command: the command, the states before, the events by stream)."""
    states = {m: MemberState(m) for m in MEMBERS}
    applied = []
    for command in commands:
        read = {m: states[m] for m in command.member_ids}
        try:
            events = decide_streams(read, command, book.at(command.occurred_at))
        except LedgerError:
            continue
        applied.append((command, dict(states), events))
        for stream, stream_events in events.items():
            states[stream] = fold(stream, stream_events, states[stream])
    return states, applied


def _granted(event: object) -> list[tuple[str, int]]:
    """(source, points granted) of an earn event, from its breakdown and its points alone."""
    if isinstance(event, PointsEarned):
        by_source: dict[str, int] = defaultdict(int)
        for label, points in event.breakdown:
            source = label.split(":")[1] if label.startswith("cap:") else booking_source(label)
            by_source[source] += points
        assert sum(by_source.values()) == event.points
        return [(s, p) for s, p in by_source.items() if s in BOOKING_SOURCES]
    if isinstance(event, ActivityPointsEarned):
        return [(event.activity_type, event.points)]
    if isinstance(event, AnniversaryBonusGranted):
        return [("anniversary", event.points)]
    return []


@SETTINGS
@given(histories())
def test_caps_are_never_exceeded_and_the_breakdown_says_what_they_withheld(history: tuple[RuleBook, list]) -> None:
    book, commands = history
    rules = book.versions[0].rules
    _, applied = run(book, commands)
    granted: dict[tuple[str, str, str], int] = defaultdict(int)  # (member, source, period key) -> points
    for _, _, events in applied:
        for stream, stream_events in events.items():
            for event in stream_events:
                if isinstance(event, (PointsEarned, ActivityPointsEarned, AnniversaryBonusGranted)):
                    assert sum(p for _, p in event.breakdown) == event.points
                if isinstance(event, PointsEarned):
                    assert event.tier is not None  # a capped earn keeps the tier it was priced at
                for source, points in _granted(event):
                    assert points >= 0
                    at = event.occurred_at.astimezone(UTC)
                    granted[(stream, source, f"{at.year}-{at.month:02d}")] += points
                    granted[(stream, source, f"{at.year}")] += points
    for cap in rules.caps:
        for (member, source, key), points in granted.items():
            if source == cap.source and (len(key) == 7) == (cap.period == "month"):
                assert points <= cap.max_points, (member, cap, key, points)


@SETTINGS
@given(st.data())
def test_each_activity_type_earns_its_rule_and_names_it(data: st.DataObject) -> None:
    rules = _rules("v", data.draw, caps=False)
    kind = data.draw(st.sampled_from([k for k in ACTIVITY_TYPES if k != "referral.completed"]))
    booking = data.draw(st.sampled_from([None, "B1"]))
    state = MemberState("m0")
    first = decide_streams({"m0": state}, RecordActivity("m0", START, "a1", kind, "x" if kind == "social.shared"
                                                         else None, booking), rules)["m0"]
    (event,) = first
    rule = rules.activities[kind]
    assert event.points == rule.points and event.breakdown == ((f"activity:{kind}", rule.points),)
    assert event.rules_version == "v" and (event.lot_id is not None) == (rule.points > 0)
    again = decide_streams({"m0": fold("m0", first, state)}, RecordActivity(
        "m0", START, "a2", kind, "x" if kind == "social.shared" else None, booking), rules)["m0"][0]
    once = rule.per_booking_once and booking is not None and rule.points > 0
    assert again.points == (0 if once else rule.points)


@SETTINGS
@given(histories())
def test_a_referral_earns_both_members_once_per_referred_member(history: tuple[RuleBook, list]) -> None:
    book, commands = history
    states, applied = run(book, commands)
    referred: dict[str, list[str]] = defaultdict(list)
    for command, before, events in applied:
        if isinstance(command, RecordActivity) and command.activity_type == "referral.completed":
            assert command.referred_member_id != command.member_id
            assert set(events) == {command.member_id, command.referred_member_id}
            roles = {stream: [e.role for e in stream_events] for stream, stream_events in events.items()}
            assert roles == {command.member_id: ["referrer"], command.referred_member_id: ["referred"]}
            referred[command.referred_member_id].append(command.member_id)
    for member, referrers in referred.items():
        assert len(referrers) == 1 and states[member].earn.referred_by == referrers[0]


@SETTINGS
@given(histories(versions_max=3))
def test_a_replay_under_the_stored_versions_reproduces_every_earn(history: tuple[RuleBook, list]) -> None:
    """Given the events and the stored versions only: each earn decided again, on the
    state its stream's events before it fold to, under the version the event names,
    gives the same events; and the folded state survives a snapshot."""
    book, commands = history
    states, applied = run(book, commands)
    replayed = {m: MemberState(m) for m in MEMBERS}
    for command, _, events in applied:
        named = {e.rules_version for evs in events.values() for e in evs if hasattr(e, "rules_version")}
        for version in named:
            rules = book.version(version).rules  # type: ignore[union-attr]
            assert decide_streams({m: replayed[m] for m in command.member_ids}, command, rules) == events
        for stream, stream_events in events.items():
            state = replayed[stream]
            for event in stream_events:
                state = evolve(state, event)
            replayed[stream] = state
    for m in MEMBERS:
        assert replayed[m].earn == states[m].earn
        assert from_snapshot(m, states[m].version, to_snapshot(states[m])).earn == states[m].earn


def test_an_anniversary_is_due_by_years_since_the_first_activity_in_utc() -> None:
    since = datetime(2024, 2, 29, 23, 30, tzinfo=UTC)
    assert anniversary_at(since, 1) == datetime(2025, 2, 28, 23, 30, tzinfo=UTC)
    assert anniversary_at(since, 4) == datetime(2028, 2, 29, 23, 30, tzinfo=UTC)
