"""Members (M1): the profiles' read model, a row per member with a profile: its fields
as sealed values (never in clear: the runner has no keys), its marketing consent, when
it enrolled, and when it was erased (its fields dropped: they could not be opened
anyway, the key being destroyed)."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from ledger.domain import PROFILE_FIELDS, REMOVED, MemberEnrolled, MemberErased, MemberProfileChanged
from ledger.store import StoredEvent

COLUMNS = ("member_id", "fields", "marketing_consent", "enrolled_at", "updated_at", "erased_at", "position")


class _Delta:
    """One member's changes in a page. `fields` maps a field to its sealed value, or to
    None when the page removed it; `erased_at` set: the row's fields are replaced by
    `fields` (what came after the erasure, if anything), not merged with them."""

    __slots__ = ("fields", "marketing", "enrolled_at", "updated_at", "erased_at", "position")

    def __init__(self, at: datetime, position: int) -> None:
        self.fields: dict[str, str | None] = {}
        self.marketing: bool | None = None
        self.enrolled_at: datetime | None = None
        self.updated_at = at
        self.erased_at: datetime | None = None
        self.position = position

    def row(self, member_id: str) -> tuple:
        return (member_id, json.dumps(self.fields), self.marketing, self.enrolled_at, self.updated_at,
                self.erased_at, self.position)


class MemberProfiles:
    def __init__(self, table: str = "member_profiles") -> None:
        self.table = table
        self.rows: dict[str, _Delta] = {}

    def apply(self, stored: StoredEvent) -> None:
        e = stored.event
        if type(e) not in _MEMBER_EVENTS:
            return
        delta = self.rows.get(stored.stream_id)
        if delta is None:
            delta = self.rows[stored.stream_id] = _Delta(e.occurred_at, stored.position)
        delta.updated_at, delta.position = max(delta.updated_at, e.occurred_at), stored.position
        match e:
            case MemberEnrolled():
                delta.enrolled_at = delta.enrolled_at or e.occurred_at
                delta.marketing = e.marketing_consent
                self._fields(delta, e)
            case MemberProfileChanged():
                if e.marketing_consent is not None:
                    delta.marketing = e.marketing_consent
                self._fields(delta, e)
            case MemberErased():
                delta.fields = {}
                delta.erased_at = delta.erased_at or e.occurred_at

    @staticmethod
    def _fields(delta: _Delta, e: MemberEnrolled | MemberProfileChanged) -> None:
        for name in PROFILE_FIELDS:
            value = getattr(e, name)
            if value is not None:
                delta.fields[name] = None if value == REMOVED else value

    def completed(self, keep: str | None = None) -> list[tuple]:
        """The final rows (in `COLUMNS` order) of the members whose every event has been
        applied, for a replay in stream order: all but `keep` (see `Balances.completed`)."""
        out, kept = [], {}
        for member_id, delta in self.rows.items():
            if member_id == keep:
                kept[member_id] = delta
                continue
            fields = {k: v for k, v in delta.fields.items() if v is not None}
            out.append((member_id, json.dumps(fields), bool(delta.marketing), delta.enrolled_at, delta.updated_at,
                        delta.erased_at, delta.position))
        self.rows = kept
        return out

    async def write(self, conn: asyncpg.Connection) -> None:
        if not self.rows:
            return
        columns = list(zip(*(d.row(m) for m, d in self.rows.items()), strict=True))
        unnest = ("unnest($1::text[], $2::jsonb[], $3::boolean[], $4::timestamptz[], $5::timestamptz[],"
                  " $6::timestamptz[], $7::bigint[]) AS u(member_id, fields, marketing, enrolled_at, updated_at,"
                  " erased_at, position)")
        # The rows there first, merged (a removed field is a JSON null, stripped), then the
        # new ones: the runner's advisory lock keeps any other writer out in between.
        await conn.execute(
            f"UPDATE {self.table} p SET"
            " fields = jsonb_strip_nulls(CASE WHEN u.erased_at IS NULL THEN p.fields || u.fields ELSE u.fields END),"
            " marketing_consent = coalesce(u.marketing, p.marketing_consent),"
            " enrolled_at = coalesce(p.enrolled_at, u.enrolled_at), updated_at = greatest(p.updated_at, u.updated_at),"
            " erased_at = coalesce(p.erased_at, u.erased_at), position = u.position"
            f" FROM {unnest} WHERE p.member_id = u.member_id",
            *columns,
        )
        await conn.execute(
            f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) SELECT u.member_id, jsonb_strip_nulls(u.fields),"
            " coalesce(u.marketing, false), u.enrolled_at, u.updated_at, u.erased_at, u.position"
            f" FROM {unnest} ON CONFLICT (member_id) DO NOTHING",
            *columns,
        )
        self.rows = {}


_MEMBER_EVENTS = frozenset({MemberEnrolled, MemberProfileChanged, MemberErased})
