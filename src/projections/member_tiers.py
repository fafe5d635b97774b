"""P4, tier policies: the tier in force of each member with a tier change, from its
`TierChanged` events: what the tier scheduler (`ledger.tier_review`) walks, and what a
support agent reads without folding a stream. A member with no change has no row (its
tier is what it qualifies for: `tier_status`).

The change dated latest wins, as in the member's state (`MemberState.tiers`), so a
back-dated upgrade that arrives after a later change does not replace it; the live
runner and a rebuild, which see the same events, arrive at the same row."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger.domain import TierChanged
from ledger.store import StoredEvent

COLUMNS = ("member_id", "tier", "since", "direction", "rules_version")


class MemberTiers:
    def __init__(self, table: str = "member_tiers") -> None:
        self.table = table
        self.rows: dict[str, tuple[str, datetime, str, str]] = {}  # member -> (tier, since, direction, version)

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        if type(e) is not TierChanged:
            return
        row = self.rows.get(stored.stream_id)
        if row is None or row[1] <= e.occurred_at:
            self.rows[stored.stream_id] = (e.to_tier, e.occurred_at, e.direction, e.rules_version)

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows of all members but `keep` (see `Balances.completed`), in `COLUMNS` order."""
        out = [(m, *row) for m, row in self.rows.items() if m != keep]
        self.rows = {keep: self.rows[keep]} if keep in self.rows else {}
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        if not self.rows:
            return
        await conn.execute(
            f"INSERT INTO {self.table} AS t (member_id, tier, since, direction, rules_version)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])"
            " ON CONFLICT (member_id) DO UPDATE SET tier = EXCLUDED.tier, since = EXCLUDED.since,"
            " direction = EXCLUDED.direction, rules_version = EXCLUDED.rules_version WHERE t.since <= EXCLUDED.since",
            *zip(*((m, *row) for m, row in self.rows.items()), strict=True),
        )
        self.rows.clear()
