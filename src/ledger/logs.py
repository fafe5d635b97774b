"""Logging set-up, and what keeps expected faults readable: a database or a Kafka broker
that is away is a condition to report briefly, not a traceback, nor a line every 100 ms."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ledger.store.database import UNAVAILABLE

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
REPEAT_WINDOW_S = 30.0
REPEAT_KEYS_MAX = 1_000  # distinct message templates tracked; past that the table starts afresh


class BriefDatabaseFaults(logging.Filter):
    """Turns a record that carries a database-unavailable exception into one line naming
    the exception. asyncpg's pool logs "Failed to restore the pool connection floor" with
    a 40-line traceback each time it fails to reopen a connection while the server is
    down (every 1 to 60 s), which says nothing the exception's one line does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UNAVAILABLE):
            record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}: {exc}", None
            record.exc_info, record.exc_text = None, None
        return True


def brief_database_faults(logger_name: str = "asyncpg.pool") -> None:
    """Install `BriefDatabaseFaults` on the logger, once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, BriefDatabaseFaults) for f in logger.filters):
        logger.addFilter(BriefDatabaseFaults())


class RepeatLimiter(logging.Filter):
    """Lets one record of a logger's message template through per `window_s` and drops
    the others, saying how many it dropped on the next one it lets through. aiokafka logs
    each failed connection attempt, metadata update, fetch and coordinator lookup at
    ERROR, every retry (100 ms): with the broker down for 30 s, `ledger serve` wrote
    1,900 such lines. The API logs "database unavailable" for each request it answers
    503 while the database is away: 700 lines in the 3 s of a restart under load. Only
    records of loggers under `prefixes` are limited, and never one with a traceback: two
    different bugs can share a template, and each traceback is the clue to one."""

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka", "ledger.api.problems"),
                 window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes, self.window_s, self.clock = prefixes, window_s, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # template -> (passed at, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or not record.name.startswith(self.prefixes):
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        passed_at, dropped = self._seen.get(key, (None, 0))
        if passed_at is not None and now - passed_at < self.window_s:
            self._seen[key] = (passed_at, dropped + 1)
            return False
        if len(self._seen) >= REPEAT_KEYS_MAX:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg, record.args = (f"{record.getMessage()} ({dropped} more like this in the last"
                                       f" {now - passed_at:.0f} s not logged)"), None  # type: ignore[operator]
        return True


def configure() -> None:
    """The command line's logging: text lines on stderr, expected faults kept brief."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    limiter = RepeatLimiter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatLimiter) for f in handler.filters):
            handler.addFilter(limiter)
    brief_database_faults()
