"""The write path as data: a unit of work committed whole, typed outcomes, commands that
read and write several member streams, and stale state answered as a value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.bootstrap import Container
from ledger.domain import (
    DEFAULT_RULES,
    AdjustPoints,
    Command,
    EarnReversed,
    Event,
    MemberState,
    ProgramRules,
    RefundBooking,
    decide,
    decide_streams,
)
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.handlers import Applied, CommandRequest, Duplicate, KafkaSource, Ledger, Rejected, Retry
from ledger.store import (
    EventStore,
    IdempotencyRace,
    OffsetFence,
    OffsetsFenced,
    RejectedMessage,
    StreamAppend,
    StreamConflict,
    UnitOfWork,
)

from .helpers import T0, earn, redeem


@dataclass(frozen=True, slots=True)
class MovePoints(Command):
    """Test-only: points from one member to another, in one command across two streams."""

    to_member: str
    points: int
    move_id: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.to_member)


def move_decider(states: Mapping[str, MemberState], command: Command, rules: ProgramRules) -> dict[str, list[Event]]:
    if not isinstance(command, MovePoints):
        return decide_streams(states, command, rules)
    at, points = command.occurred_at, command.points
    out = AdjustPoints(command.member_id, at, f"{command.move_id}-out", -points, "move", "test")
    into = AdjustPoints(command.to_member, at, f"{command.move_id}-in", points, "move", "test")
    # Refuses (InsufficientPoints) when the sender's state has too little: a decision on both states.
    return {command.member_id: decide(states[command.member_id], out, rules),
            command.to_member: decide(states[command.to_member], into, rules)}


def move(frm: str, to: str, points: int, move_id: str) -> CommandRequest:
    return CommandRequest(MovePoints(frm, T0, to, points, move_id), idempotency_key=move_id, request_hash=move_id)


async def _versions(container: Container, *members: str) -> list[list[tuple[int, str]]]:
    return [[(e.stream_version, e.event.type) for e in await container.store.read_stream(m)] for m in members]


async def test_a_command_across_two_streams_appends_to_both_in_one_transaction(container: Container) -> None:
    ledger = Ledger(container.store, container.rules, decider=move_decider)
    await ledger.handle_batch([earn("a", "B1"), earn("b", "B2"), earn("b", "B3")])
    moved = await ledger.handle(move("a", "b", 200, "mv-1"))
    assert isinstance(moved, Applied) and moved.member_id == "a"
    # Each stream's events follow the version the decision was made on (a: 1, b: 2).
    assert [(e.stream_id, e.stream_version, e.event.points) for e in moved.events] == [("a", 2, -200), ("b", 3, 200)]
    assert moved.position == moved.events[-1].position == moved.events[0].position + 1
    assert moved.summary.available_after == (await ledger.member_state("a")).available(T0)
    assert await container.pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM events WHERE position = ANY($1::bigint[])",
        [e.position for e in moved.events]) == 1
    # The duplicate answers with both streams' events, read back from the one record.
    again = await Ledger(container.store, container.rules, decider=move_decider).handle(move("a", "b", 200, "mv-1"))
    assert isinstance(again, Duplicate) and again.original == moved
    # A refusal on one member's state appends to neither.
    refused = await ledger.handle_batch([move("a", "b", 10**6, "mv-2")])
    assert isinstance(refused[0], Rejected) and type(refused[0].error).__name__ == "InsufficientPoints"
    assert await _versions(container, "a", "b") == [
        [(1, "PointsEarned"), (2, "PointsAdjusted")],
        [(1, "PointsEarned"), (2, "PointsEarned"), (3, "PointsAdjusted")],
    ]


async def test_a_conflict_on_either_stream_decides_the_whole_command_again(container: Container) -> None:
    here = Ledger(container.store, container.rules, decider=move_decider)
    there = Ledger(container.store, container.rules)  # another process, appending behind `here`'s cache
    await here.handle_batch([earn("a", "B1"), earn("b", "B2")])
    for i, behind in enumerate(("b", "a")):  # the receiver's stream moved, then the sender's
        await there.handle(earn(behind, f"T{i}"))
        conflicts = here.conflicts
        moved = await here.handle(move("a", "b", 100, f"mv-{i}"))
        assert here.conflicts == conflicts + 1  # the first attempt met the moved stream, and nothing of it stayed
        # Decided again on both fresh states: each stream got exactly one more event, after the other writer's.
        assert {e.stream_id: e.stream_version for e in moved.events} == {
            "a": len(await container.store.read_stream("a")), "b": len(await container.store.read_stream("b"))}
    assert await _versions(container, "a", "b") == [
        [(1, "PointsEarned"), (2, "PointsAdjusted"), (3, "PointsEarned"), (4, "PointsAdjusted")],
        [(1, "PointsEarned"), (2, "PointsEarned"), (3, "PointsAdjusted"), (4, "PointsAdjusted")],
    ]


async def test_a_cached_state_behind_the_store_is_a_retry_value_not_an_exception(container: Container) -> None:
    here = container.ledger
    there = Ledger(container.store, container.rules)
    await here.handle(earn("m1", "B1", amount="20.00"))  # 600 with the first-booking bonus
    await there.handle(earn("m1", "B2", amount="200.00"))  # 1,000 more, unknown to `here`'s cache
    request = redeem("m1", 1_200, "r1")  # refused on the cached state: doubtful
    attempt = await here._attempt([request], None, (), trust_cache=True)
    assert isinstance(attempt, Retry) and attempt.members == ("m1",)
    assert len(await container.store.read_stream("m1")) == 2  # nothing was written
    (outcome,) = await here.handle_batch([request])
    assert isinstance(outcome, Applied) and outcome.summary.available_after == 400


async def test_commit_writes_a_unit_of_work_whole_or_answers_why_not(container: Container) -> None:
    store: EventStore = container.store
    await container.ledger.handle(earn("m1", "B1", key="k1"))
    state, last = await container.ledger.load(["m1"]), (await store.read_stream("m1"))[-1]
    fresh = decide(state["m1"][0], earn("m1", "B2").command, container.rules)
    rejected = RejectedMessage("t", 0, 5, b"m1", b"{}", "schema: bad")
    fence = OffsetFence("g", "t", ((0, None, 6),))
    counts = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM kafka_offsets), " \
             "(SELECT count(*) FROM rejected_messages)"

    stale = StreamAppend("m1", 0, last.hash, fresh)  # the stream is at 1
    assert isinstance(await store.commit(UnitOfWork([stale], fence, [rejected])), StreamConflict)
    assert tuple(await container.pool.fetchrow(counts)) == (1, 0, 0)
    taken = StreamAppend("m1", 1, last.hash, fresh, {}, "k1", {"request_hash": "h", "events": 1})
    assert isinstance(await store.commit(UnitOfWork([taken], fence, [rejected])), IdempotencyRace)
    assert tuple(await container.pool.fetchrow(counts)) == (1, 0, 0)
    moved = OffsetFence("g", "t", ((0, 3, 6),))  # expects a stored offset 3: there is none
    assert isinstance(await store.commit(UnitOfWork([StreamAppend("m1", 1, last.hash, fresh)], moved)), OffsetsFenced)
    assert tuple(await container.pool.fetchrow(counts)) == (1, 0, 0)

    good = StreamAppend("m1", 1, last.hash, fresh)
    assert await store.commit(UnitOfWork([good], fence, [rejected])) is None
    assert tuple(await container.pool.fetchrow(counts)) == (2, 1, 1) and len(good.positions) == 1


async def test_a_refused_kafka_command_is_recorded_as_a_rejected_message_in_its_batch(container: Container) -> None:
    ledger = container.ledger
    value = b'{"the": "message"}'
    refused = CommandRequest(redeem("nobody", 5, "r-x").command, source=KafkaSource("topic", 2, 41, b"nobody", value))
    unparsed = RejectedMessage("topic", 2, 40, None, b"{oops", "not JSON")
    outcomes = await ledger.handle_batch([earn("m1", "B1"), refused], rejections=[unparsed])
    assert [o.status for o in outcomes] == ["applied", "rejected"]
    rows = await container.pool.fetch('SELECT "offset", key, value, reason, xmin::text AS tx FROM rejected_messages'
                                      ' ORDER BY "offset"')
    assert [(r["offset"], r["key"], bytes(r["value"])) for r in rows] == [(40, None, b"{oops"), (41, "nobody", value)]
    assert rows[1]["reason"].startswith("Member not found: ")
    event_tx = await container.pool.fetchval("SELECT xmin::text FROM events")
    assert {r["tx"] for r in rows} == {event_tx}  # one transaction with the events


async def test_a_booking_event_outcome_carries_its_points_shortfall_included_also_as_a_duplicate(
    container: Container,
) -> None:
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})
    assert rules != DEFAULT_RULES
    ledger = Ledger(container.store, rules)
    earned = await ledger.handle(earn("M-1", "A", "60.00"))  # 800 with the first-booking bonus
    assert earned.summary.earned == 800 and earned.summary.available_after == 800
    await ledger.handle(redeem("M-1", 700, "R1"))
    refund = CommandRequest(RefundBooking("M-1", T0, "A"), idempotency_key="refund-A", request_hash="refund-A")
    refunded = await ledger.handle(refund)
    (reversal,) = [e.event for e in refunded.events]
    assert isinstance(reversal, EarnReversed) and reversal.shortfall == 700 and reversal.shortfall_debited
    assert refunded.summary.earned == -800 and refunded.summary.available_after == -700
    again = await Ledger(container.store, rules).handle(refund)
    assert isinstance(again, Duplicate) and again.original.summary == refunded.summary


async def test_a_batch_counts_its_outcomes_without_building_them_and_builds_each_once(container: Container) -> None:
    """What the Kafka consumer reads of a batch (`counts`) builds no outcome; read, each
    is built once, and a key repeated within the batch answers with its first outcome."""
    ledger = container.ledger
    batch = [earn("m1", "B1", key="e-1"), earn("m1", "B1", key="e-1"), redeem("nobody", 5, "r-x"),
             earn("m2", "B2"), earn("m1", "B3", key="e-3")]
    outcomes = await ledger.handle_batch(batch)
    assert outcomes.counts() == {"applied": 3, "duplicate": 1, "rejected": 1}
    assert [o.status for o in outcomes] == ["applied", "duplicate", "rejected", "applied", "applied"]
    first = outcomes[0]
    assert isinstance(first, Applied) and outcomes[0] is first and outcomes[1].original is first
    stored = {(e.stream_id, e.stream_version): e.position for m in ("m1", "m2") for e in await container.store.read_stream(m)}
    for outcome in (outcomes[0], outcomes[3], outcomes[4]):
        assert isinstance(outcome, Applied)
        (appended,) = outcome.events
        assert appended.position == stored[(appended.stream_id, appended.stream_version)] == outcome.position
        assert outcome.summary.earned == appended.event.points > 0
    assert outcomes[4].summary.available_after == outcomes[0].summary.earned + outcomes[4].summary.earned
