"""The reward catalogue on the real store: stock never oversold by two processes racing,
and the `rewards` read model, which a rebuild gives back row for row."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ledger.bootstrap import Container
from ledger.domain import (
    DefineReward,
    HoldReward,
    PlaceHold,
    RedeemReward,
    ReleaseHold,
    ReverseRedemption,
    RewardUnavailable,
    reward_stream_id,
)
from ledger.handlers import Applied, CommandRequest, Ledger
from ledger.holds import expire_holds_due
from projections.reward_queries import rewards_page
from projections.runner import rebuild

from .helpers import T0, earn
from .test_projections import _tables

R = "HTL-50"
S = reward_stream_id(R)


def define(stock: int | None, reward_id: str = R) -> CommandRequest:
    return CommandRequest(DefineReward(reward_stream_id(reward_id), T0, reward_id, "hotel_discount", "Hotel",
                                       "酒店", (("member", 100),), stock, None, None, None, None, "admin"))


def redeem(member: str, rid: str, reward_id: str = R) -> CommandRequest:
    return CommandRequest(RedeemReward(member, T0, rid, reward_id), idempotency_key=f"{member}:{rid}",
                          request_hash=rid)


async def test_two_processes_redeeming_at_once_never_oversell(container: Container) -> None:
    here = container.ledger
    there = Ledger(container.store, container.rules)  # another process, with a cache of its own
    await here.handle_batch([earn(m, f"B-{m}") for m in ("a", "b", "c", "d")])  # 1,000 points each
    await here.handle(define(stock=5))
    requests = [(here if i % 2 else there, redeem("abcd"[i % 4], f"r{i}")) for i in range(16)]
    outcomes = await asyncio.wait_for(asyncio.gather(
        *(ledger.handle(request) for ledger, request in requests), return_exceptions=True), 20)
    applied = [o for o in outcomes if isinstance(o, Applied)]
    refused = [o for o in outcomes if isinstance(o, RewardUnavailable)]
    assert len(applied) == 5 and len(refused) == 11, outcomes
    assert all(o.reason == "out_of_stock" for o in refused)
    reward = (await Ledger(container.store, container.rules).member_state(S)).reward
    assert reward is not None and reward.taken == 5 and reward.remaining == 0


async def test_the_rewards_read_model_follows_the_stock_and_a_rebuild_equals_live(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn(m, f"B-{m}") for m in ("a", "b")])
    await ledger.handle(define(stock=4))
    await ledger.handle(define(stock=None, reward_id="ZZ-UNLIMITED"))
    await container.runner.run_once()  # the definitions in one page, the stock's moves in the next ones
    await ledger.handle(redeem("a", "r1"))
    await ledger.handle(redeem("b", "r2"))
    await container.runner.run_once()
    await ledger.handle(CommandRequest(HoldReward("a", T0, "h1", R, T0 + timedelta(hours=1))))
    await ledger.handle(CommandRequest(ReleaseHold("a", T0, "h1", (S,))))
    await ledger.handle(CommandRequest(HoldReward("b", T0, "h2", R, T0 + timedelta(hours=1))))
    await ledger.handle(CommandRequest(ReverseRedemption("a", T0, "r1", "v1", None, "cancelled", "support", (S,))))
    await ledger.handle(redeem("a", "r3", "ZZ-UNLIMITED"))
    await ledger.handle(define(stock=6))
    await container.project()
    live = await _tables(container)
    assert [r["member_id"] for r in live["balances"]] == ["a", "b"]  # no reward among the members
    rows = {r["reward_id"]: r for r in live["rewards"]}
    assert (rows[R]["stock"], rows[R]["taken"]) == (6, 2)  # b's redemption and b's open hold
    assert (rows["ZZ-UNLIMITED"]["stock"], rows["ZZ-UNLIMITED"]["taken"]) == (None, 1)
    page, more = await rewards_page(container.pool, "", 1)
    assert [r.reward_id for r in page] == [R] and more and page[0].remaining == 4
    assert page[0] == (await ledger.member_state(S)).reward
    await rebuild(container.pool, container.store, page_size=3)
    assert await _tables(container) == live






async def test_the_hold_scheduler_gives_an_expired_catalogue_holds_unit_back(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn(m, f"B-{m}") for m in ("a", "b")])
    await ledger.handle(define(stock=2))
    await ledger.handle(CommandRequest(HoldReward("a", T0, "h1", R, T0 + timedelta(hours=1))))
    await ledger.handle(CommandRequest(PlaceHold("b", T0, "h2", 100, "free-form", "voucher", T0 + timedelta(hours=1))))
    await ledger.handle(redeem("b", "r1"))
    await container.project()
    assert (await ledger.member_state(S)).reward.remaining == 0
    assert await expire_holds_due(ledger, container.pool, T0 + timedelta(hours=2)) == 3  # two holds, one unit back
    reward = (await ledger.member_state(S)).reward
    assert reward is not None and (reward.taken, reward.remaining) == (1, 1)  # b's redemption keeps its unit
    assert not (await ledger.member_state("a")).holds and not (await ledger.member_state("b")).holds
