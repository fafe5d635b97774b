"""Connections and migrations."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import asyncpg

_REPO_MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"
_PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[1] / "_migrations"


# The database, or the connection to it, is away or failing: not the request's fault nor
# (as far as anyone can tell) the code's. A 503 with Retry-After for a client, a retry
# for a background task. TimeoutError (a pool acquire that timed out) is an OSError;
# asyncpg raises InterfaceError ("connection is closed") from a transaction's exit
# when the connection died inside it, hiding ConnectionDoesNotExistError or
# InternalClientError. Classes: 08 connection exception, 57 operator intervention
# (admin or crash shutdown, cannot connect now), 53 insufficient resources (too many
# connections, disk full), 58 system error, XX internal error.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresSystemError,
    asyncpg.InternalServerError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# What a background loop retries quietly: the above, and any other error the server
# sends (a statement that a concurrent rebuild invalidated, a serialization failure).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


class StartupError(Exception):
    """The database could not be started, reached or migrated when a process started: a
    condition for the operator to fix (a port in use, a wrong URL or password, a data
    directory that cannot be made), said in a few lines, not a traceback."""


def migrations_dir() -> Path:
    """The repository's migrations in a checkout, the packaged copy in a wheel."""
    return _REPO_MIGRATIONS if (_REPO_MIGRATIONS / "env.py").exists() else _PACKAGED_MIGRATIONS


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("postgresql://", "postgresql+asyncpg://", 1))
    return config


async def migrate(url: str) -> None:
    """Bring the schema to the latest revision (Alembic runs its own event loop, so
    it gets a thread)."""
    from alembic import command

    await asyncio.to_thread(command.upgrade, _alembic_config(url), "head")


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migration scripts' heads: parsed once, since the scripts do not change while
    the process runs (parsing them took about 4 ms of CPU per /readyz)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_alembic_config("postgresql://x")).get_heads())


async def schema_is_current(conn: asyncpg.Connection) -> bool:
    heads = head_revisions()
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return False
    return {r["version_num"] for r in rows} == heads


async def ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()


async def connect_pool(url: str, size_max: int = 10) -> asyncpg.Pool:
    from ledger.logs import brief_database_faults  # here, not at the top: it imports this module

    brief_database_faults()
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size_max,
        command_timeout=60,
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection it takes back, after asyncpg rolls back a
    transaction left open: nothing more. Its default reset is a round trip on every
    release (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a tenth of
    the server's time in the closed-loop HTTP bench, for session state this code never
    leaves: its advisory locks are transaction-scoped (`pg_advisory_xact_lock`), its
    settings `SET LOCAL`, its cursors inside transactions, and it never LISTENs. Code
    that needs session state takes a connection of its own (`asyncpg.connect`)."""
