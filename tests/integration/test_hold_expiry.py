"""The hold-expiry scheduler on a real PostgreSQL: holds past their time are released by
one pass, in bounded pages and commands, none twice, and their points come back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.bootstrap import Container, build
from ledger.cli import main
from ledger.domain import CaptureHold, HoldReleased, PlaceHold
from ledger.handlers import CommandRequest
from ledger.holds import expire_holds_due

from ..conftest import make_settings
from .helpers import T0, earn


def hold(member: str, hold_id: str, points: int, expires_at: datetime, at: datetime = T0) -> CommandRequest:
    return CommandRequest(PlaceHold(member, at, hold_id, points, "reward", "hotel", expires_at))


async def test_a_pass_releases_the_holds_past_their_time_once_and_their_points_come_back(
        container: Container) -> None:
    ledger, pool = container.ledger, container.pool
    await ledger.handle_batch([earn(f"m{i}", "B1", at=T0) for i in range(4)])  # 1,000 points each
    due, later = T0 + timedelta(hours=1), T0 + timedelta(days=10)
    await ledger.handle_batch([
        hold("m0", "h1", 100, due), hold("m0", "h2", 200, due), hold("m0", "h3", 300, due),
        hold("m0", "h4", 50, later),
        hold("m1", "h1", 400, due),
        hold("m2", "h1", 500, due),
        CommandRequest(CaptureHold("m2", T0 + timedelta(minutes=30), "h1", "c1", 500)),  # ended before its time
    ])
    await container.project()
    now = T0 + timedelta(hours=2)

    # A member a page, two holds a command, one command an append: m0's three holds take two.
    assert await expire_holds_due(ledger, pool, now, members_max=1, holds_max=2, batch_events_max=2) == 4
    # The read model still shows them open (the projection behind): nothing is released twice.
    assert await expire_holds_due(ledger, pool, now) == 0
    await container.project()
    assert await expire_holds_due(ledger, pool, now) == 0

    released = [(s.stream_id, s.event.hold_id, s.event.reason) for s in await container.store.read_all(0, 1_000)
                if isinstance(s.event, HoldReleased)]
    assert sorted(released) == [("m0", "h1", "expired"), ("m0", "h2", "expired"), ("m0", "h3", "expired"),
                                ("m1", "h1", "expired")]
    rows = await pool.fetch("SELECT member_id, available, held FROM balances ORDER BY 1")
    assert [tuple(r) for r in rows] == [("m0", 950, 50), ("m1", 1000, 0), ("m2", 500, 0), ("m3", 1000, 0)]
    statuses = await pool.fetch("SELECT member_id, hold_id, status FROM holds ORDER BY 1, 2")
    assert [tuple(r) for r in statuses] == [
        ("m0", "h1", "expired"), ("m0", "h2", "expired"), ("m0", "h3", "expired"), ("m0", "h4", "open"),
        ("m1", "h1", "expired"), ("m2", "h1", "captured"),
    ]
    # Its own time comes for the last one.
    assert await expire_holds_due(ledger, pool, later) == 1


def test_ledger_holds_expire_releases_the_holds_due_once(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    past = datetime(2020, 6, 1, tzinfo=UTC)

    async def place() -> None:
        container = await build(make_settings(tmp_path), run_migrations=False, url=db_url)
        try:
            await container.ledger.handle(earn("M-1", "B1", at=past))
            await container.ledger.handle(hold("M-1", "H-1", 300, past + timedelta(minutes=15), at=past))
            await container.ledger.handle(hold("M-1", "H-2", 200, datetime(9000, 1, 1, tzinfo=UTC), at=past))
        finally:
            await container.close()

    asyncio.run(place())
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    assert main(["holds", "expire"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "released 1 holds past their time"
    assert main(["holds", "expire"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "released 0 holds past their time"
