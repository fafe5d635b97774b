"""Members (M1): the data keys, the email index and the profiles' sealed fields.

`MemberVault` is what the entry points use to turn a profile into sealed values before
a command is built (`seal`), to open a profile read from the read model (`open`), to
keep the email index (`index_email`, `find_by_email`) and to erase a member (`erase`:
destroy their data key and their index rows). The domain and the events never see a
profile field in clear; nor do the logs: nothing here logs a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ledger.crypto import CryptoError, DataKey, MasterKey
from ledger.domain import PROFILE_FIELDS, REMOVED, InvalidCommand, ProfileErased, normalise_email

EMAIL_MATCHES_MAX = 20  # members one email finds at most (duplicate accounts share one)


class ProfileUnreadable(InvalidCommand):
    """A sealed field that does not open under the member's live key: altered storage,
    or a master key other than the one the key was wrapped with (409)."""

    title = "Profile unreadable"


@dataclass(frozen=True, slots=True)
class StoredProfile:
    member_id: str
    fields: dict[str, str]  # field -> sealed value
    marketing_consent: bool
    enrolled_at: datetime | None
    updated_at: datetime
    erased_at: datetime | None
    position: int


class MemberVault:
    def __init__(self, pool: asyncpg.Pool, master: MasterKey) -> None:
        self.pool = pool
        self.master = master

    async def _key_row(self, conn: asyncpg.Connection | asyncpg.Pool, member_id: str) -> asyncpg.Record | None:
        return await conn.fetchrow("SELECT wrapped_key, destroyed_at FROM member_keys WHERE member_id = $1", member_id)

    async def data_key(self, member_id: str, *, create: bool) -> DataKey | None:
        """The member's data key: made (and stored wrapped) when it has none and `create`;
        None when it has none and not `create`. ProfileErased when it was destroyed."""
        row = await self._key_row(self.pool, member_id)
        if row is None and create:
            key, wrapped = self.master.new_data_key(member_id)
            # Two first writes of one member race here: the one that inserts wins, and the
            # other reads back the key it made.
            inserted = await self.pool.fetchval(
                "INSERT INTO member_keys (member_id, wrapped_key) VALUES ($1, $2)"
                " ON CONFLICT (member_id) DO NOTHING RETURNING true", member_id, wrapped)
            if inserted:
                return key
            row = await self._key_row(self.pool, member_id)
        if row is None:
            return None
        if row["wrapped_key"] is None:
            raise ProfileErased(member_id)
        try:
            return self.master.unwrap(member_id, bytes(row["wrapped_key"]))
        except CryptoError:
            raise ProfileUnreadable(f"The data key of member {member_id!r} does not open with the master key.",
                                    member_id=member_id) from None

    async def erased_at(self, member_id: str) -> datetime | None:
        return await self.pool.fetchval("SELECT destroyed_at FROM member_keys WHERE member_id = $1", member_id)

    async def has_key(self, member_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT true FROM member_keys WHERE member_id = $1", member_id))

    async def seal(self, member_id: str, fields: Mapping[str, str | None]) -> tuple[tuple[str, str], ...]:
        """Each field sealed with the member's data key (made on first use); a None value
        (a field a patch removes) becomes REMOVED. In PROFILE_FIELDS order."""
        assert set(fields) <= set(PROFILE_FIELDS)
        if not fields:
            return ()
        key = await self.data_key(member_id, create=True)
        assert key is not None
        return tuple((name, REMOVED if fields[name] is None else key.seal(name, fields[name]))  # type: ignore[arg-type]
                     for name in PROFILE_FIELDS if name in fields)

    async def profile(self, member_id: str) -> StoredProfile | None:
        row = await self.pool.fetchrow("SELECT * FROM member_profiles WHERE member_id = $1", member_id)
        if row is None:
            return None
        return StoredProfile(row["member_id"], json.loads(row["fields"]), row["marketing_consent"],
                             row["enrolled_at"], row["updated_at"], row["erased_at"], row["position"])

    async def open(self, stored: StoredProfile) -> dict[str, str]:
        """The profile's fields in clear. ProfileErased when the key was destroyed."""
        if not stored.fields:
            await self.data_key(stored.member_id, create=False)  # ProfileErased, if it was
            return {}
        key = await self.data_key(stored.member_id, create=False)
        if key is None:
            raise ProfileUnreadable(f"Member {stored.member_id!r} has sealed fields but no data key.",
                                    member_id=stored.member_id)
        try:
            return {name: key.open(name, sealed) for name, sealed in stored.fields.items()}
        except CryptoError:
            raise ProfileUnreadable(f"A profile field of member {stored.member_id!r} does not open.",
                                    member_id=stored.member_id) from None

    async def index_email(self, member_id: str, email: str | None) -> None:
        """Point the index at the member's email now (None: it has none)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # The key's row locked against an erasure in between: an erased member's email
            # is never indexed again, whichever of the two commits first.
            live = await conn.fetchval(
                "SELECT wrapped_key IS NOT NULL FROM member_keys WHERE member_id = $1 FOR SHARE", member_id)
            await conn.execute("DELETE FROM member_email_index WHERE member_id = $1", member_id)
            if email is not None and live:
                await conn.execute(
                    "INSERT INTO member_email_index (email_hash, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    self.master.email_hash(normalise_email(email)), member_id)

    async def find_by_email(self, email: str) -> list[str]:
        """The members whose profile's email is `email` (normalised), through the index (a
        primary-key lookup of the keyed hash, never a scan). Each candidate's email is
        opened and compared, so that an index row left behind by a write that failed
        half-way finds nobody."""
        wanted = normalise_email(email)
        candidates = await self.pool.fetch(
            "SELECT member_id FROM member_email_index WHERE email_hash = $1 ORDER BY member_id LIMIT $2",
            self.master.email_hash(wanted), EMAIL_MATCHES_MAX)
        found = []
        for row in candidates:
            stored = await self.profile(row["member_id"])
            if stored is None or "email" not in stored.fields:
                continue
            try:
                fields = await self.open(stored)
            except (ProfileErased, ProfileUnreadable):
                continue
            if normalise_email(fields["email"]) == wanted:
                found.append(row["member_id"])
        return found

    async def erase(self, member_id: str) -> datetime:
        """Destroy the member's data key (a tombstone row when it had none, so that none is
        made later) and its email index rows, in one transaction; idempotent. Returns
        when the key was destroyed (the first erasure's time)."""
        async with self.pool.acquire() as conn, conn.transaction():
            destroyed_at = await conn.fetchval(
                "INSERT INTO member_keys (member_id, wrapped_key, destroyed_at) VALUES ($1, NULL, now())"
                " ON CONFLICT (member_id) DO UPDATE SET wrapped_key = NULL,"
                " destroyed_at = coalesce(member_keys.destroyed_at, now()) RETURNING destroyed_at", member_id)
            await conn.execute("DELETE FROM member_email_index WHERE member_id = $1", member_id)
        return destroyed_at  # type: ignore[no-any-return]


def profile_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """Every profile field, None where the member has none."""
    return {name: fields.get(name) for name in PROFILE_FIELDS}
