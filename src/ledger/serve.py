"""`ledger serve`: uvicorn around the app, with the embedded database when no URL is set."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from ledger.api.app import create_app
from ledger.bootstrap import build
from ledger.keys import Role, create_key, list_keys
from ledger.settings import Settings

log = logging.getLogger(__name__)


async def _serve(settings: Settings, host: str, port: int) -> None:
    container = await build(settings)
    try:
        if not await list_keys(container.pool):
            _, token = await create_key(container.pool, "admin", Role.admin)
            print(f"\nNo API keys existed, so an admin key was created. It is shown only this once:\n\n  {token}\n",
                  flush=True)
        tasks = []
        if settings.kafka_bootstrap_servers:
            from ledger.ingest.consumer import consumer_task

            tasks.append(consumer_task)
        app = create_app(settings, container=container, extra_tasks=tasks, close_container=True)
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                timeout_graceful_shutdown=10)
        # uvicorn installs the SIGINT/SIGTERM handlers: it stops accepting, drains,
        # then runs the lifespan's shutdown, which stops the background tasks.
        await uvicorn.Server(config).serve()
    except BaseException:
        await container.close(stop_embedded=True)
        raise


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    asyncio.run(_serve(settings, host or settings.host, port or settings.port))
    return 0
