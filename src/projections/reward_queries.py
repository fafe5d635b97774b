"""Reads of the reward catalogue's read model (`rewards`)."""

from __future__ import annotations

import json

import asyncpg

from ledger.domain import RewardState

REWARDS_PAGE_MAX = 100


async def rewards_page(pool: asyncpg.Pool, after: str, limit: int) -> tuple[list[RewardState], bool]:
    """Up to `limit` rewards after `after`, by id, and whether more follow."""
    assert 1 <= limit <= REWARDS_PAGE_MAX
    rows = await pool.fetch(
        "SELECT reward_id, kind, name_en, name_zh_cn, points_by_tier, stock, available_from, available_to,"
        " miles_ratio, partner, taken FROM rewards WHERE reward_id > $1 ORDER BY reward_id LIMIT $2",
        after, limit + 1)
    rewards = [
        RewardState(r["reward_id"], r["kind"], r["name_en"], r["name_zh_cn"],
                    tuple((tier, points) for tier, points in json.loads(r["points_by_tier"])), r["stock"],
                    r["available_from"], r["available_to"], r["miles_ratio"], r["partner"], r["taken"])
        for r in rows[:limit]
    ]
    return rewards, len(rows) > limit
