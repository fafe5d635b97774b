"""The access log's handler writes the lines of one event-loop turn in one write."""

from __future__ import annotations

import asyncio
import io
import logging

from ledger.api.access_log import TurnBufferedHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: CountingStream) -> tuple[logging.Logger, TurnBufferedHandler]:
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"test.turn.{id(stream)}")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, handler


async def test_the_lines_of_one_turn_are_written_together_and_in_order_at_its_end() -> None:
    stream = CountingStream()
    log, _ = _logger(stream)
    for i in range(50):
        log.info("line %d", i)
    assert stream.getvalue() == ""  # not yet: the turn goes on
    await asyncio.sleep(0)
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(50))
    assert stream.writes == 1
    log.info("next turn")
    await asyncio.sleep(0)
    assert stream.getvalue().endswith("line 49\nnext turn\n") and stream.writes == 2


def test_a_line_logged_where_no_loop_runs_is_written_at_once_and_flush_writes_what_waits() -> None:
    stream = CountingStream()
    log, handler = _logger(stream)
    log.info("no loop")
    assert stream.getvalue() == "no loop\n"

    async def log_and_stop() -> None:
        log.info("waiting")
        handler.flush()  # as logging.shutdown does
        assert stream.getvalue() == "no loop\nwaiting\n"

    asyncio.run(log_and_stop())
    assert stream.getvalue() == "no loop\nwaiting\n"
