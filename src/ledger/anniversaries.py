"""The anniversary scheduler (P3): grants each member's anniversary bonus once per year
since its first activity, under the rules in force at the anniversary instant.

A pass walks the members whose next anniversary is due in the `member_anniversaries`
read model (by its index on `due_at`), a page at a time, loads their states, and hands
the ledger one `GrantAnniversary` per year due and not granted yet, dated at the
anniversary instant, so that the version in force then decides its points.

Once per anniversary, under restarts and concurrent runners (two processes, or a pass
while the projection is behind): each command carries the idempotency key
`anniversary:<member>:<year>`, whose unique index lets one append win; and the decider
grants a year only if the member's state does not hold it already (a second runner's
command, decided again on the fresh state, appends nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from ledger.domain.earn import GrantAnniversary, anniversary_at
from ledger.domain.earn_rules import ANNIVERSARY_YEARS_MAX
from ledger.expiry import run_passes
from ledger.handlers import Applied, CommandRequest, Ledger

ANNIVERSARY_PAGES_MAX = 100_000  # pages of due members one pass walks at most
BATCH_COMMANDS_MAX = 1_000  # commands one append of a pass holds at most
SOURCE = "anniversary-scheduler"


async def due_members(pool: asyncpg.Pool, now: datetime, after: str, limit: int) -> list[str]:
    """The first `limit` members after `after` (by id) whose next anniversary is due at `now`."""
    rows = await pool.fetch(
        "SELECT member_id FROM member_anniversaries WHERE due_at <= $1 AND member_id > $2 ORDER BY member_id LIMIT $3",
        now, after, limit)
    return [r[0] for r in rows]


def grant_request(member_id: str, since: datetime, year: int) -> CommandRequest:
    at = anniversary_at(since, year)
    return CommandRequest(
        GrantAnniversary(member_id, at, year), f"anniversary:{member_id}:{year}",
        hashlib.sha256(f"{member_id}|{year}|{at.isoformat()}".encode()).hexdigest(), {"source": SOURCE})


async def grant_due(ledger: Ledger, pool: asyncpg.Pool, now: datetime, members_max: int = 500, *,
                    pages_max: int = ANNIVERSARY_PAGES_MAX) -> int:
    """One pass: every anniversary due at `now` and not granted yet; returns how many
    events it appended."""
    appended = 0
    after = ""
    for _ in range(pages_max):
        due = await due_members(pool, now, after, members_max)
        if not due:
            break
        after = due[-1]
        batch: list[CommandRequest] = []
        for member_id, (state, _) in (await ledger.load(due)).items():
            since = state.earn.since
            if since is None:
                continue
            for year in range(1, ANNIVERSARY_YEARS_MAX + 1):
                if anniversary_at(since, year) > now:
                    break
                if year not in state.earn.anniversaries:
                    batch.append(grant_request(member_id, since, year))
        for start in range(0, len(batch), BATCH_COMMANDS_MAX):
            outcomes = await ledger.handle_batch(batch[start:start + BATCH_COMMANDS_MAX])
            appended += sum(len(o.events) for o in outcomes if isinstance(o, Applied))
    return appended


async def run_anniversary_scheduler(
    ledger: Ledger, pool: asyncpg.Pool, stop: asyncio.Event, interval_s: float, members_max: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """A pass every `interval_s` until `stop` (see `run_passes`)."""
    await run_passes("anniversary bonuses", lambda now: grant_due(ledger, pool, now, members_max), stop,
                     interval_s, clock)
