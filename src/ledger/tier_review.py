"""P4, tier policies: the tier scheduler. Walks the members with a tier change in the
`member_tiers` read model (those above the lowest tier) and hands each a `ReviewTier`
command: the domain decides whether a downgrade (one tier, at an evaluation date plus
the grace days) or a warning is due (`ledger.domain.tierpolicy.review`), and appends
nothing otherwise.

Idempotent by construction: a downgrade moves the member's last change past the
evaluation date it was for, and a warning is recorded on the member's state, so a
second pass, a restart, or a second runner deciding on the same state (whose append
then fails its expected version and is decided again) appends nothing more.

Bounded as the expiry scheduler is: pages of `members_max` members, one command of at
most one event each, appended in batches (`ledger.expiry.pass_over_due`). Every member
above the lowest tier is reviewed each pass, so the pass interval is long (an hour by
default): evaluation dates are days, and a downgrade is at most an interval late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain import ReviewTier, RuleBook
from ledger.expiry import pass_over_due, run_passes
from ledger.handlers import Ledger

TIER_PAGES_MAX = 100_000  # pages of members one pass walks at most
TIER_BATCH_EVENTS_MAX = 500  # reviews (at most one event each) one append takes


async def tiered_members(pool: asyncpg.Pool, lowest: str, after: str, limit: int) -> list[tuple[str, int]]:
    """(member, 1) of the first `limit` members after `after`, by member id, whose tier in
    force is not `lowest`: one page of a pass."""
    rows = await pool.fetch(
        "SELECT member_id FROM member_tiers WHERE member_id > $1 AND tier <> $2 ORDER BY member_id LIMIT $3",
        after, lowest, limit)
    return [(r[0], 1) for r in rows]


async def review_tiers(ledger: Ledger, pool: asyncpg.Pool, rules: Callable[[], RuleBook], now: datetime,
                       members_max: int = 500, *, pages_max: int = TIER_PAGES_MAX) -> int:
    """One pass over the members above the lowest tier at `now`; returns how many events
    it appended (downgrades and warnings)."""
    lowest = rules().at(now).tiers[0].name
    return await pass_over_due(
        ledger, lambda after: tiered_members(pool, lowest, after, members_max),
        lambda member_id, _: ReviewTier(member_id, now), "tier-scheduler",
        items_max=1, events_of=lambda _: 1, batch_events_max=TIER_BATCH_EVENTS_MAX, pages_max=pages_max,
    )


async def run_tier_scheduler(
    ledger: Ledger,
    pool: asyncpg.Pool,
    rules: Callable[[], RuleBook],
    stop: asyncio.Event,
    interval_s: float,
    members_max: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """A pass every `interval_s` until `stop` (see `run_passes`)."""
    await run_passes("tier reviews", lambda now: review_tiers(ledger, pool, rules, now, members_max), stop,
                     interval_s, clock)
