"""The reward catalogue: a row per catalogue reward, from the reward streams
(`reward/<id>`): its definition now and the units of its stock taken."""

from __future__ import annotations

import json

import asyncpg

from ledger.domain import RewardDefined, RewardStockReturned, RewardStockTaken, reward_stream_id
from ledger.store import StoredEvent

COLUMNS = ("reward_id", "kind", "name_en", "name_zh_cn", "points_by_tier", "stock", "taken", "available_from",
           "available_to", "miles_ratio", "partner", "updated_at")


class RewardCatalogue:
    """The catalogue's changes of one page: per reward, its definition if the page
    (re)defined it, and how many units the page took (+) or gave back (-)."""

    def __init__(self, table: str = "rewards") -> None:
        self.table = table
        # reward id -> [definition row without `taken` (None: not defined in this page), taken change, updated at]
        self.rows: dict[str, list] = {}

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        match e:
            case RewardDefined():
                row = self._row(e.reward_id, e)
                row[0] = (e.reward_id, e.kind, e.name_en, e.name_zh_cn,
                          json.dumps([[tier, points] for tier, points in e.points_by_tier]), e.stock)
                row[3] = (e.available_from, e.available_to, e.miles_ratio, e.partner)
            case RewardStockTaken():
                self._row(e.reward_id, e)[1] += 1
            case RewardStockReturned():
                self._row(e.reward_id, e)[1] -= 1

    def _row(self, reward_id: str, e: RewardDefined | RewardStockTaken | RewardStockReturned) -> list:
        row = self.rows.get(reward_id)
        if row is None:
            row = self.rows[reward_id] = [None, 0, e.occurred_at, None]
        row[2] = max(row[2], e.occurred_at)
        return row

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows (in `COLUMNS` order) of the rewards whose every event has been
        applied: all but the stream `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for reward_id, row in self.rows.items():
            if keep is not None and reward_stream_id(reward_id) == keep:
                kept[reward_id] = row
            else:
                assert row[0] is not None, "a replay sees every reward's definition first"
                out.append((*row[0], row[1], *row[3], row[2]))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        defined = [(*row[0], row[1], *row[3], row[2]) for row in self.rows.values() if row[0] is not None]
        moved = [(reward_id, row[1], row[2]) for reward_id, row in self.rows.items() if row[0] is None]
        if defined:
            await conn.execute(
                f"INSERT INTO {self.table} ({', '.join(COLUMNS)})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bigint[],"
                " $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::timestamptz[])"
                " ON CONFLICT (reward_id) DO UPDATE SET kind = EXCLUDED.kind, name_en = EXCLUDED.name_en,"
                f" name_zh_cn = EXCLUDED.name_zh_cn, points_by_tier = EXCLUDED.points_by_tier, stock = EXCLUDED.stock,"
                f" taken = {self.table}.taken + EXCLUDED.taken, available_from = EXCLUDED.available_from,"
                " available_to = EXCLUDED.available_to, miles_ratio = EXCLUDED.miles_ratio,"
                " partner = EXCLUDED.partner, updated_at = EXCLUDED.updated_at",
                *zip(*defined, strict=True),
            )
        if moved:
            await conn.execute(
                f"UPDATE {self.table} r SET taken = r.taken + u.taken, updated_at = greatest(r.updated_at, u.at)"
                " FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS u(reward_id, taken, at)"
                " WHERE r.reward_id = u.reward_id",
                *zip(*moved, strict=True),
            )
        self.rows.clear()
