"""A merge racing the bookings of both members over Kafka (a real broker, `ledger
consume` in a child process, the merge from this one): nothing lost, nothing doubled;
bookings of the duplicate's id after the merge, and a cancellation and a refund of
bookings it earned before, apply to the survivor; the read models equal the fold, and a
rebuild equals them."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import build
from ledger.domain import (
    EarnReversed,
    MemberMergedAway,
    MemberMergedIn,
    MemberStatusChanged,
    MergeMembers,
    PointsEarned,
)
from ledger.handlers import CommandRequest
from projections import report_queries
from projections.runner import rebuild
from tests.unit.test_movement_properties import conserved, lots_add_up

from .test_projections import _tables
from .test_reports import _liability_by_fold
from .kafka_load import (
    T0,
    ConsumerProcess,
    create_topics,
    encode,
    end_offsets,
    kafka_env,
    kafka_settings,
    produce,
    wait_consumed,
)

pytestmark = pytest.mark.kafka
BOOKINGS_PER_MEMBER = 120


def _booking(member: str, run: str, n: int, kind: str = "booking.completed", **extra: Any) -> dict[str, Any]:
    tag = member.rsplit("-", 1)[-1]
    return {"event_id": f"{run}-{tag}-{n}-{kind}", "type": kind, "member_id": member, "booking_id": f"BK-{tag}-{n}",
            "product": "hotel", "amount": "100.00", "currency": "EUR",
            "occurred_at": (T0 + timedelta(seconds=n)).isoformat(), **extra}


async def _liability(container: Any) -> Counter:
    """The liability report now, by status and expiry month."""
    out: Counter = Counter()
    for status, month, _, points in (await report_queries.liability(container.pool, datetime.now(UTC))).rows:
        out[(status, month)] += points
    return +out


async def test_a_merge_racing_bookings_over_kafka_loses_and_doubles_nothing(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    survivor, duplicate = f"M-{run}-S", f"M-{run}-D"
    await create_topics(kafka_bootstrap, topic, partitions=2)
    half = BOOKINGS_PER_MEMBER // 2
    before = [_booking(m, run, n) for n in range(half) for m in (survivor, duplicate)]
    racing = [_booking(m, run, n) for n in range(half, BOOKINGS_PER_MEMBER) for m in (survivor, duplicate)]
    await produce(kafka_bootstrap, topic, [encode(e) for e in before[:20]])  # both members exist before the merge

    consumer = ConsumerProcess(kafka_env(db_url, kafka_bootstrap, topic, group, tmp_path), tmp_path / "consume.log")
    container = await build(kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path), run_migrations=False,
                            url=db_url)
    consumer.start()
    try:
        await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60, [consumer])
        # The rest of the bookings of both members stream in while the merge is decided.
        sending = asyncio.create_task(produce(kafka_bootstrap, topic, [encode(e) for e in before[20:] + racing],
                                              rate_per_s=300, chunk=10))
        # The merge once the consumer is part way through the duplicate's bookings.
        for _ in range(3_000):
            if await container.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", duplicate) >= 25:
                break
            await asyncio.sleep(0.01)
        merge = MergeMembers(survivor, T0 + timedelta(seconds=half), duplicate, "duplicate_account", "support")
        merged = await container.ledger.handle(CommandRequest(merge, idempotency_key=f"merge-{run}"))
        assert merged.applied.events
        await sending
        # After the merge: the duplicate's id still comes in, for new bookings and for
        # take-backs of bookings it earned before the merge.
        after = [_booking(duplicate, run, 0, "booking.cancelled"),
                 _booking(duplicate, run, 1, "booking.refunded", refund_amount="40.00"),
                 _booking(duplicate, run, 10_000)]
        await produce(kafka_bootstrap, topic, [encode(e) for e in after])
        await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 90, [consumer])
    finally:
        assert consumer.terminate() == 0, consumer.log_tail()
    try:
        assert await container.pool.fetchval("SELECT count(*) FROM rejected_messages") == 0
        streams = {m: [s.event for s in await container.store.read_stream(m)] for m in (survivor, duplicate)}
        earned = [e.booking_id for events in streams.values() for e in events if isinstance(e, PointsEarned)]
        produced = {e["booking_id"] for e in before + racing + after[2:]}
        assert sorted(earned) == sorted(produced)  # each booking earned once, on one stream or the other
        on_duplicate = {e.booking_id for e in streams[duplicate] if isinstance(e, PointsEarned)}
        redirected = {e.booking_id for e in streams[survivor] if isinstance(e, PointsEarned)} - {
            b for b in produced if b.startswith("BK-S-")}
        print(f"duplicate's bookings earned before the merge: {len(on_duplicate)}, redirected: {len(redirected)}")
        assert "BK-D-10000" in redirected and on_duplicate
        away = [i for i, e in enumerate(streams[duplicate]) if isinstance(e, MemberMergedAway)]
        assert away == [len(streams[duplicate]) - 1]  # nothing reached the duplicate after its merge

        state = await container.ledger.member_state(survivor)
        dup = await container.ledger.member_state(duplicate)
        assert dup.merged_into == survivor and not dup.all_lots() and dup.balance == 0
        assert set(state.bookings) == produced
        assert state.lot("booking:BK-D-0").status == "reversed"
        assert state.lot("booking:BK-D-1").amount == "60.00"
        reversed_ = [e for e in streams[survivor] if isinstance(e, EarnReversed)]
        assert [e.booking_id for e in reversed_] == ["BK-D-0"]
        # The survivor is what one member with both histories would be.
        lots_add_up(state)
        merged_at = next(i for i, e in enumerate(streams[survivor]) if isinstance(e, MemberMergedIn))
        history = streams[duplicate][:-1] + streams[survivor][:merged_at] + streams[survivor][merged_at + 1:]
        conserved([e for e in history if not isinstance(e, MemberStatusChanged)], state)

        await container.project()
        live = await _tables(container)
        # The liability moved with the lots: what the folds of both members have left.
        assert await _liability(container) == _liability_by_fold(streams, datetime.now(UTC)) != Counter()
        rows = {r["member_id"]: r for r in live["balances"]}
        for member, folded in ((survivor, state), (duplicate, dup)):
            row = rows[member]
            assert (row["available"], row["pending"], row["held"], row["debt"]) == (
                folded.balance, folded.pending, folded.held, folded.debt), member
            lots = {r["lot_id"]: r["remaining"] for r in live["expiry_lots"] if r["member_id"] == member
                    and r["remaining"]}
            assert lots == {lot_id: lot.remaining for lot_id, lot in folded.lots.items() if lot.remaining}
        assert rows[survivor]["lifetime_merged_in"] == rows[duplicate]["lifetime_merged_out"] > 0
        tiers = {r["booking_id"] for r in live["tier_qualifying"] if r["member_id"] == survivor}
        assert {b for _, b, _ in state.qualifying} == tiers
        assert not [r for r in live["tier_qualifying"] if r["member_id"] == duplicate]
        assert await container.pool.fetchval("SELECT merged_into FROM member_redirects WHERE member_id = $1",
                                             duplicate) == survivor

        await rebuild(container.pool, container.store, page_size=7, workers=1)
        assert await _tables(container) == live
        assert await _liability(container) == _liability_by_fold(streams, datetime.now(UTC))
    finally:
        await container.close()
