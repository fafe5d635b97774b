"""The command line's logging keeps a broker outage readable: one line per kind of
aiokafka complaint per 30 s, not one every retry."""

from __future__ import annotations

import logging
import subprocess
import sys

from ledger.logs import RepeatLimiter


def test_a_repeated_library_complaint_is_logged_once_per_window_with_the_count_dropped() -> None:
    now = [0.0]
    limiter = RepeatLimiter(window_s=30, clock=lambda: now[0])

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    passed = [limiter.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"))
              for _ in range(300)]
    assert passed.count(True) == 1
    # Another template, or a logger outside aiokafka, is not held back.
    assert limiter.filter(record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1, "x"))
    assert all(limiter.filter(record("ledger.ingest.consumer", "lag %s", 1)) for _ in range(3))
    # The API's line per 503 while the database is away is limited too, but no traceback is.
    unavailable = [limiter.filter(record("ledger.api.problems", "database unavailable: %s: %s", "OSError", "x"))
                   for _ in range(100)]
    assert unavailable.count(True) == 1
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        import sys

        bug = logging.LogRecord("ledger.api.problems", logging.ERROR, __file__, 1, "unhandled error", (),
                                sys.exc_info())
    assert all(limiter.filter(bug) for _ in range(3))
    now[0] = 31.0
    later = record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert limiter.filter(later)
    assert later.getMessage() == ("Unable connect to node with id 1: refused"
                                  " (299 more like this in the last 31 s not logged)")


def test_the_command_line_logging_limits_aiokafka_repeats() -> None:
    script = (
        "import logging\n"
        "from ledger.logs import configure\n"
        "configure()\n"
        "for _ in range(500):\n"
        "    logging.getLogger('aiokafka').error('Unable connect to node with id %s: %s', 1, 'refused')\n"
        "    logging.getLogger('aiokafka.conn').error('Connection at %s closed', '127.0.0.1:9092')\n"
        "logging.getLogger('ledger.ingest.consumer').info('still here')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 3, lines
    assert "still here" in lines[-1]
