"""Every database fault is a 503 problem with Retry-After; readiness does not parse
the migration scripts on every call."""

from __future__ import annotations

import logging

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from ledger.api import problems
from ledger.store import database


async def test_every_database_fault_is_a_503_problem_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    def closed_in_transaction() -> Exception:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        except Exception:
            try:
                raise asyncpg.InterfaceError("cannot perform operation: connection is closed")
            except Exception as exc:
                return exc

    faults: list[Exception] = [
        closed_in_transaction(),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.PostgresConnectionError("connection failure"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ]
    app = FastAPI()
    problems.install(app)

    @app.get("/fault/{i}")
    async def fault(i: int) -> None:
        raise faults[i]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.WARNING, logger="ledger.api.problems"):
            for i, exc in enumerate(faults):
                r = await client.get(f"/fault/{i}")
                assert r.status_code == 503, (exc, r.status_code)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["retry-after"] == "1"
                assert r.json()["status"] == 503
    # A misuse of a connection is a bug: logged as an error, with its traceback.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info[1] for r in errors if r.exc_info] == [faults[1]]


async def test_the_migration_heads_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from alembic.script import ScriptDirectory

    original = ScriptDirectory.from_config
    heads = set(original(database._alembic_config("postgresql://x")).get_heads())
    parsed = []

    def counting(config):  # type: ignore[no-untyped-def]
        parsed.append(config)
        return original(config)

    monkeypatch.setattr(ScriptDirectory, "from_config", staticmethod(counting))
    if hasattr(database, "head_revisions"):
        database.head_revisions.cache_clear()

    class VersionTable:  # this test is about the scripts; the query itself runs in the e2e tests
        async def fetch(self, query: str) -> list[dict[str, str]]:
            return [{"version_num": head} for head in heads]

    assert [await database.schema_is_current(VersionTable()) for _ in range(3)] == [True] * 3  # type: ignore[arg-type]
    assert len(parsed) <= 1
