"""API keys: random, shown once, stored only as a hash, each with one role."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg


class Role(StrEnum):
    ingest = "ingest"  # booking systems: post booking events
    app = "app"  # mobile app backends: read members, redeem, hold points at checkout, transfer, households
    support = "support"  # support agents: read members, adjust, reverse redemptions
    auditor = "auditor"  # read everything, write nothing
    admin = "admin"  # everything


class Permission(StrEnum):
    read_members = "members:read"
    post_bookings = "bookings:write"
    redeem = "redemptions:write"
    adjust = "adjustments:write"
    audit = "audit:read"
    hold = "holds:write"  # place, capture and release holds
    transfer = "transfers:write"
    reverse = "reversals:write"
    manage_households = "households:write"
    reports = "reports:read"
    read_programme = "programme:read"  # rule versions and exchange rates
    publish_programme = "programme:write"
    read_catalogue = "catalogue:read"
    manage_catalogue = "catalogue:write"
    manage_members = "members:write"  # members' status and merges
    # Members (M1): personal data, kept apart from `members:read` so that auditors (who
    # read accounts) never see a profile in clear.
    enrol_members = "members:enrol"
    read_profiles = "profiles:read"
    write_profiles = "profiles:write"
    search_members = "members:search"  # by email
    export_members = "members:export"  # the access request: profile and every event
    erase_members = "members:erase"
    # What-if simulations of a draft rule set: asked for by admins only (each reads the
    # window's whole event log); their results (sums, nothing personal) read by auditors.
    simulate = "simulations:write"
    read_simulations = "simulations:read"


WHAT: dict[Permission, str] = {
    Permission.read_members: "read member accounts",
    Permission.post_bookings: "post booking events",
    Permission.redeem: "redeem points",
    Permission.adjust: "adjust points",
    Permission.audit: "read the audit trail",
    Permission.hold: "hold, capture or release points",
    Permission.transfer: "transfer points",
    Permission.reverse: "reverse a redemption",
    Permission.manage_households: "manage households",
    Permission.reports: "read the programme reports",
    Permission.read_programme: "read the programme's rules and exchange rates",
    Permission.publish_programme: "publish programme rules or exchange rates",
    Permission.read_catalogue: "read the reward catalogue",
    Permission.manage_catalogue: "define catalogue rewards",
    Permission.manage_members: "change a member's status or merge members",
    Permission.enrol_members: "enrol members",
    Permission.read_profiles: "read member profiles",
    Permission.write_profiles: "change member profiles",
    Permission.search_members: "find members by email",
    Permission.export_members: "export a member's personal data",
    Permission.erase_members: "erase a member's personal data",
    Permission.simulate: "run what-if simulations of a draft rule set",
    Permission.read_simulations: "read what-if simulations",
}

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ingest: frozenset({Permission.post_bookings, Permission.enrol_members}),
    Role.app: frozenset({Permission.read_members, Permission.redeem, Permission.hold, Permission.transfer,
                         Permission.manage_households, Permission.read_catalogue, Permission.read_profiles,
                         Permission.write_profiles}),
    Role.support: frozenset({Permission.read_members, Permission.adjust, Permission.reverse,
                             Permission.read_programme, Permission.read_catalogue, Permission.manage_members,
                             Permission.enrol_members, Permission.read_profiles, Permission.write_profiles,
                             Permission.search_members, Permission.export_members}),
    Role.auditor: frozenset({Permission.read_members, Permission.audit, Permission.reports,
                             Permission.read_programme, Permission.read_catalogue, Permission.read_simulations}),
    Role.admin: frozenset(Permission),
}

_PREFIX = "lk_"
NAME_CHARS_MAX = 64


class KeyNameError(ValueError):
    """A key name that cannot be used: empty, too long, not printable, or taken. The
    message is one line meant for the person who typed the name."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    replaced_by: str | None = None

    def can(self, permission: Permission) -> bool:
        return self.revoked_at is None and permission in GRANTS[self.role]


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 cannot be brute-forced;
    # a slow password hash would only cost latency on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(_PREFIX) or "." not in token or len(token) > 200:
        return None
    key_id, _, secret = token[len(_PREFIX):].partition(".")
    return (key_id, secret) if key_id and secret else None


