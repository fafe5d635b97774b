"""An expected fault (the database away) is logged in a line, not with a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from ledger.store import connect_pool


class Proxy:
    """A TCP relay between the pool and PostgreSQL: closing it cuts every connection and
    refuses new ones, as a server that died would, without touching the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()


async def test_the_pool_failing_to_reconnect_logs_one_line_without_a_traceback(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    parts = urlsplit(db_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    pool = await connect_pool(urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}")), 2)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        await proxy.close()
        with caplog.at_level(logging.WARNING, logger="asyncpg.pool"), contextlib.suppress(Exception):
            await pool.fetchval("SELECT 1")  # the connection is gone: the pool tries to reopen its floor
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if r.name == "asyncpg.pool"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        records = [r for r in caplog.records if r.name == "asyncpg.pool"]
        assert records, "the pool did not try to reconnect"
        for record in records:
            assert record.exc_info is None and record.exc_text is None
            assert "ConnectionRefusedError" in record.getMessage()
        assert "Traceback" not in caplog.text
    finally:
        pool.terminate()
