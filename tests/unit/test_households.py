"""Household pools, decided on the states of every stream they read: given these events,
when this command, then these events by stream (or this error)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import (
    DEFAULT_RULES,
    AddHouseholdMember,
    AdjustPoints,
    Command,
    ConcurrencyConflict,
    HouseholdChanged,
    ConfirmBooking,
    CreateHousehold,
    HouseholdCreated,
    HouseholdInsufficientPoints,
    HouseholdJoined,
    HouseholdLeft,
    HouseholdMemberAdded,
    HouseholdMemberNotFound,
    HouseholdMemberRemoved,
    HouseholdNotFound,
    HouseholdPointsRedeemed,
    LimitExceeded,
    MemberNotFound,
    MemberState,
    MovementConflict,
    PointsRedeemedForHousehold,
    RedeemForHousehold,
    RedemptionReversed,
    RemoveHouseholdMember,
    ReverseRedemption,
    decide_streams,
    fold,
    from_data,
    from_snapshot,
    household_stream_id,
    to_data,
    to_snapshot,
)

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
H = "fam-1"
HS = household_stream_id(H)
RULES = replace(DEFAULT_RULES, household_members_max=3)


class World:
    """The states of every stream, moved by what each command decides."""

    def __init__(self) -> None:
        self.states: dict[str, MemberState] = {}

    def state(self, stream_id: str) -> MemberState:
        return self.states.get(stream_id) or MemberState(stream_id)

    def decide(self, command: Command) -> dict[str, list]:
        return decide_streams({m: self.state(m) for m in command.member_ids}, command, RULES)

    def do(self, command: Command) -> dict[str, list]:
        decided = self.decide(command)
        for stream_id, events in decided.items():
            self.states[stream_id] = fold(stream_id, events, self.state(stream_id))
        return decided

    def credit(self, member_id: str, points: int, months: int, n: int = 1) -> None:
        """A lot of `points` expiring in about `months` months (an adjustment lasts the
        rules' expiry period from its date, so it is dated back accordingly)."""
        at = T0 - timedelta(days=30 * (RULES.expiry_months - months))
        if not self.state(member_id).exists:  # a pending booking makes the member known, and adds nothing spendable
            self.do(ConfirmBooking(member_id, at, f"{member_id}-joined", "flight", Decimal("10"), "EUR"))
        self.do(AdjustPoints(member_id, at, f"{member_id}-{n}", points, "goodwill", "support"))


def create(head: str = "A") -> CreateHousehold:
    return CreateHousehold(HS, T0, H, head)


def add(member: str) -> AddHouseholdMember:
    return AddHouseholdMember(HS, T0, H, member)


def redeem(world: World, points: int, rid: str = "HR1", roster: tuple[str, ...] | None = None) -> RedeemForHousehold:
    roster = world.state(HS).household_roster if roster is None else roster
    return RedeemForHousehold(HS, T0, H, rid, points, "reward-1", "voucher", roster)


def household(*members: str) -> World:
    world = World()
    for n, member in enumerate(members, 1):
        world.credit(member, 100, 12, n)
    world.do(create(members[0]))
    for member in members[1:]:
        world.do(add(member))
    return world


def test_a_household_is_created_on_its_own_stream_and_its_head_joins_it() -> None:
    world = household("A")
    assert world.state(HS).household_roster == ("A",)
    assert world.state("A").household_id == H
    world2 = World()
    world2.credit("A", 100, 12)
    decided = world2.decide(create("A"))
    assert [type(e) for e in decided[HS]] == [HouseholdCreated]
    assert decided["A"] == [HouseholdJoined(occurred_at=T0, household_id=H, role="head")]


def test_a_household_stream_can_never_be_a_member_id() -> None:
    assert "/" in HS  # the member id grammar has no '/'


def test_creating_a_household_twice_or_for_an_unknown_head_is_refused() -> None:
    world = household("A")
    with pytest.raises(MovementConflict, match="exists already"):
        world.decide(create("A"))
    with pytest.raises(MemberNotFound):
        World().decide(create("nobody"))


def test_the_roster_is_limited_to_the_rules_household_members_max() -> None:
    world = household("A", "B", "C")
    assert world.state(HS).household_roster == ("A", "B", "C")
    world.credit("D", 100, 12, 4)
    with pytest.raises(LimitExceeded) as refused:
        world.decide(add("D"))
    assert refused.value.limit == "household_members_max"
    world.do(RemoveHouseholdMember(HS, T0, H, "C"))
    assert world.do(add("D"))[HS] == [HouseholdMemberAdded(occurred_at=T0, household_id=H, member_id="D")]


def test_a_member_in_one_household_cannot_join_another_nor_head_one() -> None:
    world = household("A", "B")
    other = household_stream_id("fam-2")
    world.credit("C", 100, 12, 3)
    world.do(CreateHousehold(other, T0, "fam-2", "C"))
    with pytest.raises(MovementConflict, match="one household at most") as refused:
        world.decide(AddHouseholdMember(other, T0, "fam-2", "B"))
    assert refused.value.details["household_id"] == H
    with pytest.raises(MovementConflict, match="one household at most"):
        world.decide(CreateHousehold(household_stream_id("fam-3"), T0, "fam-3", "A"))


def test_adding_a_member_twice_changes_nothing_and_one_who_left_may_join_again() -> None:
    world = household("A", "B")
    assert world.decide(add("B")) == {}
    decided = world.do(RemoveHouseholdMember(HS, T0, H, "B"))
    assert decided == {HS: [HouseholdMemberRemoved(occurred_at=T0, household_id=H, member_id="B")],
                       "B": [HouseholdLeft(occurred_at=T0, household_id=H)]}
    assert world.state("B").household_id is None and world.state(HS).household_roster == ("A",)
    world.do(add("B"))
    assert world.state("B").household_id == H


def test_removing_the_head_or_a_stranger_is_refused_and_an_unknown_household_is_not_found() -> None:
    world = household("A", "B")
    with pytest.raises(MovementConflict, match="head"):
        world.decide(RemoveHouseholdMember(HS, T0, H, "A"))
    with pytest.raises(HouseholdMemberNotFound):
        world.decide(RemoveHouseholdMember(HS, T0, H, "Z"))
    with pytest.raises(HouseholdNotFound):
        world.decide(AddHouseholdMember(household_stream_id("nope"), T0, "nope", "B"))


def test_a_redemption_takes_soonest_expiry_first_across_the_household() -> None:
    world = World()
    world.credit("A", 100, 10, 1)  # A: 100 expiring in 10 months, 100 in 2
    world.credit("A", 100, 2, 2)
    world.credit("B", 100, 5, 1)  # B: 100 in 5 months
    world.credit("C", 100, 1, 1)  # C: 100 in 1 month
    world.do(create("A"))
    world.do(add("B"))
    world.do(add("C"))
    decided = world.do(redeem(world, 250))
    assert decided["C"][0].lots == (("adjustment:C-1", 100),)
    assert decided["A"][0].lots == (("adjustment:A-2", 100),)
    assert decided["B"][0].lots == (("adjustment:B-1", 50),)
    assert all(isinstance(decided[m][0], PointsRedeemedForHousehold) for m in "ABC")
    assert all(decided[m][0].redemption_id == "HR1" and decided[m][0].household_id == H for m in "ABC")
    (record,) = decided[HS]
    assert isinstance(record, HouseholdPointsRedeemed)
    assert record.points == 250 and record.shares == (("A", 100), ("B", 50), ("C", 100))
    assert [world.state(m).available(T0) for m in "ABC"] == [100, 50, 0]


def test_a_member_who_pays_nothing_gets_no_event() -> None:
    world = household("A", "B")
    world.credit("B", 100, 1, 9)  # B's second lot expires first
    decided = world.do(redeem(world, 80))
    assert set(decided) == {HS, "B"}


def test_short_of_points_is_refused_with_what_the_household_has() -> None:
    world = household("A", "B")
    with pytest.raises(HouseholdInsufficientPoints) as refused:
        world.decide(redeem(world, 201))
    assert (refused.value.requested, refused.value.available) == (201, 200)
    assert refused.value.details["available"] == 200


def test_a_redemption_sent_before_a_member_joined_is_refused_retryably() -> None:
    world = household("A", "B")
    with pytest.raises(HouseholdChanged, match="changed") as refused:
        world.decide(redeem(world, 10, roster=("A",)))  # B's stream was not read: its lots are unknown
    assert isinstance(refused.value, ConcurrencyConflict)  # a retryable 503 if it reaches the caller


def test_a_redemption_sent_before_a_member_left_takes_nothing_from_it() -> None:
    world = household("A", "B")
    world.credit("B", 100, 1, 9)  # B's lot would go first
    world.do(RemoveHouseholdMember(HS, T0, H, "B"))
    decided = world.do(redeem(world, 100, roster=("A", "B")))
    assert set(decided) == {HS, "A"} and decided[HS][0].shares == (("A", 100),)
    with pytest.raises(HouseholdInsufficientPoints) as refused:  # what is available is the members' of now
        world.decide(redeem(world, 1, "HR2", roster=("A", "B")))
    assert refused.value.available == 0


def test_a_redemption_id_is_used_once() -> None:
    world = household("A", "B")
    world.do(redeem(world, 10))
    with pytest.raises(MovementConflict, match="exists already"):
        world.decide(redeem(world, 10))


def test_a_members_part_of_a_household_redemption_is_reversed_on_its_own_stream() -> None:
    world = household("A", "B")
    world.do(redeem(world, 150))
    taken = 200 - world.state("A").available(T0) - world.state("B").available(T0)
    assert taken == 150
    payer = next(m for m in "AB" if "HR1" in world.state(m).redemptions)
    before = world.state(payer).available(T0)
    (reversed_,) = world.do(ReverseRedemption(payer, T0, "HR1", "REV1", None, "cancelled", "support"))[payer]
    assert isinstance(reversed_, RedemptionReversed)
    assert world.state(payer).available(T0) == before + reversed_.points


def test_household_events_and_states_survive_storage_and_snapshots() -> None:
    world = household("A", "B")
    decided = world.do(redeem(world, 150))
    for events in decided.values():
        for event in events:
            assert from_data(event.type, event.version, to_data(event)) == event
    for stream_id in (HS, "A", "B"):
        state = world.state(stream_id)
        assert from_snapshot(stream_id, state.version, to_snapshot(state)) == state
    old = to_snapshot(world.state("A"))
    del old["household_id"], old["household_roster"]  # a snapshot saved before households
    assert from_snapshot("A", 1, old).household_id is None
