"""The movements under concurrency on the real PostgreSQL: several `Ledger` instances
over one store, as separate processes would be, racing on the same streams."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from datetime import timedelta

from ledger.bootstrap import Container
from ledger.domain import (
    CaptureHold,
    Command,
    ExpireHolds,
    HoldCaptured,
    HoldReleased,
    InsufficientPoints,
    LedgerError,
    MemberState,
    MovementConflict,
    PlaceHold,
    PointsTransferredIn,
    PointsTransferredOut,
    ProgramRules,
    ReleaseHold,
    TransferPoints,
    evolve,
)
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.handlers import Applied, CommandRequest, Ledger
from ledger.store.events import verify_chain

from .helpers import T0, earn

# Transfer limits out of the way: the race is what is under test.
RULES = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "transfers": {
    "points_min": 1, "sent_points_per_year": 10**9, "sent_count_per_year": 10**6,
    "received_points_per_year": 10**9, "received_count_per_year": 10**6}})
RACE_SECONDS_MAX = 60  # the bound every race must finish within: no deadlock, no endless retries


def request(command: Command, key: str) -> CommandRequest:
    return CommandRequest(command, idempotency_key=key, request_hash=key)


async def outcome(call: Awaitable[Applied]) -> Applied | LedgerError:
    """What a racer got: its outcome, or the domain's refusal (`handle` raises it)."""
    try:
        return await call
    except LedgerError as refusal:
        return refusal


async def race(*calls: Awaitable[Applied]) -> list[Applied | LedgerError]:
    return await asyncio.wait_for(asyncio.gather(*(outcome(c) for c in calls)), RACE_SECONDS_MAX)


async def history_holds_up(container: Container, member: str) -> MemberState:
    """The member's stream verifies its hash chain, and no state along it was overdrawn;
    returns the state at its end."""
    stored = await container.store.read_stream(member)
    assert verify_chain(stored) is None
    state = MemberState(member)
    for s in stored:
        state = evolve(state, s.event)
        assert state.available(s.event.occurred_at) >= 0, (member, s.stream_version)
    return state


async def test_fifty_opposite_transfers_all_finish_conserve_points_and_keep_the_chains(container: Container) -> None:
    ledgers = [Ledger(container.store, RULES) for _ in range(5)]  # five processes
    await ledgers[0].handle_batch([earn("A", "BA", "1000.00"), earn("B", "BB", "1000.00")])  # 5,500 each
    rng = random.Random(7)
    at = T0 + timedelta(hours=1)
    transfers = []
    for n in range(50):
        frm, to = rng.choice([("A", "B"), ("B", "A")])
        transfers.append(TransferPoints(frm, at, f"T{n}", to, rng.randint(100, 3_000), "family"))

    async def send(n: int, command: TransferPoints) -> Applied:
        await asyncio.sleep(rng.uniform(0, 0.02))  # arrivals spread, so batches mix and collide
        return await ledgers[n % len(ledgers)].handle(request(command, command.transfer_id))

    started = time.perf_counter()
    outcomes = await race(*(send(n, c) for n, c in enumerate(transfers)))
    elapsed = time.perf_counter() - started
    assert elapsed < RACE_SECONDS_MAX
    refused = [o for o in outcomes if isinstance(o, LedgerError)]
    assert all(isinstance(o, InsufficientPoints) for o in refused), refused
    applied = [o for o in outcomes if isinstance(o, Applied)]
    assert len(applied) + len(refused) == 50 and applied
    conflicts = sum(ledger.conflicts for ledger in ledgers)
    print(f"\n50 transfers across 5 ledgers: {len(applied)} applied, {len(refused)} refused, "
          f"{conflicts} attempts decided again, {elapsed:.2f} s")

    states = {m: await history_holds_up(container, m) for m in ("A", "B")}
    assert sum(s.available(at) for s in states.values()) == 11_000  # conserved
    assert all(s.available(at) >= 0 for s in states.values())
    # Each applied transfer is one PointsTransferredOut and credits that much, once.
    events = [s.event for m in ("A", "B") for s in await container.store.read_stream(m)]
    sent = {e.transfer_id: e.points for e in events if isinstance(e, PointsTransferredOut)}
    received: dict[str, int] = {}
    for e in events:
        if isinstance(e, PointsTransferredIn):
            received[e.transfer_id] = received.get(e.transfer_id, 0) + e.points
    assert sent == received and len(sent) == len(applied)
    by_id = {c.transfer_id: c for c in transfers}
    assert all(by_id[t].points == points for t, points in sent.items())
    for m in ("A", "B"):  # and the balance each member ends with is what its transfers say
        net = sum(by_id[t].points * (1 if by_id[t].to_member_id == m else -1) for t in sent)
        assert states[m].available(at) == 5_500 + net


