"""A real HTTP server (uvicorn on loopback) around the app, on a fresh database."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
import uvicorn

from ledger.api.app import create_app
from ledger.bootstrap import Container
from ledger.keys import Role, create_key


@dataclass
class Api:
    base_url: str
    tokens: dict[str, str]
    container: Container

    def client(self, role: str | None = "admin", **headers: str) -> httpx.AsyncClient:
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def api(container: Container) -> AsyncIterator[Api]:
    tokens = {}
    for role in Role:
        _, tokens[role.value] = await create_key(container.pool, f"{role.value}-key", role)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(container=container), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "the test server did not start"
    yield Api(f"http://127.0.0.1:{port}", tokens, container)
    server.should_exit = True
    await task