def check_name(name: str) -> str:
    """The name as it will be stored, or KeyNameError: a name shows up in logs, in
    `ledger keys list` and as the actor of adjustments, so it must be visible text."""
    if not name or not name.strip():
        raise KeyNameError("a key name must not be empty")
    if len(name) > NAME_CHARS_MAX:
        raise KeyNameError(f"a key name has at most {NAME_CHARS_MAX} characters (this one has {len(name)})")
    if name != name.strip():
        raise KeyNameError("a key name must not start or end with white space")
    # Categories C* are control, format (zero-width, bidi overrides), surrogate,
    # private-use and unassigned characters; Z* other than a plain space are line and
    # paragraph separators and the look-alike spaces.
    bad = next((c for c in name if unicodedata.category(c)[0] == "C"
                or (unicodedata.category(c)[0] == "Z" and c != " ")), None)
    if bad is not None:
        raise KeyNameError(f"a key name must be printable text: it contains U+{ord(bad):04X}")
    return name


def _taken(name: str) -> KeyNameError:
    return KeyNameError(f"a key named {name!r} exists already (revoked keys keep their names);"
                        f" `ledger keys rotate {name}` issues a new key under that name")


async def create_key(pool: asyncpg.Pool, name: str, role: Role) -> tuple[ApiKey, str]:
    """Returns the key and its token; the token is not stored and cannot be shown again.
    Raises KeyNameError if the name is unusable or already taken."""
    check_name(name)
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    try:
        row = await pool.fetchrow(
            "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES ($1, $2, $3, $4) RETURNING *",
            key_id, name, role.value, _hash(secret),
        )
    except asyncpg.UniqueViolationError:
        raise _taken(name) from None
    return _key(row), f"{_PREFIX}{key_id}.{secret}"


async def rotate_key(pool: asyncpg.Pool, name: str) -> tuple[ApiKey, ApiKey, str]:
    """Issue a new key with the name and role of the current key called `name` (active
    or revoked) and revoke that one, in one transaction: there is never a moment with
    two live keys under one name, nor one with none. Returns (old, new, new token)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(
            "SELECT * FROM api_keys WHERE name = $1 AND replaced_by IS NULL FOR UPDATE", name)
        if old is None:
            raise KeyNameError(f"no key named {name!r}; `ledger keys create {name} --role ROLE` makes one")
        # The old key gives up the name before the new one takes it (the unique index
        # covers the keys not replaced); the reference to the new key is checked at commit.
        retired = await conn.fetchrow(
            "UPDATE api_keys SET replaced_by = $1, revoked_at = coalesce(revoked_at, now()) WHERE key_id = $2"
            " RETURNING *", key_id, old["key_id"])
        new = await conn.fetchrow(
            "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES ($1, $2, $3, $4) RETURNING *",
            key_id, name, old["role"], _hash(secret))
    return _key(retired), _key(new), f"{_PREFIX}{key_id}.{secret}"


async def list_keys(pool: asyncpg.Pool) -> list[ApiKey]:
    return [_key(r) for r in await pool.fetch("SELECT * FROM api_keys ORDER BY created_at, key_id")]


async def revoke_key(pool: asyncpg.Pool, name_or_id: str) -> bool:
    status = await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE (name = $1 OR key_id = $1) AND revoked_at IS NULL", name_or_id
    )
    return status != "UPDATE 0"


async def authenticate(pool: asyncpg.Pool, token: str) -> ApiKey | None:
    parts = _split(token)
    if parts is None:
        return None
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", parts[0])
    if row is None or not hmac.compare_digest(row["secret_hash"], _hash(parts[1])) or row["revoked_at"]:
        return None
    return _key(row)


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(row["key_id"], row["name"], Role(row["role"]), row["created_at"], row["revoked_at"],
                  row["replaced_by"])
