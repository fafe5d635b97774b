"""Reads of the reports' read models (`projections.reports`): one function per report,
each in one read-only snapshot that also gives the position the answer stands at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from .reports import micros

ACTIVITY_ROWS_MAX = 200_000  # a year of days at about 550 keys a day; a report past it is refused

_CHECKPOINT = "SELECT position FROM projection_checkpoints WHERE name = 'reports'"

# The days before the as-of day, summed by day, and the moments of that day up to the
# instant ($2, microseconds since the epoch): a range of the days' primary key and the
# day's rows of moments, their entries summed here.
_LIABILITY = (
    "SELECT status, expiry_month, tier, sum(points)::bigint FROM ("
    " SELECT status, expiry_month, tier, points FROM liability_days WHERE day < $1"
    " UNION ALL"
    " SELECT u.status, u.expiry_month, u.tier, u.points FROM liability_moments m,"
    " unnest(m.at, m.status, m.expiry_month, m.tier, m.points) AS u(at, status, expiry_month, tier, points)"
    " WHERE m.day = $1 AND u.at <= $2"
    ") d GROUP BY 1, 2, 3 HAVING sum(points) <> 0 ORDER BY 1, 2, 3"
)
_ACTIVITY_DAYS = (
    "SELECT to_char(day, 'YYYY-MM-DD'), kind, product, source, points FROM activity_days"
    " WHERE day >= $1 AND day < $2 ORDER BY day, kind, product, source LIMIT $3"
)
_ACTIVITY_MONTHS = (
    "SELECT to_char(day, 'YYYY-MM') AS period, kind, product, source, sum(points)::bigint FROM activity_days"
    " WHERE day >= $1 AND day < $2 GROUP BY 1, 2, 3, 4 HAVING sum(points) <> 0 ORDER BY 1, 2, 3, 4 LIMIT $3"
)


@dataclass(frozen=True, slots=True)
class LiabilityRows:
    position: int
    rows: list[tuple[str, str, str, int]]  # (status, expiry month or "", tier, points), none of them 0


@dataclass(frozen=True, slots=True)
class ActivityRows:
    position: int
    rows: list[tuple[str, str, str, str, int]]  # (period, kind, product or "", source, points)
    truncated: bool  # more than `ACTIVITY_ROWS_MAX` rows


async def liability(pool: asyncpg.Pool, as_of: datetime) -> LiabilityRows:
    """Outstanding points as of `as_of`, by status, expiry month and tier."""
    at = as_of.astimezone(UTC)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = int(await conn.fetchval(_CHECKPOINT))
        rows = await conn.fetch(_LIABILITY, at.date(), micros(at))
    return LiabilityRows(position, [(r[0], r[1], r[2], int(r[3])) for r in rows])


def whole_days(start: datetime, end: datetime) -> tuple[date, date]:
    """The UTC days whose midnight is in [start, end): (first, end exclusive)."""

    def first_midnight_from(moment: datetime) -> date:
        moment = moment.astimezone(UTC)
        day = moment.date()
        return day if moment == datetime.combine(day, time(), UTC) else day + timedelta(days=1)

    return first_midnight_from(start), first_midnight_from(end)


async def activity(pool: asyncpg.Pool, first: date, end: date, *, monthly: bool) -> ActivityRows:
    """Points moved on the days from `first` to `end` (exclusive), by day or by calendar
    month, kind, product and source."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = int(await conn.fetchval(_CHECKPOINT))
        rows = await conn.fetch(_ACTIVITY_MONTHS if monthly else _ACTIVITY_DAYS, first, end, ACTIVITY_ROWS_MAX + 1)
    return ActivityRows(position, [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows[:ACTIVITY_ROWS_MAX]],
                        len(rows) > ACTIVITY_ROWS_MAX)
