"""The report read models against a recomputation from the events: the liability as of
instants through the history (the domain's fold of each member's events up to then),
and the activity by day and kind (a plain fold over `read_all`), live and after a
rebuild, over a history with every kind of event and expiries by the expiry job."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ledger.bootstrap import Container, build
from ledger.domain import (
    BookingAmended,
    DebtSettled,
    EarnReversed,
    Event,
    HoldCaptured,
    HoldReleased,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
    MemberState,
    ProgramRules,
    evolve,
    fold,
    tier_status,
)
from ledger.domain.tierpolicy import tier_in_force
from ledger.domain.timeutil import add_months
from ledger.expiry import expire_due
from ledger.ingest import topics
from ledger.ingest.consumer import consumer_task
from ledger.store import StreamAppend
from ledger.store.events import GENESIS_HASH
from projections import report_queries
from projections.runner import rebuild

from .helpers import T0
from .kafka_load import T0 as KAFKA_T0
from .kafka_load import booking_events, encode, end_offsets, kafka_settings, produce, wait_consumed
from .test_projections import MOVEMENT_RULES, _history


def _month(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m")


def _liability_by_fold(streams: dict[str, list[Event]], as_of: datetime) -> Counter:
    """Outstanding points by (status, expiry month) from the fold of each member's
    events up to `as_of`: what is left and held on its pending and active lots."""
    out: Counter = Counter()
    for member, events in streams.items():
        before = [e for e in events if e.occurred_at <= as_of]
        if not before:
            continue
        for lot in fold(member, before).all_lots().values():
            status = "pending" if lot.status == "pending" else "active"
            out[(status, _month(lot.expires_at))] += lot.remaining + lot.held
    return +out


def _tier_deltas(streams: dict[str, list[Event]], rules: ProgramRules) -> list[tuple[datetime, str, int]]:
    """Each event's change of what is left and held on each lot, with the lot's tier: for a
    lot an earn made, the member's tier in force just before the earn (the domain's
    `tier_in_force` over the fold); for any other lot (support credits, transfers in,
    grace lots), no tier ("")."""
    out = []
    for member, events in streams.items():
        state = MemberState(member)
        tiers: dict[str, str] = {}
        before: dict[str, int] = {}
        for e in events:
            # The tier in force the decider priced the earn at (tier policies: what the
            # member qualifies for, or higher until a review lands it softly).
            tier = (e.tier or "") if isinstance(e, PointsEarned) else ""
            if isinstance(e, PointsEarned):
                assert e.tier == tier_in_force(state, rules, e.occurred_at), e
            state = evolve(state, e)
            now = {lot_id: lot.remaining + lot.held for lot_id, lot in state.all_lots().items()}
            assert before.keys() <= now.keys()
            for lot_id, points in now.items():
                tiers.setdefault(lot_id, tier)
                if points != before.get(lot_id, 0):
                    out.append((e.occurred_at, tiers[lot_id], points - before.get(lot_id, 0)))
            before = now
    return out


def _moved(e: Event) -> list[tuple[str, int]]:
    """The activity of one event, by kind: the reports' definitions, spelt out."""
    match e:
        case PointsEarned():
            return [("earned", e.points)]
        case PendingPointsActivated():
            return [("activated", e.points)]
        case PointsRedeemed() | PointsRedeemedForHousehold() | HoldCaptured():
            return [("redeemed", e.points)]
        case RedemptionReversed():
            return [("redeemed", -e.points), ("expired", sum(p for _, p in e.expired))]
        case PointsExpired():
            return [("expired", e.points)]
        case HoldReleased():
            return [("expired", sum(p for _, p in e.expired))]
        case DebtSettled():
            return [("debt_settled", e.points)]
        case PointsAdjusted():
            return [("adjusted", e.points)]
        case EarnReversed():
            return [("clawed_back", e.points)]
        case BookingAmended():
            return [("earned", e.points)] if e.points > 0 else [("clawed_back", -e.points)]
        case PointsTransferredIn():
            return [("transferred_in", e.points)]
        case PointsTransferredOut():
            return [("transferred_out", e.points)]
    return []


async def _check(container: Container, streams: dict[str, list[Event]], instants: list[datetime]) -> None:
    tier_deltas = _tier_deltas(streams, container.rules)
    everything = [s.event for s in await container.store.read_all(0, 1_000_000)]
    for as_of in instants:
        report = await report_queries.liability(container.pool, as_of)
        by_bucket: Counter = Counter()
        by_tier: Counter = Counter()
        for status, month, tier, points in report.rows:
            by_bucket[(status, month)] += points
            by_tier[tier] += points
        assert +by_bucket == _liability_by_fold(streams, as_of), as_of
        expected_by_tier: Counter = Counter()
        for at, tier, points in tier_deltas:
            if at <= as_of:
                expected_by_tier[tier] += points
        assert +by_tier == +expected_by_tier, as_of
        assert all(points > 0 for points in by_tier.values())  # what is left of lots, by the lots' tiers
    # The activity of every day, by kind, against the plain fold.
    expected: Counter = Counter()
    for e in everything:
        for kind, points in _moved(e):
            expected[(e.occurred_at.astimezone(UTC).date().isoformat(), kind)] += points
    first, last = min(instants), max(instants)
    days = await report_queries.activity(container.pool, first.date(), last.date() + timedelta(days=1), monthly=False)
    got: Counter = Counter()
    for day, kind, _, _, points in days.rows:
        got[(day, kind)] += points
    assert +got == +expected
    months = await report_queries.activity(container.pool, first.date(), last.date() + timedelta(days=1),
                                           monthly=True)
    assert sum(r[4] for r in months.rows) == sum(r[4] for r in days.rows)
    # The kinds the balances count alike add up to their lifetime totals.
    totals = dict(await container.pool.fetchrow(
        "SELECT sum(lifetime_redeemed) AS redeemed, sum(lifetime_expired) AS expired,"
        " sum(lifetime_adjusted) AS adjusted, sum(lifetime_transferred_in) AS transferred_in,"
        " sum(lifetime_transferred_out) AS transferred_out FROM balances"))
    by_kind: Counter = Counter()
    for _, kind, _, _, points in days.rows:
        by_kind[kind] += points
    assert {k: by_kind[k] for k in totals} == totals


