"""Every process picks up a newly published rules version or rate set within
LEDGER_RULES_REFRESH_S, with no restart: a supervised task polls the newest publication
of both tables (two index reads) and, when it moved, loads the whole book again and
swaps it into the ledger and the projection runner. The book is replaced whole, never
changed in place, so a batch being decided keeps the book it started with."""

from __future__ import annotations

import asyncio
import logging

from ledger.bootstrap import Container
from ledger.store.database import DATABASE_ERRORS
from ledger.supervisor import sleep_or_stop

log = logging.getLogger(__name__)


MARKER = "programme_marker"  # container.extras: the newest publications the loaded book holds


async def refresh_once(container: Container, *, force: bool = False) -> None:
    """Load and swap in the book if anything was published since it was loaded."""
    marker = await container.programme.marker()
    if force or marker != container.extras.get(MARKER):
        container.swap_book(await container.programme.book())
        container.extras[MARKER] = marker
        log.info("programme rules loaded: %d versions, %d rate sets, newest %s",
                 len(container.book.versions), len(container.book.fx), container.book.latest.rules.version)


async def run_rules_refresh(container: Container, stop: asyncio.Event) -> None:
    """A database away is waited out here, polling on (the process keeps deciding under
    the book it has); anything else is the supervisor's to log and restart."""
    while not stop.is_set():
        try:
            await refresh_once(container)
        except DATABASE_ERRORS as exc:
            log.warning("rules refresh: %s: %s", type(exc).__name__, exc)
        await sleep_or_stop(stop, container.settings.rules_refresh_s)
