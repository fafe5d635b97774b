"""`ledger serve`: uvicorn around the app, with the embedded database when no URL is set."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from ledger import event_loop
from ledger.api.access_log import log_to_stderr
from ledger.api.app import create_app
from ledger.bootstrap import build
from ledger.keys import Role, create_key, list_keys
from ledger.settings import Settings

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT (128 + 2)
FORCED_REQUESTS_WAIT_S = 2.0  # after a second Ctrl-C, how long requests get to end once their connections are cut


async def _serve(settings: Settings, host: str, port: int) -> bool:
    """Serve until a signal; returns whether a signal arrived before the server was up."""
    # Until uvicorn takes the signals over, a Ctrl-C is noted rather than raised: the
    # start-up (the embedded server, migrations) runs partly in threads that an
    # exception would abandon, leaving a server behind. It stops once it is up.
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()

    def note(sig: signal.Signals) -> None:
        if not interrupted.is_set():
            log.info("%s during start-up: stopping as soon as the database is up", sig.name)
        interrupted.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, note, sig)
    try:
        container = await build(settings)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    try:
        if interrupted.is_set():
            await container.close(stop_embedded=True)
            return True
        if not await list_keys(container.pool):
            _, token = await create_key(container.pool, "admin", Role.admin)
            print(f"\nNo API keys existed, so an admin key was created. It is shown only this once:\n\n  {token}\n",
                  flush=True)
        tasks = []
        if settings.kafka_bootstrap_servers:
            from ledger.ingest.consumer import consumer_task

            tasks.append(consumer_task)
        app = create_app(settings, container=container, extra_tasks=tasks, close_container=True)
        log_to_stderr()  # one JSON line per request, in place of uvicorn's access log
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                timeout_graceful_shutdown=10)
        # uvicorn installs the SIGINT/SIGTERM handlers: it stops accepting, drains,
        # then runs the lifespan's shutdown, which stops the background tasks, and
        # then raises the signal again (a KeyboardInterrupt for SIGINT, caught below).
        server = uvicorn.Server(config)
        try:
            await server.serve()
        finally:
            await _finish_lifespan(server)
    except BaseException:
        await container.close(stop_embedded=True)
        raise
    return False


async def _finish_lifespan(server: uvicorn.Server) -> None:
    """A second Ctrl-C during the drain makes uvicorn stop waiting for the requests in
    flight, as asked, and skip the lifespan's shutdown too: the background tasks then ran
    on while the pool and the embedded database were closed under them (the Kafka
    consumer timed out twice, 20 s, before the process ended) and the lifespan was
    cancelled at exit with a traceback. So the shutdown uvicorn skipped runs here."""
    lifespan = getattr(server, "lifespan", None)
    if not (server.force_exit and lifespan is not None and getattr(lifespan, "startup_event", None) is not None
            and lifespan.startup_event.is_set() and not lifespan.shutdown_event.is_set()
            and not lifespan.error_occurred):
        return
    # Cut the connections still open, so that a request waiting for its body ends (as a
    # client that went away) rather than being cancelled at exit, with a traceback.
    for connection in list(server.server_state.connections):
        connection.transport.close()
    if server.server_state.tasks:
        await asyncio.wait(list(server.server_state.tasks), timeout=FORCED_REQUESTS_WAIT_S)
    log.info("second interrupt: requests in flight were cut short; stopping the background tasks")
    await lifespan.shutdown()


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    try:
        interrupted = event_loop.run(_serve(settings, host or settings.host, port or settings.port))
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        log.info("ledger serve stopped (interrupted)")
        return EXIT_INTERRUPTED
    return 0