async def warm(ledgers: list[Ledger], member: str) -> None:
    """Every ledger has the member's current state cached: each decides its command on
    the same state, and all but one meet the stream moved when they commit."""
    for ledger in ledgers:
        await ledger.load([member])


async def test_concurrent_captures_and_releases_of_one_hold_have_one_winner(container: Container) -> None:
    ledgers = [Ledger(container.store, RULES) for _ in range(6)]
    await ledgers[0].handle(earn("A", "B1"))  # 1,000
    winners = []
    for round_ in range(5):
        hold_id = f"H{round_}"
        await ledgers[0].handle(request(PlaceHold("A", T0, hold_id, 600, "rw", "hotel_night", T0 + timedelta(days=1)),
                                        hold_id))
        await warm(ledgers, "A")
        captures = {f"C{round_}-{i}": 100 * (i + 1) for i in range(4)}  # four captures of different sizes
        racers = [ledger.handle(request(CaptureHold("A", T0, hold_id, rid, points), rid))
                  for ledger, (rid, points) in zip(ledgers, captures.items(), strict=False)]
        racers += [ledger.handle(request(ReleaseHold("A", T0, hold_id), f"rel-{round_}-{i}"))
                   for i, ledger in enumerate(ledgers[4:])]
        random.Random(round_).shuffle(racers)  # who starts first changes from round to round
        outcomes = await race(*racers)
        won = [o for o in outcomes if isinstance(o, Applied)]
        assert len(won) == 1, outcomes
        assert all(isinstance(o, MovementConflict) for o in outcomes if o is not won[0]), outcomes
        state = await history_holds_up(container, "A")
        assert state.held == 0 and not state.holds
        first = won[0].events[0].event
        if isinstance(first, HoldCaptured):
            winners.append("capture")
            assert state.holds_closed[hold_id] == "captured"
            assert first.points == captures[first.redemption_id]
            assert state.redemptions[first.redemption_id].points == first.points
            assert state.available(T0) == 1_000 - first.points
            # Spent: earned back (5 points a euro) for the next round.
            await ledgers[0].handle_batch([earn("A", f"top-up-{round_}", f"{first.points // 5}.00")])
        else:
            assert isinstance(first, HoldReleased) and first.reason == "released"
            winners.append("release")
            assert state.holds_closed[hold_id] == "released"
            assert state.available(T0) == 1_000
        assert (await ledgers[0].member_state("A")).available(T0) == 1_000
    print(f"\nwinners of five capture/release races: {winners}")


async def test_a_hold_expiring_while_a_capture_races_it_applies_exactly_one(container: Container) -> None:
    here, there = Ledger(container.store, RULES), Ledger(container.store, RULES)
    await here.handle(earn("A", "B1"))  # 1,000
    winners = []
    for round_ in range(6):
        hold_id = f"H{round_}"
        ends = T0 + timedelta(hours=round_ + 1)
        await here.handle(request(PlaceHold("A", T0, hold_id, 400, "rw", "hotel_night", ends), hold_id))
        await warm([here, there], "A")
        capture = here.handle(request(CaptureHold("A", ends - timedelta(minutes=1), hold_id, f"C{round_}", 400),
                                      f"C{round_}"))
        expiry = there.handle(request(ExpireHolds("A", ends), f"expire-{round_}"))
        if round_ % 2:  # either may be submitted first
            captured, expired = reversed(await race(expiry, capture))
        else:
            captured, expired = await race(capture, expiry)
        assert isinstance(expired, Applied)  # an expiry run never refuses: it may find nothing due
        if isinstance(captured, Applied):
            winners.append("capture")
            assert [type(e.event) for e in captured.events] == [HoldCaptured] and expired.events == ()
        else:
            winners.append("expiry")
            assert isinstance(captured, MovementConflict) and captured.details["hold_status"] == "expired"
            assert [(type(e.event), e.event.reason) for e in expired.events] == [(HoldReleased, "expired")]
        state = await history_holds_up(container, "A")
        assert state.holds_closed[hold_id] == {"capture": "captured", "expiry": "expired"}[winners[-1]]
        assert state.held == 0
        if winners[-1] == "capture":  # spent: earn it back for the next round
            await here.handle_batch([earn("A", f"top-up-{round_}", "80.00")])
        assert state.available(ends) + (400 if winners[-1] == "capture" else 0) == 1_000
    print(f"\nwinners of six expiry/capture races: {winners}")
