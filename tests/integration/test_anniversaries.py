"""The anniversary scheduler on a real PostgreSQL (P3): each anniversary of a member's
first activity is granted once, under the rule version in force at the anniversary
instant, even with two runners passing at the same time; the read model it walks moves
on to the next year, and a rebuild gives what the live runner gave."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.anniversaries import grant_due
from ledger.bootstrap import Container
from ledger.domain import DEFAULT_RULES_DICT, EPOCH, ProgramRules, RuleBook, RuleVersion
from ledger.domain.events import AnniversaryBonusGranted
from ledger.handlers import Ledger
from projections.runner import rebuild

from .helpers import T0, earn

V1 = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "a.1", "anniversary": {"points_by_year": {"1": 100}}})
V2 = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "a.2",
                             "anniversary": {"points_by_year": {"1": 150}, "per_year": 300}})
V2_FROM = T0 + timedelta(days=500)  # after the first anniversaries, before the second


async def _granted(container: Container) -> list[tuple[str, int, int, str]]:
    return sorted((s.stream_id, s.event.year, s.event.points, s.event.rules_version)
                  for s in await container.store.read_all(0, 10_000) if isinstance(s.event, AnniversaryBonusGranted))


async def test_two_runners_grant_each_anniversary_once_under_the_version_in_force_then(container: Container) -> None:
    book = RuleBook([RuleVersion(V1, EPOCH), RuleVersion(V2, V2_FROM)])
    container.ledger.book = book
    other = Ledger(container.store, book)  # a second process's runner: its own cache, the same store
    await container.ledger.handle_batch([earn(f"m{i}", "B1", at=T0 + timedelta(days=i)) for i in range(5)])
    await container.runner.run_until_caught_up()

    # Not due yet: nothing.
    assert await grant_due(container.ledger, container.pool, T0 + timedelta(days=300)) == 0
    # Two years and a bit on, both runners at once, two members a page: each year once.
    now = T0 + timedelta(days=740)
    counts = await asyncio.gather(grant_due(container.ledger, container.pool, now, members_max=2),
                                  grant_due(other, container.pool, now, members_max=2))
    assert sum(counts) == 10, counts
    assert await _granted(container) == sorted(
        [(f"m{i}", 1, 100, "a.1") for i in range(5)] + [(f"m{i}", 2, 600, "a.2") for i in range(5)])
    # Again, and after the projection caught up: nothing more.
    assert await grant_due(other, container.pool, now) == 0
    await container.runner.run_until_caught_up()
    assert await grant_due(container.ledger, container.pool, now) == 0
    rows = await container.pool.fetch("SELECT member_id, next_year, due_at FROM member_anniversaries ORDER BY 1")
    assert [(r[0], r[1]) for r in rows] == [(f"m{i}", 3) for i in range(5)]
    assert rows[0][2] == datetime(2029, 5, 4, 10, 0, tzinfo=UTC)
    balances = await container.pool.fetch("SELECT available FROM balances ORDER BY member_id")
    assert {r[0] for r in balances} == {1000 + 100 + 600}  # the booking (with its first booking bonus), years 1 and 2

    live = [tuple(r) for r in await container.pool.fetch("SELECT * FROM member_anniversaries ORDER BY 1")]
    await rebuild(container.pool, container.store)
    assert [tuple(r) for r in await container.pool.fetch("SELECT * FROM member_anniversaries ORDER BY 1")] == live


CAPPED = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "version": "c.1", "activities": {
    "social.shared": {"points": 50, "per_booking_once": True}, "review.submitted": {"points": 30},
    "referral.completed": {"points": 500, "referred_points": 200}},
    "anniversary": {"per_year": 100}, "caps": [
        {"source": "social.shared", "period": "month", "max_points": 80},
        {"source": "first_booking_bonus", "period": "year", "max_points": 300},
        {"source": "anniversary", "period": "year", "max_points": 50}]})


async def test_live_read_models_of_earn_beyond_bookings_equal_the_fold_and_a_rebuild(container: Container) -> None:
    from ledger.domain import AdjustPoints, CancelBooking
    from ledger.domain.earn import RecordActivity
    from ledger.handlers import CommandRequest

    from .test_projections import _tables

    container.ledger.rules = CAPPED
    at = T0
    requests = [earn(f"m{i}", "B1", at=at) for i in range(3)] + [earn("m3", "B1", pending=True, at=at)]
    for i in range(6):
        requests.append(CommandRequest(RecordActivity("m0", at + timedelta(days=i * 20), f"s{i}", "social.shared",
                                                      "wechat", f"B{i % 4}")))
    requests += [
        CommandRequest(RecordActivity("m1", at, "r1", "review.submitted")),
        CommandRequest(RecordActivity("m0", at, "ref1", "referral.completed", referred_member_id="m2")),
        CommandRequest(RecordActivity("m1", at, "ref2", "referral.completed", referred_member_id="m2")),  # refused
        CommandRequest(RecordActivity("m0", at, "ref3", "referral.completed", referred_member_id="m3")),  # refused
        CommandRequest(AdjustPoints("m1", at, "adj1", 250, "Flight delayed", "support", "CASE-1", "delay", "B1")),
        CommandRequest(CancelBooking("m3", at + timedelta(days=1), "B1")),
        earn("m4", "B1", at=at + timedelta(days=30)),
    ]
    outcomes = await container.ledger.handle_batch(requests)
    assert sum(type(o).__name__ == "Rejected" for o in outcomes) == 2
    assert await grant_due(container.ledger, container.pool, T0 + timedelta(days=800)) == 0  # the runner behind
    await container.runner.run_until_caught_up()
    assert await grant_due(container.ledger, container.pool, T0 + timedelta(days=800)) == 10
    await container.project()  # both projection groups: the members' and the reports'
    live = await _tables(container)
    for row in live["balances"]:
        state = await container.ledger.member_state(row["member_id"])
        assert (row["available"], row["pending"]) == (state.balance, state.pending), row["member_id"]
        lots = {r["lot_id"]: r["remaining"] for r in live["expiry_lots"] if r["member_id"] == row["member_id"]}
        assert lots == {lot_id: lot.remaining for lot_id, lot in state.all_lots().items()}
    m0 = await container.ledger.member_state("m0")
    assert m0.earn.counted("social.shared", "2026-05") == 80  # 50, then 30 of 50: the month's cap
    await rebuild(container.pool, container.store, page_size=7)
    assert await _tables(container) == live


def test_ledger_anniversaries_grant_grants_the_years_due_once(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.bootstrap import build
    from ledger.cli import main

    from ..conftest import make_settings

    past = datetime(2021, 6, 1, tzinfo=UTC)

    async def earn_long_ago() -> None:
        container = await build(make_settings(tmp_path), run_migrations=False, url=db_url)
        try:
            await container.ledger.handle(earn("M-1", "B1", at=past))
        finally:
            await container.close()

    asyncio.run(earn_long_ago())
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    assert main(["anniversaries", "grant"]) == 0
    granted = int(capsys.readouterr().out.splitlines()[-1].split()[1])
    assert granted >= 5  # a year each since June 2021, at 0 points under the default rules
    assert main(["anniversaries", "grant"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "granted 0 anniversary bonuses"
