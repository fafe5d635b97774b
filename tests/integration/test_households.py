"""Household redemptions across several member streams, racing the members' own."""

from __future__ import annotations

import asyncio

from ledger.bootstrap import Container
from ledger.domain import (
    AddHouseholdMember,
    CreateHousehold,
    HouseholdInsufficientPoints,
    InsufficientPoints,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    RedeemForHousehold,
    RemoveHouseholdMember,
    fold,
    household_stream_id,
)
from ledger.handlers import Applied, CommandRequest, Ledger, Rejected
from projections.queries import household_balance
from projections.runner import rebuild

from .helpers import T0, earn, redeem
from .test_projections import _tables

HS = household_stream_id("fam")


def household_redeem(points: int, rid: str, roster: tuple[str, ...]) -> CommandRequest:
    return CommandRequest(RedeemForHousehold(HS, T0, "fam", rid, points, "reward", "voucher", roster),
                          idempotency_key=rid, request_hash=rid)


async def test_a_household_redemption_racing_a_members_own_never_overdraws_either(container: Container) -> None:
    here = container.ledger
    there = Ledger(container.store, container.rules)  # another process, with a cache of its own
    await here.handle_batch([earn("a", "B1"), earn("b", "B2")])  # 1,000 points each
    await here.handle(CommandRequest(CreateHousehold(HS, T0, "fam", "a")))
    await here.handle(CommandRequest(AddHouseholdMember(HS, T0, "fam", "b")))
    roster = ("a", "b")
    # 2,400 points asked for where 2,000 are: 12 household redemptions of 100 (from a and b,
    # soonest expiry first) in one process, 12 of a's own of 100 in the other, interleaved.
    requests = []
    for i in range(12):
        requests.append((here, household_redeem(100, f"h{i}", roster)))
        requests.append((there, redeem("a", 100, f"a{i}")))
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(ledger.handle_batch([request]) for ledger, request in requests)), timeout=60)
    applied = [o for (o,) in outcomes if isinstance(o, Applied)]
    refused = [o for (o,) in outcomes if isinstance(o, Rejected)]
    assert all(isinstance(o.error, (InsufficientPoints, HouseholdInsufficientPoints)) for o in refused)
    assert len(applied) + len(refused) == 24
    # The store, folded from scratch, agrees with what the outcomes say was taken.
    states = {m: fold(m, [s.event for s in await container.store.read_stream(m)]) for m in ("a", "b", HS)}
    taken = {"a": 0, "b": 0}
    for outcome in applied:
        for appended in outcome.events:
            if isinstance(appended.event, (PointsRedeemed, PointsRedeemedForHousehold)):
                taken[appended.stream_id] += appended.event.points
    for member in ("a", "b"):
        state = states[member]
        assert state.available(T0) == 1_000 - taken[member] >= 0
        assert all(lot.remaining >= 0 for lot in state.all_lots().values())
    left = {m: states[m].available(T0) for m in ("a", "b")}
    assert sum(taken.values()) == 100 * len(applied) == 2_000 - sum(left.values())
    # Points only go down here, so a refusal stands for the end too: whoever was refused
    # has less than 100 left, and no point was left behind that a refused request could take.
    if any(isinstance(o.error, HouseholdInsufficientPoints) for o in refused):
        assert sum(left.values()) < 100
    if any(type(o.error) is InsufficientPoints for o in refused):
        assert left["a"] < 100
    household_points = sum(r.points for r in states[HS].redemptions.values())
    assert household_points == 100 * sum(1 for o in applied if o.member_id == HS)
    assert here.conflicts + there.conflicts > 0  # they did race: attempts were decided again on fresh state


async def test_the_read_models_keep_households_apart_from_members_and_a_rebuild_equals_live(
        container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn(m, f"B-{m}") for m in ("a", "b", "c")])
    await container.runner.run_once()  # the roster's changes split over several pages
    await ledger.handle(CommandRequest(CreateHousehold(HS, T0, "fam", "a")))
    for m in ("b", "c"):
        await ledger.handle(CommandRequest(AddHouseholdMember(HS, T0, "fam", m)))
    await container.runner.run_once()
    await ledger.handle(household_redeem(1_500, "h1", ("a", "b", "c")))
    await ledger.handle(CommandRequest(RemoveHouseholdMember(HS, T0, "fam", "c")))
    await container.project()
    live = await _tables(container)
    assert [r["member_id"] for r in live["balances"]] == ["a", "b", "c"]  # no household among the members
    assert [(r["member_id"], r["role"]) for r in live["household_members"]] == [("a", "head"), ("b", "member")]
    for row in live["balances"]:
        assert row["available"] == (await ledger.member_state(row["member_id"])).balance
    found = await household_balance(container.pool, "fam", T0)
    assert found is not None and [m.member_id for m in found.members] == ["a", "b"]
    left = [(await ledger.member_state(m)).available(T0) for m in ("a", "b", "c")]
    assert left == [0, 500, 1_000]  # equal dates: a's lot first (by member id), then b's; c paid nothing
    assert found.available == 500 and [m.available for m in found.members] == [0, 500]
    assert await household_balance(container.pool, "nope", T0) is None
    await rebuild(container.pool, container.store, page_size=3)
    assert await _tables(container) == live
