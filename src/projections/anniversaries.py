"""Anniversaries (P3): per member, since when it is active (its first booking earn or
activity), the next anniversary year not granted yet, and when that falls due: what the
anniversary scheduler (`ledger.anniversaries`) walks, through the index on `due_at`.

Years and dates are counted in UTC, as `ledger.domain.earn.anniversary_at` counts them
(PostgreSQL adds whole years to a UTC timestamp the way `add_months` does, a 29
February falling on the 28th)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from ledger.domain.earn import anniversary_at
from ledger.domain.events import ActivityPointsEarned, AnniversaryBonusGranted, PointsEarned
from ledger.store import StoredEvent

if TYPE_CHECKING:
    from .models import KnownRows

COLUMNS = ("member_id", "since", "next_year", "due_at")
_EVENTS = frozenset((PointsEarned, ActivityPointsEarned, AnniversaryBonusGranted))


class Anniversaries:
    def __init__(self, table: str = "member_anniversaries") -> None:
        self.table = table
        self.rows: dict[str, list] = {}  # member -> [since or None, next year]

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        if type(e) not in _EVENTS:
            return
        row = self.rows.get(stored.stream_id)
        if row is None:
            row = self.rows[stored.stream_id] = [None, 1]
        if isinstance(e, AnniversaryBonusGranted):
            since, row[1] = e.since, max(row[1], e.year + 1)
        else:
            since = e.occurred_at
        if row[0] is None or since < row[0]:
            row[0] = since

    def completed(self, keep: str | None = None) -> list[tuple]:
        out, kept = [], {}
        for member, (since, year) in self.rows.items():
            if member == keep:
                kept[member] = [since, year]
            else:
                out.append((member, since, year, _due(since, year)))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None:
        """Upsert the page's rows; with `known` (the live runner's), only those that
        change a row: once written, the stored start is at most and the year at least
        what was written, which `known` keeps."""
        rows = self.rows
        if known is not None:
            bounds = known.table(self.table)
            rows = {}
            for m, (since, year) in self.rows.items():
                bound = bounds.get(m)
                if bound is None:
                    bounds[m] = (since, year)
                elif bound[0] <= since and bound[1] >= year:
                    bounds.move_to_end(m)
                    continue
                else:
                    bounds[m] = (min(bound[0], since), max(bound[1], year))
                    bounds.move_to_end(m)
                rows[m] = (since, year)
        self.rows = {}
        if not rows:
            return
        members, since, years = zip(*((m, s, y) for m, (s, y) in rows.items()), strict=True)
        await conn.execute(
            f"INSERT INTO {self.table} AS a (member_id, since, next_year, due_at)"
            " SELECT m, s, y, (s AT TIME ZONE 'UTC' + make_interval(years => y)) AT TIME ZONE 'UTC'"
            " FROM unnest($1::text[], $2::timestamptz[], $3::int[]) AS u(m, s, y)"
            " ON CONFLICT (member_id) DO UPDATE SET since = least(a.since, EXCLUDED.since),"
            " next_year = greatest(a.next_year, EXCLUDED.next_year),"
            " due_at = (least(a.since, EXCLUDED.since) AT TIME ZONE 'UTC'"
            " + make_interval(years => greatest(a.next_year, EXCLUDED.next_year))) AT TIME ZONE 'UTC'",
            members, since, years)


def _due(since: datetime, year: int) -> datetime:
    return anniversary_at(since, year)
