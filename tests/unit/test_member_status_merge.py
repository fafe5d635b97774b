"""Members' status and merges, pure: a merge conserves every total and keeps every lot
(its date, counters and booking), later take-backs of the duplicate's bookings apply to
the survivor, and a suspended or closed member never redeems, holds, captures or
transfers, over random sequences of commands (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    AdjustPoints,
    CancelBooking,
    CaptureHold,
    ChangeMemberStatus,
    Command,
    CompleteBooking,
    ConfirmBooking,
    Event,
    ExpireHolds,
    ExpirePoints,
    HoldCaptured,
    LedgerError,
    MemberMerged,
    MemberMergedAway,
    MemberMergedIn,
    MemberState,
    MemberStatusChanged,
    MemberStatusConflict,
    MergeMembers,
    MovementConflict,
    PlaceHold,
    PointsHeld,
    PointsRedeemed,
    PointsTransferredIn,
    PointsTransferredOut,
    ProgramRules,
    RedeemPoints,
    RefundBooking,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
    decide_streams,
    evolve,
    fold,
    from_data,
    from_snapshot,
    to_data,
    to_snapshot,
)
from ledger.domain.rules import DEFAULT_RULES_DICT

from .test_movement_properties import conserved, flows, lots_add_up

START = datetime(2025, 12, 1, tzinfo=UTC)
SPENDS = (PointsRedeemed, PointsHeld, HoldCaptured, PointsTransferredOut, PointsTransferredIn)
LIMITS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rules(negative: bool = False, on_close: str = "keep") -> ProgramRules:
    return ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative, "on_close": on_close})


class World:
    def __init__(self, programme: ProgramRules, members: tuple[str, ...]) -> None:
        self.rules = programme
        self.states = {m: MemberState(m) for m in members}
        self.events: dict[str, list[Event]] = {m: [] for m in members}
        self.bookings: dict[str, list[str]] = {m: [] for m in members}
        self.n = 0

    def run(self, command: Command) -> dict[str, list[Event]] | LedgerError:
        try:
            decided = decide_streams({m: self.states[m] for m in command.member_ids}, command, self.rules)
        except LedgerError as error:
            return error
        for member, new in decided.items():
            for event in new:
                self.states[member] = evolve(self.states[member], event)
            self.events[member] += new
        return decided


def member_step(data: st.DataObject, world: World, member: str, at: datetime, others: tuple[str, ...]) -> Command:
    """Any command of `member`'s, its bookings and movements named by id."""
    world.n += 1
    n = world.n
    kind = data.draw(st.sampled_from(("confirm", "complete", "complete", "cancel", "refund", "redeem", "hold",
                                      "capture", "release", "reverse", "transfer", "adjust", "expire")))
    state = world.states[member]
    known = world.bookings[member]
    amount = Decimal(data.draw(st.integers(0, 30_000))).scaleb(-2)
    points = data.draw(st.sampled_from((max(state.available(at), 1), max(state.available(at) // 2, 1), 50, 5_000)))
    if kind in ("confirm", "complete"):
        if known and data.draw(st.booleans()):
            booking = data.draw(st.sampled_from(known))
        else:
            booking = f"{member}-B{n}"
            known.append(booking)
        cls = ConfirmBooking if kind == "confirm" else CompleteBooking
        return cls(member, at, booking, "hotel", amount, "EUR")
    if kind in ("cancel", "refund") and known:
        cls = CancelBooking if kind == "cancel" else RefundBooking
        return cls(member, at, data.draw(st.sampled_from(known)))
    if kind == "hold":
        return PlaceHold(member, at, f"H{n}", points, "r", "hotel", at + timedelta(days=3))
    if kind in ("capture", "release") and state.holds:
        hold = data.draw(st.sampled_from(sorted(state.holds)))
        if kind == "capture":
            return CaptureHold(member, at, hold, f"R{n}", state.holds[hold].points)
        return ReleaseHold(member, at, hold)
    if kind == "reverse" and state.redemptions:
        return ReverseRedemption(member, at, data.draw(st.sampled_from(sorted(state.redemptions))), f"V{n}", None,
                                 "complaint", "agent")
    if kind == "transfer" and others:
        return TransferPoints(member, at, f"T{n}", data.draw(st.sampled_from(others)), points, "gift")
    if kind == "adjust":
        return AdjustPoints(member, at, f"A{n}", data.draw(st.sampled_from((300, -100))), "goodwill", "agent")
    if kind == "expire":
        return ExpirePoints(member, at)
    return RedeemPoints(member, at, f"R{n}", points, "r", "hotel")


def totals(states: list[MemberState], at: datetime) -> tuple[int, ...]:
    lots = [lot for s in states for lot in s.all_lots().values()]
    # The balance (active less debt), not what is available at `at`: a debt moved onto a
    # survivor whose lots are past their date is paid by them at the expiry run, so it
    # no longer counts against what the survivor has available meanwhile.
    return (sum(s.balance for s in states), sum(s.active for s in states), sum(s.pending for s in states),
            sum(s.debt for s in states), sum(s.held for s in states), sum(lot.spent for lot in lots),
            sum(lot.expired for lot in lots), sum(lot.charged for lot in lots), sum(lot.points for lot in lots),
            sum(s.qualifying.weight_between(START - timedelta(days=1), at + timedelta(days=1)) for s in states))


def roundtrip(events: list[Event]) -> None:
    for event in events:
        assert from_data(event.type, event.version, to_data(event)) == event


@LIMITS
@given(st.data())
def test_a_merge_conserves_every_total_and_keeps_every_lot(data: st.DataObject) -> None:
    world = World(rules(negative=data.draw(st.booleans())), ("dup", "surv"))
    at = START
    for member in ("dup", "surv"):
        world.run(CompleteBooking(member, at, f"{member}-first", "hotel", Decimal(200), "EUR"))
    for _ in range(data.draw(st.integers(0, 25))):
        at += timedelta(days=data.draw(st.sampled_from((0, 1, 30, 200))))
        member = data.draw(st.sampled_from(("dup", "surv")))
        world.run(member_step(data, world, member, at, ("dup", "surv")))
    for member in ("dup", "surv"):  # open holds refuse a merge: released first, as support would
        for hold in sorted(world.states[member].holds):
            world.run(ReleaseHold(member, at, hold))
        if world.states[member].holds:  # past their time: the scheduler's release
            world.run(ExpireHolds(member, at))
    before = [world.states["dup"], world.states["surv"]]
    dup_lots = world.states["dup"].all_lots()
    history = world.events["dup"] + world.events["surv"]

    decided = world.run(MergeMembers("surv", at, "dup", "duplicate_account", "agent"))
    assert isinstance(decided, dict), decided
    roundtrip(decided["surv"] + decided["dup"])
    dup, surv = world.states["dup"], world.states["surv"]
    assert totals([dup, surv], at) == totals(before, at)
    assert dup.merged_into == "surv" and dup.status == "closed"
    assert (dup.active, dup.pending, dup.debt, dup.held, len(dup.all_lots())) == (0, 0, 0, 0, 0)
    for lot_id, lot in dup_lots.items():
        assert surv.lot(lot_id) == lot  # its date, counters, booking and origin, as they were
    for booking, lot_id in before[0].bookings.items():
        assert surv.bookings[booking] == lot_id
    # The survivor is what one member with both histories would be.
    lots_add_up(surv)
    conserved(history, surv)
    # A fold and a snapshot give the same states.
    for member in ("dup", "surv"):
        folded = fold(member, world.events[member])
        assert to_snapshot(folded) == to_snapshot(world.states[member])
        again = from_snapshot(member, folded.version, to_snapshot(folded))
        assert to_snapshot(again) == to_snapshot(folded) and again.merged_into == folded.merged_into

    # After the merge: the duplicate takes no command; its bookings go on on the survivor.
    assert isinstance(world.run(RedeemPoints("dup", at, "late", 1, "r", "hotel")), MemberMerged)
    world.bookings["surv"] += world.bookings["dup"]
    for _ in range(data.draw(st.integers(0, 10))):
        at += timedelta(days=data.draw(st.sampled_from((0, 1, 30, 200))))
        world.run(member_step(data, world, "surv", at, ()))
        lots_add_up(world.states["surv"])
        conserved(_as_one(world, history), world.states["surv"])


def _as_one(world: World, history: list[Event]) -> list[Event]:
    """Both members' histories before the merge, then the survivor's events after it."""
    surv = world.events["surv"]
    merged_at = next(i for i, e in enumerate(surv) if isinstance(e, MemberMergedIn))
    return history + surv[merged_at + 1:]


def test_a_refund_of_a_duplicate_booking_after_the_merge_claws_back_from_the_survivor() -> None:
    world = World(rules(negative=True), ("dup", "surv"))
    world.run(CompleteBooking("dup", START, "D1", "hotel", Decimal(200), "EUR"))
    world.run(CompleteBooking("surv", START, "S1", "hotel", Decimal(100), "EUR"))
    earned = world.states["dup"].active
    world.run(RedeemPoints("dup", START, "R1", earned, "r", "hotel"))  # all of it spent before the merge
    assert isinstance(world.run(MergeMembers("surv", START, "dup", "duplicate_account", "agent")), dict)
    surv_before = world.states["surv"].active
    decided = world.run(RefundBooking("surv", START + timedelta(days=1), "D1"))
    assert isinstance(decided, dict)
    assert world.states["surv"].debt == earned and world.states["surv"].active == surv_before
    assert world.states["surv"].lot("booking:D1").status == "reversed"


@pytest.mark.parametrize("why", ["self", "booking", "hold", "closed", "suspended", "household", "unknown"])
def test_a_merge_is_refused_when_it_cannot_move_everything(why: str) -> None:
    world = World(rules(), ("dup", "surv", "x"))
    world.run(CompleteBooking("dup", START, "D1", "hotel", Decimal(200), "EUR"))
    world.run(CompleteBooking("surv", START, "D1" if why == "booking" else "S1", "hotel", Decimal(100), "EUR"))
    if why == "hold":
        world.run(PlaceHold("dup", START, "H1", 10, "r", "hotel", START + timedelta(days=1)))
    if why in ("closed", "suspended"):
        world.run(ChangeMemberStatus("dup", START, why, "fraud_review", "agent"))
    if why == "household":
        from ledger.domain import CreateHousehold
        world.states["household/F"] = MemberState("household/F")
        world.events["household/F"] = []
        world.run(CreateHousehold("household/F", START, "F", "dup"))
    duplicate = "surv" if why == "self" else "nobody" if why == "unknown" else "dup"
    if why == "unknown":
        world.states["nobody"] = MemberState("nobody")
    result = world.run(MergeMembers("surv", START, duplicate, "duplicate_account", "agent"))
    assert isinstance(result, LedgerError), result
    expected = {"booking": MovementConflict, "hold": MovementConflict, "household": MovementConflict,
                "closed": MemberStatusConflict, "suspended": MemberStatusConflict}.get(why)
    if expected is not None:
        assert isinstance(result, expected), result
    assert world.states["dup"].merged_into is None


@LIMITS
@given(st.data())
def test_a_suspended_or_closed_member_never_redeems_holds_or_transfers(data: st.DataObject) -> None:
    programme = rules(on_close=data.draw(st.sampled_from(("keep", "forfeit"))))
    world = World(programme, ("m", "o"))
    at = START
    for member in ("m", "o"):
        world.run(CompleteBooking(member, at, f"{member}-first", "hotel", Decimal(300), "EUR"))
    for _ in range(data.draw(st.integers(1, 30))):
        at += timedelta(days=data.draw(st.sampled_from((0, 1, 30))))
        member = data.draw(st.sampled_from(("m", "o")))
        if data.draw(st.integers(0, 3)) == 0:
            status = data.draw(st.sampled_from(("active", "suspended", "closed")))
            command: Command = ChangeMemberStatus(member, at, status, "fraud_review", "agent")
        else:
            command = member_step(data, world, member, at, ("m", "o"))
        statuses = {m: world.states[m].status for m in command.member_ids}
        available = world.states[member].available(at)
        result = world.run(command)
        if isinstance(result, LedgerError):
            continue
        for m, events in result.items():
            if statuses[m] != "active":
                assert not [e for e in events if isinstance(e, SPENDS)], (statuses, command, events)
        for event in result.get(member, ()):
            if isinstance(event, MemberStatusChanged) and event.to_status == "closed":
                state = world.states[member]
                assert state.available(at) == (0 if programme.on_close == "forfeit" else available)
    for member in ("m", "o"):
        lots_add_up(world.states[member])
        conserved([e for e in world.events[member] if not isinstance(e, (MemberStatusChanged, MemberMergedAway))],
                  world.states[member])
    assert flows  # the same flows as the movement properties


def test_a_household_redemption_drawing_on_a_suspended_member_is_refused() -> None:
    from ledger.domain import AddHouseholdMember, CreateHousehold, RedeemForHousehold

    household = "household/F"
    world = World(rules(), ("h", "s", household))
    for member in ("h", "s"):
        world.run(CompleteBooking(member, START, f"{member}-1", "hotel", Decimal(100), "EUR"))
    world.run(CreateHousehold(household, START, "F", "h"))
    world.run(AddHouseholdMember(household, START, "F", "s"))
    world.run(ChangeMemberStatus("s", START, "suspended", "fraud_review", "agent"))
    each = world.states["h"].available(START)
    # More than the head has: it would draw on the suspended member.
    refused = world.run(RedeemForHousehold(household, START, "F", "R1", each + 1, "r", "hotel", ("h", "s")))
    assert isinstance(refused, MemberStatusConflict) and refused.member_id == "s", refused
    # What the head alone pays (soonest expiry first, the head's lot first on equal dates) goes through.
    paid = world.run(RedeemForHousehold(household, START, "F", "R2", each, "r", "hotel", ("h", "s")))
    assert isinstance(paid, dict) and set(paid) == {"h", household}, paid


def test_a_closed_member_earns_on_no_activity_or_referral_and_its_anniversary_passes_with_nothing() -> None:
    from ledger.domain.earn import GrantAnniversary, RecordActivity, anniversary_at
    from ledger.domain.events import AnniversaryBonusGranted
    from ledger.domain.whatif import price_anniversary

    programme = ProgramRules.from_dict({
        **DEFAULT_RULES_DICT, "anniversary": {"per_year": 100},
        "activities": {"review.submitted": {"points": 30}, "referral.completed": {"points": 500, "referred_points": 200}}})
    world = World(programme, ("c", "o"))
    for member in ("c", "o"):
        world.run(CompleteBooking(member, START, f"{member}-1", "hotel", Decimal(300), "EUR"))
    world.run(ChangeMemberStatus("c", START, "closed", "customer_request", "agent"))
    at = START + timedelta(days=1)
    review = world.run(RecordActivity("c", at, "A1", "review.submitted"))
    assert isinstance(review, MemberStatusConflict) and review.member_id == "c", review
    for referrer, referred in (("c", "o"), ("o", "c")):
        referral = world.run(RecordActivity(referrer, at, f"R-{referrer}", "referral.completed", referred_member_id=referred))
        assert isinstance(referral, MemberStatusConflict) and referral.member_id == "c", referral
    assert isinstance(world.run(RecordActivity("o", at, "A2", "review.submitted")), dict)  # the open member earns
    # The first anniversary passes: recorded (the scheduler does not find it due again), nothing earned.
    due = anniversary_at(world.states["c"].earn.since, 1)
    balance = world.states["c"].balance
    (granted,) = world.run(GrantAnniversary("c", due, 1))["c"]  # type: ignore[index]
    assert isinstance(granted, AnniversaryBonusGranted)
    assert (granted.points, granted.lot_id, granted.breakdown) == (0, None, (("anniversary:1", 100), ("member_closed", -100)))
    assert world.states["c"].balance == balance and 1 in world.states["c"].earn.anniversaries
    assert world.run(GrantAnniversary("c", due, 1)) == {"c": []}  # once
    # A what-if of any draft prices it as nothing too.
    assert sum(p for _, p in price_anniversary(programme, year=1, actual=granted.breakdown)) == 0
    # Reopened, the next year earns again.
    world.run(ChangeMemberStatus("c", due, "active", "customer_request", "agent"))
    (second,) = world.run(GrantAnniversary("c", anniversary_at(world.states["c"].earn.since, 2), 2))["c"]  # type: ignore[index]
    assert second.points == 200  # 100 a year
