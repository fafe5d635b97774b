"""The event loop every long-running command runs on: uvloop where it is available.

`ledger serve` spent a quarter of its time in the standard loop's socket writes and
selector in the closed-loop HTTP bench; uvloop does the same work in C (libuv), and
asyncpg and uvicorn are built to run on it. uvicorn installs it only when it creates
the loop itself, which `ledger serve` does not (it opens the database first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # a platform uvloop does not support (Windows): the standard loop
    uvloop = None

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    return uvloop.new_event_loop if uvloop is not None else None


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop's loop (when available)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