async def _streams_and_instants(container: Container) -> tuple[dict[str, list[Event]], list[datetime]]:
    """Each member's events, and instants through the history to read the reports at."""
    streams: dict[str, list[Event]] = {}
    for stored in await container.store.read_all(0, 1_000_000):
        if not stored.stream_id.startswith("household"):
            streams.setdefault(stored.stream_id, []).append(stored.event)
    # An instant at which some member's events up to it are not the first ones of its
    # stream (an event dated before one appended earlier) has no state of the fold to
    # compare with: those instants are left out, and some remain.
    windows = []
    for events in streams.values():
        latest = events[0].occurred_at
        for e in events[1:]:
            if e.occurred_at < latest:
                windows.append((e.occurred_at, latest))
            latest = max(latest, e.occurred_at)
    moments = sorted({e.occurred_at for events in streams.values() for e in events})
    # Each event's instant, a moment before it, the middle of a day, and after the end.
    instants = [moments[0] - timedelta(seconds=1), *moments[:: max(1, len(moments) // 12)],
                moments[len(moments) // 2] - timedelta(microseconds=1),
                datetime.combine(moments[len(moments) // 3].date(), datetime.min.time(), UTC) + timedelta(hours=13),
                moments[-1], moments[-1] + timedelta(days=400)]
    instants = [t for t in instants if not any(start <= t < end for start, end in windows)]
    assert len(instants) >= 8
    return streams, instants


async def test_reports_equal_a_recomputation_from_the_events_live_and_after_a_rebuild(container: Container) -> None:
    await _history(container, members=30, seed=11)
    # Expiries by the expiry job, past the dates of the first steps' lots.
    ends = add_months(T0, MOVEMENT_RULES.expiry_months)
    await container.project()
    assert await expire_due(container.ledger, container.pool, ends + timedelta(days=50)) > 0
    await container.project()

    streams, instants = await _streams_and_instants(container)
    assert any(isinstance(e, PointsExpired) for events in streams.values() for e in events)
    await _check(container, streams, instants)
    live = await report_queries.liability(container.pool, instants[-1])
    assert {r[2] for r in live.rows} > {"member"}  # some points came in above the first tier

    await rebuild(container.pool, container.store, page_size=53, workers=2, dsn=container.url)
    await _check(container, streams, instants)
    assert await report_queries.liability(container.pool, instants[-1]) == live


async def test_earns_recorded_without_their_tier_count_under_no_tier(container: Container) -> None:
    """Earns written before PointsEarned carried its tier (version 1, read with `tier`
    None) count under no tier (""): a copy of every member's history with the earns'
    tiers left out adds each tier's figure to the figure of no tier, live and rebuilt."""
    await _history(container, members=12, seed=5)
    await container.project()
    streams, instants = await _streams_and_instants(container)
    earns = [e for events in streams.values() for e in events if isinstance(e, PointsEarned)]
    assert earns and all(e.tier is not None for e in earns) and {e.tier for e in earns} > {"member"}
    before = {t: await report_queries.liability(container.pool, t) for t in instants}
    for member, events in streams.items():
        old = [dataclasses.replace(e, tier=None) if isinstance(e, PointsEarned) else e for e in events]
        await container.store.append([StreamAppend(f"old-{member}", 0, GENESIS_HASH, old)])
    for rebuilt in (False, True):
        if rebuilt:
            await rebuild(container.pool, container.store, page_size=41, workers=2,
                          dsn=container.url)
        else:
            await container.project()
        for t in instants:
            expected: Counter = Counter()
            for status, month, tier, points in before[t].rows:
                expected[(status, month, tier)] += points
                expected[(status, month, "")] += points
            rows = (await report_queries.liability(container.pool, t)).rows
            assert {(status, month, tier): points for status, month, tier, points in rows} == +expected, (t, rebuilt)


async def test_reports_after_a_kafka_load_and_expiries_equal_a_recomputation(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    """Bookings, partial refunds, amendments and refunds consumed from Kafka, then the
    expiry job: the reports equal the recomputation, live and after a rebuild."""
    run = uuid.uuid4().hex[:8]
    settings = kafka_settings(db_url, kafka_bootstrap, f"bookings-{run}", f"ledger-{run}", tmp_path,
                              kafka_topic_partitions=2)
    await topics.ensure_topics(settings)
    container = await build(settings, run_migrations=False, url=db_url)
    try:
        stop = asyncio.Event()
        task = asyncio.create_task(consumer_task(container, stop))
        try:
            load = booking_events(400, 25, seed=5, prefix=run, movements=0.3)
            await produce(kafka_bootstrap, settings.kafka_topic, [encode(e) for e in load])
            await wait_consumed(container.pool, settings.kafka_group_id, settings.kafka_topic,
                                await end_offsets(kafka_bootstrap, settings.kafka_topic), 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
        await container.project()
        assert await expire_due(container.ledger, container.pool, add_months(KAFKA_T0, 25)) > 0
        await container.project()
        streams, instants = await _streams_and_instants(container)
        assert any(isinstance(e, BookingAmended) for events in streams.values() for e in events)
        await _check(container, streams, instants)
        await rebuild(container.pool, container.store, page_size=31, workers=1)
        await _check(container, streams, instants)
    finally:
        await container.close()
