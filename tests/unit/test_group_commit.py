"""Group commit: batching, failures and cancellation, with a batch function of our own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ledger.group_commit import GroupCommit, Overloaded


class Recorder:
    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[object]] = []
        self.fail_on = fail_on
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: Sequence[object]) -> list[object]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_on in items:
            raise ConnectionError("database went away")
        return [f"done:{item}" for item in items]


async def test_commands_arriving_during_a_transaction_share_the_next_one() -> None:
    handle = Recorder()
    handle.gate.clear()
    group = GroupCommit(handle, batch_max=3)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)  # the first starts a transaction at once, alone
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    handle.gate.set()
    assert await asyncio.gather(first, *rest) == [f"done:{i}" for i in range(6)]
    assert handle.batches == [[0], [1, 2, 3], [4, 5]]
    assert (group.stats.batches, group.stats.commands, group.stats.batch_commands_max_seen) == (3, 6, 3)


async def test_a_failed_batch_fails_its_own_waiters_only() -> None:
    handle = Recorder(fail_on=2)
    handle.gate.clear()
    group = GroupCommit(handle, batch_max=2)
    tasks = [asyncio.create_task(group.submit(i)) for i in range(4)]
    await asyncio.sleep(0)
    handle.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert handle.batches == [[0, 1], [2, 3]]
    assert outcomes[:2] == ["done:0", "done:1"]
    assert all(isinstance(o, ConnectionError) for o in outcomes[2:])


async def test_a_waiter_that_goes_away_does_not_take_the_batch_with_it() -> None:
    handle = Recorder()
    handle.gate.clear()
    group = GroupCommit(handle)
    leaver = asyncio.create_task(group.submit("a"))
    stayer = asyncio.create_task(group.submit("b"))
    await asyncio.sleep(0)
    leaver.cancel()
    handle.gate.set()
    assert await stayer == "done:b"
    assert handle.batches == [["a", "b"]]  # the leaver's command still went through


async def test_the_queue_is_bounded() -> None:
    handle = Recorder()
    handle.gate.clear()
    group = GroupCommit(handle, batch_max=1, queue_max=2)
    tasks = [asyncio.create_task(group.submit(0))]
    for _ in range(3):
        await asyncio.sleep(0)
    assert handle.batches == [[0]]  # in flight
    tasks += [asyncio.create_task(group.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)  # 1 and 2 wait
    with pytest.raises(Overloaded):
        await group.submit(3)
    handle.gate.set()
    assert await asyncio.gather(*tasks) == ["done:0", "done:1", "done:2"]
