"""Household rosters: the members of each household pool, from the household streams."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger.domain import HouseholdCreated, HouseholdMemberAdded, HouseholdMemberRemoved, household_stream_id
from ledger.store import StoredEvent

COLUMNS = ("household_id", "member_id", "role", "joined_at")


class HouseholdMembers:
    """The roster changes of one page: a row to put, or None to delete."""

    def __init__(self, table: str = "household_members") -> None:
        self.table = table
        # (household, member) -> (role, joined at), or None: no longer a member
        self.rows: dict[tuple[str, str], tuple[str, datetime] | None] = {}

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        match e:
            case HouseholdCreated():
                self.rows[(e.household_id, e.head_member_id)] = ("head", e.occurred_at)
            case HouseholdMemberAdded():
                self.rows[(e.household_id, e.member_id)] = ("member", e.occurred_at)
            case HouseholdMemberRemoved():
                self.rows[(e.household_id, e.member_id)] = None

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The rows (in `COLUMNS` order) of the households whose every event has been
        applied: all but the stream `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for key, row in self.rows.items():
            if keep is not None and household_stream_id(key[0]) == keep:
                kept[key] = row
            elif row is not None:
                out.append((key[0], key[1], row[0], row[1]))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        if not self.rows:
            return
        put = [(h, m, *row) for (h, m), row in self.rows.items() if row is not None]
        gone = [(h, m) for (h, m), row in self.rows.items() if row is None]
        if gone:
            households, members = zip(*gone, strict=True)
            await conn.execute(
                f"DELETE FROM {self.table} WHERE (household_id, member_id) IN"
                " (SELECT * FROM unnest($1::text[], $2::text[]))", households, members)
        if put:
            households, members, roles, joined = zip(*put, strict=True)
            await conn.execute(
                f"INSERT INTO {self.table} (household_id, member_id, role, joined_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])"
                " ON CONFLICT (household_id, member_id) DO UPDATE SET role = EXCLUDED.role,"
                " joined_at = EXCLUDED.joined_at", households, members, roles, joined)
        self.rows.clear()
