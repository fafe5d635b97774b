"""The reward catalogue, pure: given these commands, when this one, then these events
(or this error); and a property over random histories: stock is never negative, never
oversold, and `taken + remaining == stock`, with `taken` the open holds and the
redemptions not reversed in full of every member."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES,
    CaptureHold,
    CatalogueRewardTaken,
    Command,
    CompleteBooking,
    DefineReward,
    ExpireHolds,
    HoldReward,
    InvalidCommand,
    MemberNotFound,
    MemberState,
    MovementConflict,
    PointsRedeemed,
    RedeemReward,
    ReleaseHold,
    ReverseRedemption,
    RewardNotFound,
    RewardStockReturned,
    RewardStockTaken,
    RewardUnavailable,
    decide_streams,
    fold,
    from_data,
    from_snapshot,
    reward_stream_id,
    to_data,
    to_snapshot,
)

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
RULES = DEFAULT_RULES
R = "HTL-50"
S = reward_stream_id(R)
PRICES = (("member", 3000), ("gold", 2000))


def define(stock: int | None = 2, *, kind: str = "hotel_discount", prices: tuple[tuple[str, int], ...] = PRICES,
           start: datetime | None = None, end: datetime | None = None, ratio: Decimal | None = None,
           partner: str | None = None, at: datetime = T0) -> DefineReward:
    return DefineReward(S, at, R, kind, "Hotel 50% off", "酒店五折", prices, stock, start, end, ratio, partner,
                        "admin")


def run(states: dict[str, MemberState], command: Command) -> dict[str, list]:
    """Decide `command` on `states` and fold its events in; the events by stream."""
    for stream in command.member_ids:
        states.setdefault(stream, MemberState(stream))
    decided = decide_streams({m: states[m] for m in command.member_ids}, command, RULES)
    for stream, events in decided.items():
        states[stream] = fold(stream, events, states[stream])
    return decided


def members(*ids: str, points: int = 3_000, qualifying_eur: str = "100.00") -> dict[str, MemberState]:
    """Members with 1,000 points of a first flight (its bonus included) and `points` more
    of flights: all of them qualifying, so 3,000 leaves them in the lowest tier."""
    states: dict[str, MemberState] = {}
    for m in ids:
        run(states, CompleteBooking(m, T0 - timedelta(days=1), f"{m}-b1", "flight", Decimal(qualifying_eur), "EUR"))
        run(states, CompleteBooking(m, T0 - timedelta(days=1), f"{m}-b2", "flight", Decimal(points) / 5, "EUR"))
    return states


def test_a_redemption_takes_the_tier_price_and_a_unit_of_stock_in_one_decision() -> None:
    states = members("m1")
    run(states, define(stock=2))
    decided = run(states, RedeemReward("m1", T0, "rd1", R))
    redeemed, taken = decided["m1"]
    assert isinstance(redeemed, PointsRedeemed) and redeemed.points == 3000 and redeemed.reward_id == R
    assert taken == CatalogueRewardTaken(T0, "redemption", "rd1", R, "hotel_discount", "member", 3000, None, None)
    assert decided[S] == [RewardStockTaken(T0, R, "m1", "redemption", "rd1", "member", 3000, None)]
    assert states[S].reward is not None and states[S].reward.taken == 1 and states[S].reward.remaining == 1


def test_a_higher_tier_pays_its_own_price_and_a_tier_left_out_pays_the_one_below() -> None:
    states = members("m1", points=20_000)  # 20,500 qualifying points: gold
    run(states, define())
    assert run(states, RedeemReward("m1", T0, "rd1", R))["m1"][0].points == 2000
    states = members("m2", points=45_000)  # platinum: no price of its own, pays gold's
    run(states, define())
    assert run(states, RedeemReward("m2", T0, "rd1", R))["m2"][1].tier == "platinum"
    assert states["m2"].catalogue[("redemption", "rd1")] == R
    states = members("m3")
    run(states, define(prices=(("gold", 2000),)))
    with pytest.raises(RewardUnavailable) as refused:
        run(states, RedeemReward("m3", T0, "rd1", R))
    assert refused.value.reason == "not_offered_to_tier"


def test_out_of_stock_and_outside_the_window_are_refused_naming_why() -> None:
    states = members("m1", "m2")
    run(states, define(stock=1))
    run(states, RedeemReward("m1", T0, "rd1", R))
    with pytest.raises(RewardUnavailable) as refused:
        run(states, RedeemReward("m2", T0, "rd1", R))
    assert refused.value.reason == "out_of_stock"
    run(states, define(stock=1, start=T0 + timedelta(days=1)))
    with pytest.raises(RewardUnavailable, match="not available before") as early:
        run(states, HoldReward("m2", T0, "h1", R, T0 + timedelta(hours=1)))
    assert early.value.reason == "not_yet_available"
    run(states, define(stock=5, end=T0))
    with pytest.raises(RewardUnavailable) as late:
        run(states, RedeemReward("m2", T0, "rd2", R))
    assert late.value.reason == "no_longer_available"


def test_unknown_reward_and_unknown_member_are_refused() -> None:
    states = members("m1")
    with pytest.raises(RewardNotFound):
        run(states, RedeemReward("m1", T0, "rd1", R))
    run(states, define())
    with pytest.raises(MemberNotFound):
        run(states, RedeemReward("nobody", T0, "rd1", R))


def test_airline_miles_record_the_partner_and_the_miles_at_the_ratio() -> None:
    states = members("m1")
    run(states, define(kind="airline_miles", prices=(("member", 1001),), ratio=Decimal("0.5"), partner="CA"))
    decided = run(states, RedeemReward("m1", T0, "rd1", R))
    assert decided["m1"][1].miles == 500 and decided["m1"][1].partner == "CA"  # 1001 * 0.5, rounded down
    assert decided[S][0].miles == 500


@pytest.mark.parametrize("command", [
    define(kind="airline_miles"),  # no ratio, no partner
    define(ratio=Decimal("2")),  # a ratio for a reward that is not miles
    define(prices=()),
    define(prices=(("member", 0),)),
    define(start=T0, end=T0),
    define(kind="spa"),
])
def test_a_wrong_definition_is_refused(command: DefineReward) -> None:
    with pytest.raises(InvalidCommand):
        run({}, command)


def test_stock_cannot_go_below_what_is_taken_and_the_same_definition_is_no_change() -> None:
    states = members("m1", "m2")
    run(states, define(stock=3))
    run(states, RedeemReward("m1", T0, "rd1", R))
    run(states, RedeemReward("m2", T0, "rd1", R))
    with pytest.raises(MovementConflict, match="2 units taken"):
        run(states, define(stock=1))
    assert run(states, define(stock=3)) == {S: []}
    run(states, define(stock=2))
    assert states[S].reward.remaining == 0 and states[S].reward.taken == 2


def test_released_and_expired_holds_and_a_full_reversal_return_their_unit() -> None:
    states = members("m1", points=20_000)
    run(states, define(stock=3))
    run(states, HoldReward("m1", T0, "h1", R, T0 + timedelta(hours=1)))
    run(states, HoldReward("m1", T0, "h2", R, T0 + timedelta(hours=1)))
    run(states, RedeemReward("m1", T0, "rd1", R))
    assert states[S].reward.remaining == 0
    assert run(states, ReleaseHold("m1", T0, "h1", (S,)))[S] == [RewardStockReturned(T0, R, "m1", "h1", "released")]
    later = T0 + timedelta(hours=2)
    assert run(states, ExpireHolds("m1", later, 10, (S,)))[S][0].reason == "expired"
    partial = run(states, ReverseRedemption("m1", later, "rd1", "v1", 1000, "goodwill", "support", (S,)))
    assert S not in partial  # the member keeps the reward: its unit stays taken
    rest = run(states, ReverseRedemption("m1", later, "rd1", "v2", None, "cancelled", "support", (S,)))
    assert rest[S][0].reason == "reversed"
    assert states[S].reward.taken == 0 and states[S].reward.remaining == 3 and not states["m1"].catalogue


def test_catalogue_movements_without_the_reward_stream_are_refused_or_left() -> None:
    states = members("m1", points=20_000)
    run(states, define(stock=3))
    run(states, HoldReward("m1", T0, "h1", R, T0 + timedelta(hours=1)))
    run(states, RedeemReward("m1", T0, "rd1", R))
    with pytest.raises(InvalidCommand, match="reward/HTL-50"):
        run(states, ReleaseHold("m1", T0, "h1"))
    with pytest.raises(InvalidCommand, match="reward/HTL-50"):
        run(states, ReverseRedemption("m1", T0, "rd1", "v1", None, "cancelled", "support"))
    # The hold scheduler without the stream leaves the catalogue hold for a command that reads it.
    assert not run(states, ExpireHolds("m1", T0 + timedelta(hours=2), 10)).get("m1")


def test_a_catalogue_hold_is_captured_whole_and_its_unit_stays_with_the_redemption() -> None:
    states = members("m1")
    run(states, define(stock=1))
    run(states, HoldReward("m1", T0, "h1", R, T0 + timedelta(hours=1)))
    with pytest.raises(MovementConflict, match="captured whole"):
        run(states, CaptureHold("m1", T0, "h1", "c1", 100))
    decided = run(states, CaptureHold("m1", T0, "h1", "c1", 3000))
    assert S not in decided and states[S].reward.taken == 1
    assert dict(states["m1"].catalogue) == {("redemption", "c1"): R}
    assert run(states, ReverseRedemption("m1", T0, "c1", "v1", None, "cancelled", "support", (S,)))[S]


def test_events_and_snapshots_round_trip() -> None:
    states = members("m1")
    run(states, define(kind="airline_miles", prices=(("member", 1000),), ratio=Decimal("1.5"), partner="CA",
                       start=T0 - timedelta(days=1), end=T0 + timedelta(days=9)))
    for events in (run(states, HoldReward("m1", T0, "h1", R, T0 + timedelta(hours=1))),):
        for event in (e for stream in events.values() for e in stream):
            assert from_data(event.type, event.version, to_data(event)) == event
    for stream in ("m1", S):
        state = states[stream]
        assert from_snapshot(stream, state.version, to_snapshot(state)) == state


# The property: random redeem / hold / capture / release / expire / reverse of one
# catalogue reward across members, each decided on the states the ones before left.

STOCK = 4
MEMBERS = ("a", "b", "c")
step = st.tuples(
    st.sampled_from(("redeem", "hold", "capture", "release", "expire", "reverse", "reverse_part", "restock")),
    st.sampled_from(MEMBERS), st.integers(0, 5), st.integers(0, STOCK + 2),
)


def _taken_by_members(states: Mapping[str, MemberState]) -> int:
    return sum(1 for m in MEMBERS for key, reward_id in states[m].catalogue.items() if reward_id == R)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=40))
def test_stock_is_never_oversold_and_taken_plus_remaining_is_stock(steps: list[tuple[str, str, int, int]]) -> None:
    states = members(*MEMBERS, points=20_000)
    run(states, define(stock=STOCK))
    at = T0
    for n, (kind, member, k, stock) in enumerate(steps):
        at += timedelta(minutes=10)
        state = states[member]
        holds = sorted(h for (what, h) in state.catalogue if what == "hold")
        redemptions = sorted(r for (what, r) in state.catalogue if what == "redemption")
        command: Command
        match kind:
            case "redeem":
                command = RedeemReward(member, at, f"rd{n}", R)
            case "hold":
                command = HoldReward(member, at, f"h{n}", R, at + timedelta(minutes=10 * (k + 1)))
            case "capture" if holds:
                hold = state.holds.get(holds[k % len(holds)])
                command = CaptureHold(member, at, holds[k % len(holds)], f"c{n}", hold.points if hold else 1)
            case "release" if holds:
                command = ReleaseHold(member, at, holds[k % len(holds)], (S,))
            case "expire":
                command = ExpireHolds(member, at, 1 + k, (S,))
            case "reverse" | "reverse_part" if redemptions:
                points = 1 + k * 100 if kind == "reverse_part" else None
                command = ReverseRedemption(member, at, redemptions[k % len(redemptions)], f"v{n}", points, "why",
                                            "support", (S,))
            case "restock":
                command = define(stock=stock, at=at)
            case _:
                continue
        before = states[S].reward
        try:
            run(states, command)
        except (RewardUnavailable, MovementConflict) as refused:
            if isinstance(refused, RewardUnavailable) and refused.reason == "out_of_stock":
                assert before.remaining == 0
        except InvalidCommand:
            pass
        reward = states[S].reward
        assert reward is not None and reward.stock is not None
        assert 0 <= reward.taken <= reward.stock and reward.remaining >= 0
        assert reward.taken + reward.remaining == reward.stock
        assert reward.taken == _taken_by_members(states)  # every unit taken is a member's open hold or redemption
