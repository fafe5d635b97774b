"""Group commit for single commands (HTTP writes): commands that arrive while a
transaction is in flight go into the next one together.

Why: a command per transaction is bound by the commit's fsync, and commands to one
member from one process raced each other for the member's next stream version, each
loser deciding again on fresh state, so that 64 bookings of one member at once took
dozens of rounds and some ran out of attempts (a 409 for a valid write). In one batch,
commands to the same member are decided one after the other on the state the earlier
ones left, as the Kafka consumer's batches already are: no race inside a process, and
one commit for the whole group. Commands from other processes still meet as stream
version conflicts, which the ledger retries (bounded) against fresh state.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ledger.domain import LedgerError

BatchFn = Callable[[Sequence], Awaitable[list]]


class Overloaded(LedgerError):
    """More commands are waiting for a transaction than the bound allows."""

    title = "Service overloaded"


@dataclass
class GroupStats:
    batches: int = 0
    commands: int = 0
    batch_commands_max_seen: int = 0


class GroupCommit:
    """`submit(item)` waits for the result of `handle_batch([..., item, ...])`.

    At most one batch is in flight: the first command finds nothing running and starts a
    flush at once (no added latency when idle); commands arriving meanwhile queue, and the
    flush takes up to `batch_max` of them per transaction until the queue is empty, then
    ends. A failure of the batch as a whole (a database fault) is every member's failure;
    a refusal of one command is that command's result only.
    """

    def __init__(self, handle_batch: BatchFn, *, batch_max: int = 500, queue_max: int = 10_000) -> None:
        assert 1 <= batch_max <= queue_max
        self._handle_batch = handle_batch
        self.batch_max = batch_max
        self.queue_max = queue_max
        self._queue: collections.deque[tuple[object, asyncio.Future]] = collections.deque()
        self._flush: asyncio.Task[None] | None = None
        self.stats = GroupStats()

    async def submit(self, item: object) -> object:
        if len(self._queue) >= self.queue_max:
            raise Overloaded(f"{len(self._queue)} writes are waiting for the database; retry shortly.")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flush is None or self._flush.done():
            # A task of its own, not the caller's: a caller that goes away (a client that
            # disconnects) must not take the batch of everyone else with it.
            self._flush = asyncio.create_task(self._run(), name="group-commit")
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
            self.stats.batches += 1
            self.stats.commands += len(batch)
            self.stats.batch_commands_max_seen = max(self.stats.batch_commands_max_seen, len(batch))
            try:
                results = await self._handle_batch([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in [*batch, *self._queue]:
                    future.cancel()
                self._queue.clear()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every waiter, who raises it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # a waiter cancelled meanwhile: its command stands
                    future.set_result(result)

    async def close(self) -> None:
        """Let the batch in flight finish (its commands may already be committed)."""
        if self._flush is not None and not self._flush.done():
            await asyncio.shield(self._flush)
