"""Published rule set versions and exchange-rate sets in PostgreSQL: insert and select
only (a trigger refuses any change, see migration 0012).

A version or a rate set may only take effect after its publication, never in
the past: the book's answer for an instant already past then never changes, which is
what makes the rule for late and back-dated events hold (see `ledger.domain.rulebook`).
The only exception is the first version, which the first process to start publishes
from the epoch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ledger.domain import EPOCH, FxRates, ProgramRules, RuleBook, RuleVersion

# Serialises the first start's publication of the default version and rate set, so two
# processes starting at once publish them once (taken only while the tables are empty).
FIRST_PUBLICATION_LOCK = 0x5EED_0012
VERSIONS_MAX = 10_000  # the book holds every version: a bound on what a process loads
FX_SETS_MAX = 100_000


class PublishRefused(Exception):
    """What was published conflicts with what exists (`field` names why); nothing was written."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Published:
    id: int
    version: str
    effective_from: datetime
    published_at: datetime
    published_by: str


@dataclass(frozen=True)
class PublishedRates:
    id: int
    effective_from: datetime
    base: str
    rates: dict[str, str]
    published_at: datetime
    published_by: str


def _json(conn_value: Any) -> Any:
    return orjson.loads(conn_value) if isinstance(conn_value, (str, bytes)) else conn_value


class ProgrammeStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def marker(self) -> tuple[int, int]:
        """The newest publication of each table: two index reads, polled by every process."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT (SELECT coalesce(max(id), 0) FROM programme_rules),"
                                      " (SELECT coalesce(max(id), 0) FROM fx_rate_sets)")
        return int(row[0]), int(row[1])

    async def ensure_first(self, document: dict[str, Any], rates: dict[str, str], base: str,
                           by: str = "system") -> None:
        """Publish `document` as the first version and `rates` as the first rate set, both
        from the epoch, unless something is published already; idempotent, and safe for
        processes starting at once (an advisory lock, checked again under it)."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval("SELECT exists(SELECT 1 FROM programme_rules)"
                                   " AND exists(SELECT 1 FROM fx_rate_sets)"):
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", FIRST_PUBLICATION_LOCK)
                if not await conn.fetchval("SELECT exists(SELECT 1 FROM programme_rules)"):
                    await conn.execute(
                        "INSERT INTO programme_rules (version, effective_from, rules, published_by)"
                        " VALUES ($1, $2, $3::jsonb, $4)",
                        document["version"], EPOCH, orjson.dumps(document).decode(), by)
                if not await conn.fetchval("SELECT exists(SELECT 1 FROM fx_rate_sets)"):
                    await conn.execute(
                        "INSERT INTO fx_rate_sets (effective_from, base, rates, published_by)"
                        " VALUES ($1, $2, $3::jsonb, $4)", EPOCH, base, orjson.dumps(rates).decode(), by)

    async def publish_rules(self, document: dict[str, Any], effective_from: datetime, by: str,
                            now: datetime) -> Published:
        """Insert a version; PublishRefused for a version name or start taken, or a start
        before `now` (the publishing process's clock)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if effective_from <= now:
                raise PublishRefused("A version cannot take effect in the past: effective_from must be later than now.",
                                     "effective_from")
            try:
                row = await conn.fetchrow(
                    "INSERT INTO programme_rules (version, effective_from, rules, published_by)"
                    " VALUES ($1, $2, $3::jsonb, $4) RETURNING id, version, effective_from, published_at, published_by",
                    document["version"], effective_from, orjson.dumps(document).decode(), by)
            except asyncpg.UniqueViolationError as exc:
                if "version" in (exc.constraint_name or ""):
                    raise PublishRefused(f"Version {document['version']!r} is published already.", "version") from None
                raise PublishRefused("A version takes effect from that instant already.", "effective_from") from None
        return Published(*row)

    async def publish_rates(self, rates: dict[str, str], base: str, effective_from: datetime,
                            by: str, now: datetime) -> PublishedRates:
        async with self.pool.acquire() as conn, conn.transaction():
            if effective_from <= now:
                raise PublishRefused("Rates cannot take effect in the past: effective_from must be later than now.",
                                     "effective_from")
            try:
                row = await conn.fetchrow(
                    "INSERT INTO fx_rate_sets (effective_from, base, rates, published_by) VALUES ($1, $2, $3::jsonb, $4)"
                    " RETURNING id, effective_from, base, rates, published_at, published_by",
                    effective_from, base, orjson.dumps(rates).decode(), by)
            except asyncpg.UniqueViolationError:
                raise PublishRefused("A rate set takes effect from that instant already.", "effective_from") from None
        return _rates_row(row)

    async def book(self) -> RuleBook:
        """Every version and rate set, as one book."""
        async with self.pool.acquire() as conn:
            versions = await conn.fetch(
                "SELECT rules, effective_from, published_at, published_by FROM programme_rules ORDER BY id LIMIT $1",
                VERSIONS_MAX)
            rates = await conn.fetch(
                "SELECT effective_from, base, rates FROM fx_rate_sets ORDER BY id LIMIT $1", FX_SETS_MAX)
        assert versions, "the first version is published at start-up (ensure_first)"
        return RuleBook(
            [RuleVersion(ProgramRules.from_dict(doc := _json(r[0])), r[1], r[2], r[3], doc) for r in versions],
            [FxRates(r[0], r[1], {c: Decimal(v) for c, v in _json(r[2]).items()}) for r in rates],
        )

    async def versions(self, limit: int, before_id: int | None) -> list[Published]:
        """Newest first, `limit` of them, published before `before_id` (a page's cursor)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, version, effective_from, published_at, published_by FROM programme_rules"
                " WHERE id < $1 ORDER BY id DESC LIMIT $2", before_id or 2**62, limit)
        return [Published(*r) for r in rows]

    async def rates_at(self, at: datetime) -> PublishedRates | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT id, effective_from, base, rates, published_at, published_by FROM fx_rate_sets"
                " WHERE effective_from <= $1 ORDER BY effective_from DESC LIMIT 1", at)
        return _rates_row(row) if row else None


def _rates_row(row: asyncpg.Record) -> PublishedRates:
    return PublishedRates(row[0], row[1], row[2], _json(row[3]), row[4], row[5])
