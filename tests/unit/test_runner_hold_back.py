"""The member runner waits for the reports' runner that takes its pages from the events
they share (`ProjectionRunner.holding_back`), only while that saves a read, and never
so that both wait for each other."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from projections.models import REPORTS
from projections.runner import FOLLOWER_STALL_S, ProjectionRunner


class _Store:
    def __init__(self, n: int) -> None:
        self.events = [SimpleNamespace(position=p) for p in range(1, n + 1)]

    async def read_all(self, after: int, limit: int, conn: object = None, *, lean: bool = False) -> list:
        return [e for e in self.events if e.position > after][:limit]


def _pair(events_max: int = 100, page: int = 10) -> tuple[ProjectionRunner, ProjectionRunner]:
    store = _Store(1_000)
    members = ProjectionRunner(None, store, page_size=page)  # type: ignore[arg-type]
    reports = ProjectionRunner(None, store, page_size=page, group=REPORTS, defer_to=members)  # type: ignore[arg-type]
    members.pages.events_max = events_max
    return members, reports


def _read(members: ProjectionRunner, after: int, n: int) -> None:
    asyncio.run(members.pages.read(after, n))
    members.position = after + n
    members.busy = members.backlogged = True


def test_it_waits_before_letting_go_of_events_the_follower_has_yet_to_take() -> None:
    members, reports = _pair()
    _read(members, 0, 60)
    reports.position = 0
    assert not members.holding_back()  # 60 held after it: room for two more pages
    _read(members, 60, 20)
    assert members.holding_back()  # 80: the next page or two would let go of its events
    assert not reports.deferring()  # and it does not wait for the members in turn
    reports.position = 30
    assert not members.holding_back()


def test_it_does_not_wait_for_a_follower_out_of_the_window_or_stalled() -> None:
    members, reports = _pair()
    _read(members, 0, 100)
    _read(members, 100, 50)  # positions 51 to 150 held
    reports.position = 20
    assert not members.holding_back()  # a replay from far behind: it reads the table anyway
    reports.position = 60
    assert members.holding_back()
    reports.progressed = time.monotonic() - FOLLOWER_STALL_S
    assert not members.holding_back()  # failing, or another process holds its lock


def test_a_runner_alone_never_holds_back() -> None:
    members, _ = _pair()
    members.follower = None
    _read(members, 0, 100)
    assert not members.holding_back()
