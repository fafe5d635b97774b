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
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.writes += 1
        self.sizes.append(len(text.encode()))
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


async def test_a_busy_turn_is_written_in_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    """Several `ledger serve` processes share one stderr: a pipe keeps a write of up to
    PIPE_BUF bytes whole, a longer one may be interleaved with another process's."""
    import select

    stream = CountingStream()
    log, _ = _logger(stream)
    line = '{"route":"/v1/members/{member_id}/redemptions","status":201,"key_name":"caf\u00e9"}'
    for i in range(200):
        log.info("%s %d", line, i)
    await asyncio.sleep(0)
    assert stream.getvalue() == "".join(f"{line} {i}\n" for i in range(200))
    assert stream.writes > 1 and max(stream.sizes) <= select.PIPE_BUF
    assert all(text.endswith("\n") for text in _writes(stream))


def _writes(stream: CountingStream) -> list[str]:
    value, out, at = stream.getvalue().encode(), [], 0
    for size in stream.sizes:
        out.append(value[at:at + size].decode())
        at += size
    return out
