"""The event store on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import asyncpg
import pytest

from ledger.bootstrap import Container
from ledger.domain import ConcurrencyConflict, DuplicateEvent, ExpirePoints, InsufficientPoints, fold
from ledger import handlers
from ledger.handlers import CommandRequest, Ledger
from ledger.store import EventStore, StreamAppend, UnitOfWork, verify_chain
from ledger.store.events import APPEND_LOCK_ID, GENESIS_HASH

from .helpers import T0, earn, redeem


async def test_update_delete_and_truncate_on_events_are_refused(container: Container) -> None:
    await container.ledger.handle(earn("m1", "B1"))
    async with container.pool.acquire() as conn:
        for sql in ("UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM events") == 1


async def test_two_concurrent_appends_to_one_stream_one_wins_the_other_conflicts(container: Container) -> None:
    from ledger.domain import CompleteBooking

    store = container.store
    await container.ledger.handle(earn("m1", "B0"))
    state = await container.ledger.member_state("m1")
    (last,) = await store.read_stream("m1", after_version=state.version - 1)

    def attempt(booking: str) -> StreamAppend:
        from decimal import Decimal

        from ledger.domain import decide

        events = decide(state, CompleteBooking("m1", T0, booking, "hotel", Decimal(10), "EUR"), container.rules)
        return StreamAppend("m1", state.version, last.hash, events)

    # Both appends queue on the appenders' lock, held here, in the order they asked for it.
    async with container.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_ID)
        first = asyncio.create_task(store.append([attempt("B1")]))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(store.append([attempt("B2")]))
        await asyncio.sleep(0.1)
    await first
    with pytest.raises(ConcurrencyConflict):
        await second
    assert [e.event.booking_id for e in await store.read_stream("m1")] == ["B0", "B1"]


async def test_the_handler_retries_a_conflicting_command_against_fresh_state(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle(earn("m1", "B0"))
    results = await asyncio.gather(*(ledger.handle(earn("m1", f"B{i}")) for i in range(1, 11)))
    assert all(r.status == "applied" for r in results)
    events = await container.store.read_stream("m1")
    # Eleven bookings, and silver (5,000 qualifying points) with the tenth's completion.
    assert [e.stream_version for e in events] == list(range(1, 13))
    assert sorted(e.event.booking_id for e in events if hasattr(e.event, "booking_id")) == sorted(
        f"B{i}" for i in range(11))
    assert [e.event.to_tier for e in events if e.event.type == "TierChanged"] == ["silver"]


async def test_a_process_whose_cached_state_is_behind_decides_again_on_fresh_state(container: Container) -> None:
    """Two processes writing for one member: each one's state cache falls behind the
    other's appends. An append on a stale state must be retried, and so must a refusal
    that the newer events would have turned into a success."""
    here = container.ledger
    there = Ledger(container.store, container.rules)  # another process's ledger, with its own cache
    await here.handle(earn("m1", "B1", amount="20.00"))  # 100 base + 500 first-booking bonus: 600
    assert (await here.member_state("m1")).available(T0) == 600
    await there.handle(earn("m1", "B2", amount="200.00"))  # 1000 more, unknown to `here`'s cache
    # `here` still believes 600: a redemption of 1,200 only fits on the fresh state.
    result = await here.handle(redeem("m1", 1_200, "r1"))
    assert result.applied.summary.available_after == 400
    await there.handle(earn("m1", "B3"))  # behind again
    await here.handle(earn("m1", "B4"))  # a conflict on the stream version, then applied
    events = await container.store.read_stream("m1")
    assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
    assert verify_chain(events) is None
    with pytest.raises(InsufficientPoints):  # a real refusal survives the check
        await here.handle(redeem("m1", 100_000, "r2"))


async def test_fifty_concurrent_redemptions_with_room_for_ten_give_exactly_ten(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle(earn("m1", "B1", amount="200.00"))  # 1000 base + 500 bonus = 1500
    await ledger.handle(redeem("m1", 500, "trim"))  # leaves 1000: room for ten of 100
    ledger.cache.forget(["m1"])

    async def one(i: int) -> str:
        try:
            await ledger.handle(redeem("m1", 100, f"r{i}"))
            return "ok"
        except InsufficientPoints:
            return "refused"

    outcomes = await asyncio.gather(*(one(i) for i in range(50)))
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 40
    state = await ledger.member_state("m1")
    assert state.available(T0) == 0
    assert sum(1 for e in await container.store.read_stream("m1") if e.event.type == "PointsRedeemed") == 11


async def test_a_duplicate_idempotency_key_applies_once_and_returns_the_original_result(container: Container) -> None:
    ledger = container.ledger
    first = await ledger.handle(earn("m1", "B1", key="evt-1"))
    again = await ledger.handle(earn("m1", "B1", key="evt-1"))
    assert first.status == "applied" and again.status == "duplicate"
    assert again.original == first
    concurrent = await asyncio.gather(*(ledger.handle(earn("m1", "B2", key="evt-2")) for _ in range(5)))
    assert sorted(r.status for r in concurrent) == ["applied"] + ["duplicate"] * 4
    assert len(await container.store.read_stream("m1")) == 2
    other_body = earn("m1", "B3", key="evt-1")
    other_body = type(other_body)(other_body.command, "evt-1", "another-body-hash")
    with pytest.raises(DuplicateEvent):
        await ledger.handle(other_body)


async def test_a_redelivered_redemption_that_would_apply_again_is_a_duplicate(container: Container) -> None:
    """The first attempt of a batch does not look its keys up: a duplicate that the
    domain would accept again (room for a second redemption) must be caught by the
    key on its first event, and the batch decided again with the records."""
    ledger = container.ledger
    await ledger.handle(earn("m1", "B1", "100.00"))
    first = await ledger.handle(redeem("m1", 10, "r-1"))
    balance = (await ledger.member_state("m1")).available(T0)
    batch = [earn("m2", "B2", key="e-2"), redeem("m1", 10, "r-1"), earn("m3", "B3", key="e-3"), redeem("m1", 5, "r-2")]
    results = await ledger.handle_batch(batch)
    assert [r.status for r in results] == ["applied", "duplicate", "applied", "applied"]
    assert results[1].original == first
    assert (await ledger.member_state("m1")).available(T0) == balance - 5
    assert [e.event.type for e in await container.store.read_stream("m1")] == [
        "PointsEarned", "PointsRedeemed", "PointsRedeemed"]
    again = await ledger.handle_batch(batch)  # the whole batch redelivered
    assert [r.status for r in again] == ["duplicate"] * 4
    assert [r.original for r in again] == [r.applied for r in results]
    assert await container.pool.fetchval("SELECT count(*) FROM events") == 5


async def test_a_duplicate_of_a_command_with_several_events_returns_all_of_them(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn("m1", "B1", key="e1"), earn("m1", "B2", key="e2", at=T0 + timedelta(days=1))])
    expire = CommandRequest(ExpirePoints("m1", T0 + timedelta(days=2000)), idempotency_key="expiry-run-1",
                            request_hash="run-1")
    first = await ledger.handle(expire)
    assert [e.event.type for e in first.events] == ["PointsExpired", "PointsExpired"]
    again = await ledger.handle(expire)
    assert again.status == "duplicate" and again.original == first
    assert len(await container.store.read_stream("m1")) == 4


async def test_a_key_recorded_before_keys_moved_onto_events_is_still_a_duplicate(container: Container) -> None:
    """Records written before migration 0003 live in `commands`; they must still count,
    also on a first attempt that does not look keys up (the events' unique index does
    not cover them)."""
    applied = await container.ledger.handle(earn("m1", "B1"))  # no key: nothing recorded on the event
    position = applied.position
    await container.pool.execute(
        "INSERT INTO commands (idempotency_key, request_hash, stream_id, result) VALUES ($1, $2, $3, $4::jsonb)",
        "legacy-1", "legacy-1", "m1",
        f'{{"member_id": "m1", "positions": [{position}], "available_after": 7, "pending_after": 0}}',
    )
    # A process started after the upgrade, with the legacy record there, and a member
    # it already holds (a first attempt trusts its cache).
    ledger = Ledger(EventStore(container.pool), container.rules)
    await ledger.load(["m1"])
    again = await ledger.handle(earn("m1", "B9", key="legacy-1"))
    assert again.status == "duplicate"
    assert again.original.position == position and again.original.summary.available_after == 7
    assert again.original.events == applied.events
    assert len(await container.store.read_stream("m1")) == 1


async def test_a_batch_appends_many_members_in_one_transaction_and_isolates_refusals(container: Container) -> None:
    ledger = container.ledger
    requests = [earn(f"m{i % 50}", f"B{i}", key=f"k{i}") for i in range(500)]
    requests.insert(10, redeem("nobody", 5, "r-nobody"))
    requests.append(earn("m1", "B1", key="k1"))  # a duplicate inside the batch
    results = await ledger.handle_batch(requests)
    assert [r.status for r in results].count("applied") == 500
    assert results[10].status == "rejected"
    assert results[-1].status == "duplicate" and results[-1].original == results[1]
    async with container.pool.acquire() as conn:
        # 500 bookings, and each member's upgrade to silver at its tenth (5,000 qualifying points).
        assert await conn.fetchval("SELECT count(*) FROM events") == 550
        assert await conn.fetchval("SELECT count(DISTINCT xmin::text) FROM events") == 1


async def test_hash_chain_verifies_and_detects_tampering(container: Container) -> None:
    import dataclasses

    for i in range(5):
        await container.ledger.handle(earn("m1", f"B{i}"))
    events = await container.store.read_stream("m1")
    assert events[0].hash != GENESIS_HASH and verify_chain(events) is None
    forged = dataclasses.replace(events[2], event=dataclasses.replace(events[2].event, points=999_999))
    assert verify_chain([*events[:2], forged, *events[3:]]) == 3


async def test_a_reader_polling_during_concurrent_batch_writers_sees_every_event_once_in_order(
    container: Container,
) -> None:
    """Writers hold their transaction open for a random while after inserting, so
    positions are handed out long before they commit; the reader must still never skip
    one it has polled past."""
    class LingeringStore(EventStore):
        async def _write(self, conn: asyncpg.Connection, uow: UnitOfWork, records: list[tuple]) -> object:
            failure = await super()._write(conn, uow, records)
            await asyncio.sleep(random.uniform(0, 0.02))  # the transaction stays open after its inserts
            return failure

    store = container.store
    ledger = Ledger(LingeringStore(container.pool), container.rules)
    writers_done = asyncio.Event()
    seen: list[int] = []

    async def writer(w: int) -> None:
        for b in range(15):
            batch = [earn(f"w{w}-m{i}", f"B{b}-{i}") for i in range(random.randint(1, 20))]
            await ledger.handle_batch(batch)

    async def reader() -> None:
        position = 0
        while True:
            done = writers_done.is_set()
            page = await store.read_all(position, 37)
            seen.extend(e.position for e in page)
            if page:
                position = page[-1].position
            elif done:
                return
            await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(6)))
    writers_done.set()
    await reading
    all_positions = [r["position"] for r in await container.pool.fetch("SELECT position FROM events ORDER BY 1")]
    assert seen == all_positions
    assert len(seen) == len(set(seen))


async def test_a_new_process_starts_from_saved_snapshots_and_the_events_after_them(container: Container) -> None:
    first = container.ledger
    await first.handle_batch([earn(f"m{i}", "B1", key=f"a{i}") for i in range(3)])
    await first.handle(redeem("m0", 100, "r0"))
    assert await first.save_snapshots() == 3
    await first.handle(earn("m0", "B2"))  # after the snapshot
    fresh = Ledger(container.store, container.rules)
    for m in ("m0", "m1", "m2"):
        history = [s.event for s in await container.store.read_stream(m)]
        assert await fresh.member_state(m) == fold(m, history)
    # The snapshot is what the state starts from (a doctored one shows through)...
    await container.pool.execute("UPDATE member_snapshots SET state = jsonb_set(state::jsonb, '{debt}', '7')::text"
                                 " WHERE member_id = 'm1'")
    assert (await Ledger(container.store, container.rules).member_state("m1")).debt == 7
    # ...unless it was taken by another version of the fold, when the history is read.
    await container.pool.execute("UPDATE member_snapshots SET format = format + 1 WHERE member_id = 'm1'")
    assert (await Ledger(container.store, container.rules).member_state("m1")).debt == 0
    # Saving again saves what moved past its snapshot (m0; m1 and m2 were loaded as saved)
    # and keeps the newer snapshot of each member.
    assert await fresh.save_snapshots() == 1
    versions = dict(await container.pool.fetch("SELECT member_id, version FROM member_snapshots"))
    assert versions == {"m0": 3, "m1": 1, "m2": 1}
    # Only the states that moved since they were saved are saved again, a bounded round at a time.
    assert await fresh.save_snapshots() == 0
    await fresh.handle(earn("m0", "B3"))
    await fresh.handle(earn("m1", "B3"))
    assert await fresh.save_snapshots(members_max=1) == 1
    assert await fresh.save_snapshots() == 1
    assert await fresh.save_snapshots() == 0
    versions = dict(await container.pool.fetch("SELECT member_id, version FROM member_snapshots"
                                               " WHERE member_id IN ('m0', 'm1')"))
    assert versions == {"m0": 4, "m1": 2}
    # A snapshot whose event is not in the store with the hash it recorded (a database
    # restored to an earlier time) is ignored too.
    await container.pool.execute("UPDATE member_snapshots SET version = 9 WHERE member_id = 'm2'")
    assert (await Ledger(container.store, container.rules).member_state("m2")).version == 1


async def test_a_load_that_folds_a_long_history_saves_the_snapshot_the_next_process_starts_from(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger serve` saves no snapshots as it goes: a member whose load folded many
    events has its snapshot saved then, so the next restart does not fold them again."""
    monkeypatch.setattr(handlers, "SNAPSHOT_FOLD_EVENTS_MIN", 20)
    await container.ledger.handle_batch([earn("long", f"B{i}", key=f"l{i}") for i in range(19)])
    await container.ledger.handle_batch([earn("long", "B19", key="l19"), earn("short", "B1", key="s1")])
    await container.ledger.handle(redeem("long", 150, "r1"))
    assert await container.pool.fetchval("SELECT count(*) FROM member_snapshots") == 0
    fresh = Ledger(container.store, container.rules)
    long_state = await fresh.member_state("long")
    short_state = await fresh.member_state("short")
    # 20 bookings, the upgrade to silver at the tenth, the redemption.
    assert dict(await container.pool.fetch("SELECT member_id, version FROM member_snapshots")) == {"long": 22}
    # The next process starts from it (a doctored snapshot shows through), and equals the fold.
    history = [s.event for s in await container.store.read_stream("long")]
    assert await Ledger(container.store, container.rules).member_state("long") == long_state == fold("long", history)
    await container.pool.execute("UPDATE member_snapshots SET state = jsonb_set(state::jsonb, '{debt}', '7')::text")
    assert (await Ledger(container.store, container.rules).member_state("long")).debt == 7
    # It counts as saved; the short member is saved by the usual rounds only.
    assert await fresh.save_snapshots() == 1
    assert short_state.version == 1


async def test_appends_do_not_wait_for_a_vacuum_or_analyse_of_the_events(container: Container) -> None:
    """VACUUM and ANALYZE (autovacuum's too) hold SHARE UPDATE EXCLUSIVE on the table for
    their whole pass; the appenders' turn-taking must not conflict with it."""
    async with container.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
        result = await asyncio.wait_for(container.ledger.handle(earn("m1", "B1")), timeout=5)
        assert result.status == "applied"


async def test_a_snapshot_of_a_dozen_lots_is_stored_inline_and_uncompressed(container: Container) -> None:
    """A member of a dozen bookings has a snapshot past the size at which PostgreSQL
    compresses a row; decompressing it cost a cold load more than loading it (migration
    0010), so the table keeps such rows as they are."""
    await container.ledger.handle_batch([earn("m", f"B{i}", key=f"k{i}") for i in range(12)])
    assert await container.ledger.save_snapshots() == 1
    size, compression = await container.pool.fetchrow(
        "SELECT length(state::text), pg_column_compression(state) FROM member_snapshots WHERE member_id = 'm'")
    assert size > 2_100 and compression is None
    fresh = Ledger(container.store, container.rules)
    assert await fresh.member_state("m") == fold("m", [s.event for s in await container.store.read_stream("m")])
