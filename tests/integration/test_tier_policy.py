"""Tier policies (P4) on a real PostgreSQL: the tier scheduler downgrades each member
once, one tier at a time, and warns it once, even with two schedulers at once; the
`member_tiers` read model follows, and a rebuild gives it back row for row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ledger.bootstrap import Container
from ledger.domain import TierChanged, TierWarning
from ledger.handlers import Ledger
from ledger.tier_review import review_tiers
from projections.runner import rebuild

from .helpers import T0, earn
from .test_projections import _tables


async def _tier_events(container: Container) -> list[tuple]:
    out = []
    for s in await container.store.read_all(0, 1_000):
        if isinstance(s.event, TierChanged):
            out.append((s.stream_id, s.event.direction, s.event.from_tier, s.event.to_tier))
        elif isinstance(s.event, TierWarning):
            out.append((s.stream_id, "warning", s.event.tier, s.event.to_tier))
    return out


async def test_two_schedulers_downgrade_once_one_tier_at_a_time_and_a_rebuild_equals_live(
        container: Container) -> None:
    here, pool = container.ledger, container.pool
    there = Ledger(container.store, container.book)  # another process, with a cache of its own
    book = lambda: container.book  # noqa: E731
    # 20,000, 5,000 and 500 qualifying points on 4 May 2026: gold and silver at once, member.
    await here.handle_batch([earn("a", "B1", "4000"), earn("b", "B1", "1000"), earn("c", "B1", "100")])
    assert await _tier_events(container) == [("a", "upgrade", "member", "gold"), ("b", "upgrade", "member", "silver")]
    await container.runner.run_until_caught_up()
    assert [tuple(r) for r in await pool.fetch("SELECT member_id, tier FROM member_tiers ORDER BY 1")] == [
        ("a", "gold"), ("b", "silver")]
    assert await review_tiers(here, pool, book, T0) == 0  # nothing due yet

    # 8 June 2027: the evaluation of 1 June found the points out of the window. Two
    # schedulers at once: each member drops one tier, once.
    now = datetime(2027, 6, 8, tzinfo=UTC)
    await asyncio.wait_for(asyncio.gather(review_tiers(here, pool, book, now), review_tiers(there, pool, book, now)),
                           20)
    changes = [e for e in await _tier_events(container) if e[1] == "downgrade"]
    assert changes == [("a", "downgrade", "gold", "silver"), ("b", "downgrade", "silver", "member")]
    # a is silver from now and does not qualify: warned of 1 July, once, whoever runs.
    await container.runner.run_until_caught_up()
    await asyncio.wait_for(asyncio.gather(review_tiers(here, pool, book, now), review_tiers(there, pool, book, now)),
                           20)
    assert await review_tiers(here, pool, book, now) == 0
    assert [e for e in await _tier_events(container) if e[1] == "warning"] == [("a", "warning", "silver", "member")]

    # 1 July: a's next evaluation, one more tier.
    july = datetime(2027, 7, 1, tzinfo=UTC)
    assert await review_tiers(there, pool, book, july) == 1
    assert await review_tiers(here, pool, book, july) == 0
    await container.runner.run_until_caught_up()
    assert [tuple(r) for r in await pool.fetch("SELECT member_id, tier, direction FROM member_tiers ORDER BY 1")] == [
        ("a", "member", "downgrade"), ("b", "member", "downgrade")]
    assert await review_tiers(here, pool, book, july) == 0  # at the lowest tier: not walked
    assert (await here.member_state("a")).tiers[-1] == (july, "member")

    await container.project()  # the reports' group too, for the comparison with a rebuild
    live = await _tables(container)
    await rebuild(container.pool, container.store, page_size=3)
    assert await _tables(container) == live
