"""The events a process's runners share (`projections.runner.EventPages`): whatever the
order of their reads, each gets exactly what a read of the store would give."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.runner import EventPages


class _Store:
    """The store's `read_all` over a fixed stream with gaps in its positions (rolled back
    appends), counting the events it returns."""

    def __init__(self, positions: list[int]) -> None:
        self.events = [SimpleNamespace(position=p) for p in positions]
        self.returned = 0

    async def read_all(self, after: int, limit: int, conn: object = None, *, lean: bool = False) -> list:
        out = [e for e in self.events if e.position > after][:limit]
        self.returned += len(out)
        return out


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.integers(1, 3), min_size=0, max_size=60),
       reads=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 12)), min_size=1, max_size=40),
       events_max=st.integers(1, 30))
def test_every_read_gives_what_the_store_gives(gaps: list[int], reads: list[tuple[int, int]],
                                              events_max: int) -> None:
    positions, at = [], 0
    for gap in gaps:
        at += gap
        positions.append(at)
    store = _Store(positions)
    pages = EventPages(store, events_max=events_max)  # type: ignore[arg-type]
    readers = [0, 0, 0]  # each reader's position, as a runner's checkpoint
    reference = _Store(positions)

    async def run() -> None:
        for reader, limit in reads:
            got = await pages.read(readers[reader], limit)
            assert [e.position for e in got] == [e.position for e in await reference.read_all(readers[reader], limit)]
            if got:
                readers[reader] = got[-1].position
            assert len(pages.events) <= events_max

    asyncio.run(run())


def test_a_reader_behind_takes_what_the_one_ahead_read() -> None:
    store = _Store(list(range(1, 101)))
    pages = EventPages(store, events_max=50)  # type: ignore[arg-type]

    async def run() -> None:
        ahead = await pages.read(0, 60)
        assert len(ahead) == 60 and store.returned == 60
        behind = await pages.read(20, 20)  # held: positions 11 to 60
        assert [e.position for e in behind] == list(range(21, 41)) and store.returned == 60
        rest = await pages.read(40, 30)  # 41 to 60 held, 61 to 70 read
        assert [e.position for e in rest] == list(range(41, 71)) and store.returned == 70
        old = await pages.read(0, 5)  # let go: read again
        assert [e.position for e in old] == [1, 2, 3, 4, 5] and store.returned == 75

    asyncio.run(run())
