"""Projections on a real PostgreSQL: live run, rebuild, the fold, expiry."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ledger.bootstrap import Container
from ledger.domain import (
    AdjustPoints,
    AmendBooking,
    BookingAmended,
    CancelBooking,
    CaptureHold,
    CompleteBooking,
    ConfirmBooking,
    DebtSettled,
    EarnReversed,
    ExpirePoints,
    HoldCaptured,
    HoldReleased,
    PlaceHold,
    PointsHeld,
    PointsTransferredIn,
    PointsTransferredOut,
    ProgramRules,
    RedeemPoints,
    RedemptionReversed,
    RefundBooking,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
)
from ledger.domain.decider import booking_lot_id
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.domain.timeutil import add_months
from ledger.expiry import expire_due
from ledger.handlers import CommandRequest
from ledger.holds import expire_holds_due
from ledger.store import StoredEvent
from projections import reports
from projections.models import COLUMNS
from projections.runner import TABLES, ProjectionRunner, checkpoint, rebuild

from .helpers import T0, earn, redeem

# Debts and a grace period for returned points: every branch of the movements' events.
MOVEMENT_RULES = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True,
                                         "return_grace_days": 30})


async def _tables(container: Container) -> dict[str, list]:
    out = {}
    for table in TABLES:
        # Every column: the reports' tables have keys of more than two.
        order = ", ".join(str(i + 1) for i in range(len(COLUMNS[table])))
        query = f"SELECT * FROM {table} ORDER BY {order}"
        if table == "liability_moments":  # a moment's figure is the sum of its entries, in any rows
            query = f"{reports.MOMENT_ENTRIES.format(table=table)} GROUP BY 1, 2, 3, 4, 5 HAVING sum(u.points) <> 0"
            query += f" ORDER BY {order}"
        rows = await container.pool.fetch(query)
        out[table] = [dict(r) for r in rows]
    return out


async def _indexes(container: Container) -> list[tuple[str, str]]:
    """Each read-model table's index definitions, without the indexes' names."""
    rows = await container.pool.fetch(
        "SELECT tablename, regexp_replace(indexdef, 'INDEX \\S+ ON', 'INDEX ON') FROM pg_indexes"
        " WHERE tablename = ANY($1::text[]) ORDER BY 1, 2", list(TABLES),
    )
    return [(r[0], r[1]) for r in rows]


async def _history(container: Container, members: int = 40, seed: int = 7) -> None:
    """Bookings, redemptions, reversals and adjustments of `members` members over six
    steps, each with the movements (holds, reversals of redemptions, transfers, partial
    refunds and amendments) drawn at random, then the cases of `_movement_cases`; the
    live runner takes a page now and then."""
    rnd = random.Random(seed)
    ledger = container.ledger
    ledger.rules = MOVEMENT_RULES  # the tiers are the default rules': the projections' rules stand
    for step in range(6):
        at = T0 + timedelta(days=40 * step)
        batch = []
        for m in range(members):
            member, booking = f"m{m}", f"B{step}-{m}"
            batch.append(earn(member, booking, f"{rnd.randint(10, 3000)}.{rnd.randint(0, 99):02d}",
                              pending=rnd.random() < 0.3, at=at))
        await ledger.handle_batch(batch)
        follow = []
        for m in range(members):
            member = f"m{m}"
            r = rnd.random()
            if r < 0.3:
                follow.append(redeem(member, rnd.randint(1, 3000), f"r{step}-{m}", at=at + timedelta(hours=1)))
            elif r < 0.4:
                follow.append(CommandRequest(CancelBooking(member, at + timedelta(hours=2), f"B{step}-{m}")))
            elif r < 0.5:
                follow.append(CommandRequest(RefundBooking(member, at + timedelta(hours=2), f"B{step}-{m}")))
            elif r < 0.6:
                follow.append(CommandRequest(AdjustPoints(member, at, f"a{step}-{m}", rnd.randint(-500, 500) or 1,
                                                          "complaint", "support")))
        await ledger.handle_batch(follow)
        await ledger.handle_batch(_moves(rnd, members, step, at))
        await expire_holds_due(ledger, container.pool, at + timedelta(hours=5))  # the steps' holds of a day
        await container.runner.run_once()  # interleave live projection with writes
    await _movement_cases(container)


def _moves(rnd: random.Random, members: int, step: int, at: datetime) -> list[CommandRequest]:
    """A movement for most members, many of which the domain refuses (not enough points,
    no such hold or redemption): those are left out of the batch's commit."""
    out = []
    for m in range(members):
        member, r, when = f"m{m}", rnd.random(), at + timedelta(hours=3)
        match int(r * 8):
            case 0 | 1:
                command = PlaceHold(member, when, f"h{step}-{m}", rnd.randint(1, 2500), "reward", "hotel",
                                    when + timedelta(days=rnd.choice([1, 90])))
            case 2:
                command = CaptureHold(member, when, f"h{step - 1}-{m}", f"c{step}-{m}", rnd.randint(1, 1500))
            case 3:
                command = ReleaseHold(member, when, f"h{step - 1}-{m}")
            case 4:
                command = ReverseRedemption(member, when, rnd.choice([f"r{step}-{m}", f"c{step - 1}-{m}"]),
                                            f"rv{step}-{m}", rnd.choice([None, rnd.randint(1, 800)]), "complaint",
                                            "support")
            case 5:
                command = TransferPoints(member, when, f"t{step}-{m}", f"m{(m + 1) % members}",
                                         rnd.randint(100, 2000), "gift")
            case 6:
                command = AmendBooking(member, when, f"B{step}-{m}", "refunded",
                                       refund_amount=Decimal(f"{rnd.randint(1, 900)}.00"))
            case _:
                command = AmendBooking(member, when, f"B{step}-{m}", "amended",
                                       amount=Decimal(f"{rnd.randint(0, 4000)}.00"))
        out.append(CommandRequest(command))
    return out


async def _movement_cases(container: Container) -> None:
    """The cases a random history may miss, each refused by nothing (`handle` raises on a
    refusal), with the live runner catching up between some, so that amendments find
    their lots in the page or in the tables:
    - a hold released after its lot's date, and one the scheduler expires after it;
    - a booking refunded while its points were spent and held: a debt, which the hold's
      release and the redemption's reversal repay with the points they forfeit;
    - a reversal within the grace period (a grace lot), and one after it (expired);
    - a transfer across two source lots;
    - amendments up and down of pending and active bookings, a partial refund with a
      shortfall, and an amendment of a lot the expiry job had reached;
    - a hold captured in part, and its redemption reversed."""
    ledger, runner = container.ledger, container.runner
    ends = add_months(T0, MOVEMENT_RULES.expiry_months)  # the date of lots earned at T0

    async def run(*commands: object) -> None:
        for command in commands:
            await ledger.handle(CommandRequest(command))  # type: ignore[arg-type]

    def complete(member: str, booking: str, amount: str, at: datetime) -> CompleteBooking:
        return CompleteBooking(member, at, booking, "flight", Decimal(amount), "EUR")

    await run(
        complete("xa", "A1", "1000.00", T0),
        PlaceHold("xa", ends - timedelta(days=10), "h1", 2000, "reward", "hotel", ends + timedelta(days=20)),
        PlaceHold("xa", ends - timedelta(days=10), "h2", 1000, "reward", "hotel", ends + timedelta(days=5)),
        complete("xb", "B1", "1000.00", T0 + timedelta(days=1)),
        RedeemPoints("xb", T0 + timedelta(days=2), "rb", 3000, "reward", "hotel_discount"),
        PlaceHold("xb", T0 + timedelta(days=3), "hb", 2000, "reward", "hotel", T0 + timedelta(days=60)),
        complete("xc", "C1", "200.00", T0),
        RedeemPoints("xc", T0 + timedelta(days=1), "rc", 1200, "reward", "hotel_discount"),
        complete("xd", "D1", "100.00", T0),
        complete("xd", "D2", "100.00", T0 + timedelta(days=30)),
        TransferPoints("xd", T0 + timedelta(days=31), "td", "xc", 1200, "family"),
        ConfirmBooking("xe", T0, "P1", "flight", Decimal("100.00"), "EUR"),
        AmendBooking("xe", T0 + timedelta(hours=1), "P1", "amended", amount=Decimal("150.00")),
        complete("xf", "F1", "400.00", T0),
        PlaceHold("xf", T0 + timedelta(days=1), "hf", 1000, "reward", "hotel", T0 + timedelta(days=2)),
    )
    await container.project()
    await run(
        ExpirePoints("xa", ends + timedelta(days=1)),  # the held points stay reserved
        ReleaseHold("xa", ends + timedelta(days=2), "h1"),  # back expired
        RefundBooking("xb", T0 + timedelta(days=4), "B1"),  # spent and held: a debt
        ReleaseHold("xb", T0 + timedelta(days=5), "hb"),  # forfeited, repaying the debt
        ReverseRedemption("xb", T0 + timedelta(days=6), "rb", "rvb", None, "complaint", "support"),
        ReverseRedemption("xc", ends + timedelta(days=10), "rc", "rvc1", 400, "complaint", "support"),  # grace lot
        ReverseRedemption("xc", ends + timedelta(days=45), "rc", "rvc2", None, "complaint", "support"),  # expired
        AmendBooking("xe", T0 + timedelta(hours=2), "P1", "amended", amount=Decimal("200.00")),  # pending, stored
        CompleteBooking("xe", T0 + timedelta(days=3), "P1", "flight", Decimal("200.00"), "EUR"),
        complete("xe", "A1", "100.00", T0 + timedelta(days=4)),
        CaptureHold("xf", T0 + timedelta(days=1, hours=1), "hf", "cf", 600),
        PlaceHold("xf", T0 + timedelta(days=4), "hf2", 300, "reward", "hotel", T0 + timedelta(days=400)),
    )
    await container.project()
    await run(
        AmendBooking("xe", T0 + timedelta(days=5), "A1", "amended", amount=Decimal("300.00")),  # active, stored
        RedeemPoints("xe", T0 + timedelta(days=6), "re", 1800, "reward", "hotel_discount"),
        AmendBooking("xe", T0 + timedelta(days=7), "P1", "refunded", refund_amount=Decimal("150.00")),  # shortfall
        ConfirmBooking("xe", T0 + timedelta(days=8), "P2", "flight", Decimal("100.00"), "EUR"),
        AmendBooking("xe", T0 + timedelta(days=8, hours=1), "P2", "refunded", refund_amount=Decimal("40.00")),
        ReverseRedemption("xf", T0 + timedelta(days=3), "cf", "rvf", None, "complaint", "support"),
        ExpirePoints("xe", ends + timedelta(days=5)),  # A1's date: pays the debt, the rest expires
    )
    await container.project()
    await expire_holds_due(ledger, container.pool, ends + timedelta(days=6))  # h2, after its lot's date
    # A1 amended after the expiry job reached it: its lot has points again, which the
    # schedule must show the job, and the job expires.
    await run(AmendBooking("xe", ends + timedelta(days=6), "A1", "amended", amount=Decimal("400.00")))
    await container.project()
    await expire_due(ledger, container.pool, ends + timedelta(days=7))
    assert (await ledger.member_state("xe")).lot(booking_lot_id("A1")).remaining == 0



def _balances_identity(row: dict, stream: list) -> None:
    """The identity `projections.balances` states, over the row and the member's events."""
    reversed_pending = sum(e.pending_points for e in stream if isinstance(e, EarnReversed | BookingAmended))
    settled = sum(e.points for e in stream if isinstance(e, DebtSettled))
    assert row["available"] + row["held"] == (
        row["lifetime_earned"] + row["lifetime_adjusted"] + row["lifetime_transferred_in"]
        - row["lifetime_redeemed"] - row["lifetime_expired"] - row["lifetime_transferred_out"]
        - (row["lifetime_reversed"] - reversed_pending) - (row["debt"] + settled)
    ), row


def _has_every_movement(events: list) -> None:
    """The history holds every movement event, and each case the cases are for."""
    def some(kind: type, test=lambda e: True) -> bool:  # type: ignore[no-untyped-def]
        return any(isinstance(e, kind) and test(e) for e in events)

    assert some(PointsHeld) and some(HoldCaptured) and some(PointsTransferredOut) and some(PointsTransferredIn)
    assert some(HoldReleased, lambda e: e.expired) and some(HoldReleased, lambda e: e.reason == "expired")
    assert some(HoldReleased, lambda e: e.reason == "captured") and some(HoldReleased, lambda e: e.reason == "released")
    assert some(HoldReleased, lambda e: e.forfeited and e.debt_repaid)
    assert some(RedemptionReversed, lambda e: e.grace_lot_id and e.regranted)
    assert some(RedemptionReversed, lambda e: e.forfeited and e.debt_repaid) and some(RedemptionReversed, lambda e: e.expired)
    assert some(RedemptionReversed, lambda e: e.lots)
    assert some(BookingAmended, lambda e: e.points > 0) and some(BookingAmended, lambda e: e.pending_points)
    assert some(BookingAmended, lambda e: e.shortfall_debited)
    assert some(PointsTransferredOut, lambda e: len(e.lots) > 1)


async def test_live_projections_equal_the_fold_and_a_rebuild(container: Container) -> None:
    await _history(container)
    await container.project()
    live = await _tables(container)
    assert await checkpoint(container.pool) == await container.store.head()
    _has_every_movement([s.event for s in await container.store.read_all(0, 100_000)])

    holds = {(r["member_id"], r["hold_id"]): r for r in live["holds"]}
    for row in live["balances"]:
        member = row["member_id"]
        state = await container.ledger.member_state(member)
        assert (row["available"], row["pending"], row["held"], row["debt"]) == (
            state.balance, state.pending, state.held, state.debt)
        stream = [s.event for s in await container.store.read_stream(member)]
        _balances_identity(row, stream)
        # The qualifying rows the balance route works the tier out from are the state's.
        assert sorted((r["earned_at"], r["points"]) for r in live["tier_qualifying"] if r["member_id"] == member) == (
            sorted(state.qualifying_entries()))
        lots = {r["lot_id"]: r for r in live["expiry_lots"] if r["member_id"] == member}
        assert {lot_id: r["remaining"] for lot_id, r in lots.items()} == {
            lot_id: lot.remaining for lot_id, lot in state.all_lots().items()}
        # A lot with points to spend or expire is shown so, whatever happened to it before.
        assert {lot_id: lots[lot_id]["status"] for lot_id in state.lots} == {
            lot_id: lot.status for lot_id, lot in state.lots.items()}
        assert {h: r["status"] for (m, h), r in holds.items() if m == member} == {
            **{h: "open" for h in state.holds}, **dict(state.holds_closed)}
        for hold in state.holds.values():
            assert (holds[(member, hold.hold_id)]["points"], holds[(member, hold.hold_id)]["expires_at"]) == (
                hold.points, hold.expires_at)

    parameters = "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])"
    before = dict(await container.pool.fetch(parameters, TABLES))
    assert before["balances"] == ["fillfactor=70"]
    await container.pool.execute("ALTER TABLE expiry_lots SET (autovacuum_enabled = true)")
    position = await rebuild(container.pool, container.store, page_size=97)
    assert position == await container.store.head()
    assert await _tables(container) == live
    # The rebuilt tables have the live ones' storage parameters (HOT updates stay HOT).
    after = dict(await container.pool.fetch(parameters, TABLES))
    assert after == {**before, "expiry_lots": ["autovacuum_enabled=true"]}
    # The live runner carries on from the rebuilt tables without applying anything twice.
    await container.ledger.handle(earn("m0", "after-rebuild"))
    await container.project()
    after = await container.pool.fetchval("SELECT available FROM balances WHERE member_id = 'm0'")
    assert after == (await container.ledger.member_state("m0")).balance


async def test_page_size_does_not_change_the_read_models(container: Container) -> None:
    await _history(container, members=15, seed=3)
    await container.project()
    live = await _tables(container)
    await rebuild(container.pool, container.store, page_size=1)
    assert await _tables(container) == live
    # Every member spans several pages, and the members are shared out among processes.
    await rebuild(container.pool, container.store, page_size=1, workers=2, dsn=container.url)
    assert await _tables(container) == live


async def test_a_rebuild_in_worker_processes_equals_the_live_projections(container: Container) -> None:
    await _history(container, members=30, seed=11)
    # Dated away from UTC on a day that is 29 February in UTC: the tier window starts
    # twelve months before the as-of date on the UTC calendar (28 February 2027), not on
    # the event's own (1 March 2027 in UTC), and the rebuild must count it so too.
    new_york = timezone(timedelta(hours=-5))
    await container.ledger.handle_batch([
        earn(f"m{m}", f"leap-{m}", f"{100 * m + 50}.00", at=datetime(2028, 2, 28, 20, m, tzinfo=new_york))
        for m in range(0, 30, 3)
    ])
    await container.project()
    live, indexes = await _tables(container), await _indexes(container)
    head = await container.store.head()
    reported: list[tuple[int, int]] = []
    position = await rebuild(container.pool, container.store, page_size=7, workers=2,
                             dsn=container.url, progress=lambda done, total: reported.append((done, total)))
    assert position == head
    assert await _tables(container) == live
    assert indexes and await _indexes(container) == indexes  # built after the rows were copied
    # Autovacuum, off while the rows were copied, is on again: the storage parameters left
    # are the live tables' (migration 0006).
    assert dict(await container.pool.fetch(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])", list(TABLES)
    )) == {"balances": ["fillfactor=70"], "tier_qualifying": None,
           "expiry_lots": None, "holds": None, "household_members": None, "segment_bookings": None,
           "segment_members": None, "rewards": None, "member_tiers": None, "report_lots": None, "liability_days": ["fillfactor=70"],
           "liability_moments": None,
           "activity_days": ["fillfactor=70"], "member_anniversaries": None,
           "member_profiles": None}
    assert reported[-1] == (head, head)


async def test_a_failed_worker_fails_the_rebuild_and_leaves_the_read_models_alone(container: Container) -> None:
    await _history(container, members=10, seed=13)
    await container.project()
    live = await _tables(container)
    position = await checkpoint(container.pool)
    with pytest.raises(OSError):  # the spawned process cannot connect
        await rebuild(container.pool, container.store, workers=2,
                      dsn="postgresql://nobody@127.0.0.1:1/nowhere")
    assert await _tables(container) == live
    assert await checkpoint(container.pool) == position


async def test_events_appended_during_a_rebuild_are_in_the_rebuilt_tables(container: Container) -> None:
    await _history(container, members=15, seed=5)
    await container.project()
    head = await container.store.head()
    appending: list[asyncio.Future] = []

    def append_while_replaying(done: int, total: int) -> None:
        if not appending:
            appending.append(asyncio.ensure_future(container.ledger.handle_batch(
                [earn(f"m{m}", "during-rebuild", at=T0 + timedelta(days=400)) for m in range(15)]
                + [earn("new-member", "during-rebuild", at=T0 + timedelta(days=400))]
            )))

    # Small pages: the replay yields often, so the appends commit while it runs.
    position = await rebuild(container.pool, container.store, page_size=5, workers=1,
                             progress=append_while_replaying)
    await asyncio.gather(*appending)
    assert head < position == await container.store.head()  # what was appended was caught up on
    assert await checkpoint(container.pool) == position
    rebuilt = await _tables(container)
    for row in rebuilt["balances"]:
        assert row["available"] == (await container.ledger.member_state(row["member_id"])).balance
    assert any(row["member_id"] == "new-member" for row in rebuilt["balances"])
    # The same tables as a rebuild with nothing appended meanwhile.
    await rebuild(container.pool, container.store, page_size=97, workers=1)
    assert await _tables(container) == rebuilt
    await container.project()
    assert await _tables(container) == rebuilt


async def test_expiry_scheduler_expires_what_is_left_once(container: Container) -> None:
    ledger = container.ledger
    await ledger.handle_batch([earn(f"m{i}", "B1", at=T0) for i in range(5)])
    await ledger.handle(redeem("m0", 400, "r0", at=T0 + timedelta(days=1)))
    await container.project()
    later = T0 + timedelta(days=800)
    assert await expire_due(ledger, container.pool, T0 + timedelta(days=30)) == 0
    assert await expire_due(ledger, container.pool, later) == 5
    # Before the projection has caught up the same members are due again: nothing more.
    assert await expire_due(ledger, container.pool, later) == 0
    await container.project()
    assert await expire_due(ledger, container.pool, later) == 0
    rows = await container.pool.fetch("SELECT member_id, available, lifetime_expired FROM balances ORDER BY 1")
    assert [(r["available"], r["lifetime_expired"]) for r in rows] == [(0, 600)] + [(0, 1000)] * 4


@pytest.mark.parametrize("known_rows", [100_000, 3, 0])
async def test_runners_taking_turns_equal_a_rebuild(
        container: Container, known_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two live runners taking turns write what a rebuild writes: across small pages,
    over two years, with pending bookings completed, cancelled and refunded, bookings
    dated before the member's latest, partial refunds and amendments of bookings
    pending and active (of this page or an earlier one), a page that fails, rows the
    runner knows of evicted (3) or none known (0), and a second runner writing some
    pages, after which the first must not trust what it knows."""
    rnd = random.Random(5)
    first, second = (ProjectionRunner(container.pool, container.store, page_size=size,
                                      known_rows_max=known_rows) for size in (7, 3))
    taken = []
    for step in range(9):
        at = T0 + timedelta(days=90 * step)
        pending = [rnd.random() < 0.4 for _ in range(12)]
        batch = [earn(f"m{m}", f"B{step}-{m}", f"{rnd.randint(10, 3000)}.00", pending=pending[m],
                      at=at + timedelta(minutes=m)) for m in range(12)]
        await container.ledger.handle_batch(batch)
        follow = []
        for m in range(12):
            r, member, booking = rnd.random(), f"m{m}", f"B{step}-{m}"
            if pending[m]:  # completed days later (it activates then), or cancelled; amended now and then
                if r < 0.3:
                    follow.append(CommandRequest(AmendBooking(member, at + timedelta(days=1), booking, "amended",
                                                              amount=Decimal(f"{rnd.randint(0, 3000)}.00"))))
                command = (CompleteBooking(member, at + timedelta(days=3), booking, "flight", Decimal("100.00"), "EUR")
                           if r < 0.7 else CancelBooking(member, at + timedelta(days=1), booking))
            else:  # refunded (whole or in part) now and then, or followed by a booking dated months before
                command = RefundBooking(member, at + timedelta(days=5), booking) if r < 0.2 else None
                if 0.2 <= r < 0.4:  # this step's booking, or the last step's (its row on an earlier page)
                    command = AmendBooking(member, at + timedelta(days=5), f"B{step - (r < 0.3)}-{m}", "refunded",
                                           refund_amount=Decimal(f"{rnd.randint(1, 400)}.00"))
                if r > 0.85:
                    follow.append(earn(member, f"late-{step}-{m}", "500.00", at=at - timedelta(days=200)))
            if command is not None:
                follow.append(CommandRequest(command))
        results = await container.ledger.handle_batch(follow)
        assert any(r.status == "applied" for r in results), [(r.status, r.error) for r in results]
        if step == 4:  # a page that fails leaves nothing behind, in the tables or in what the runner knows
            async def failing(*args: object, **kwargs: object) -> None:
                raise OSError("connection lost")

            with monkeypatch.context() as patch:
                patch.setattr("projections.members.MemberProfiles.write", failing)  # the page's last write
                with pytest.raises(OSError):
                    await first.run_once()
            assert first.known.table("member_anniversaries") == {}
        # Pages from either runner, in turns that shift with the step.
        for turn in range(rnd.randint(2, 6)):
            runner = first if (turn + step) % 3 else second
            taken.append(await runner.run_once())
    for runner in (first, second, first):
        await runner.run_until_caught_up()
    # The window's start moves back as the as-of date moves from 28 to 29 February: a row
    # out of the window on the first page counts again on the next.
    for when in ("2027-02-28T06:00", "2027-06-01T00:00", "2027-09-01T00:00", "2028-02-28T12:00",
                 "2028-02-29T01:00"):
        await container.ledger.handle(earn("leap", f"L-{when}", "900.00", at=datetime.fromisoformat(when + "+00:00")))
        await first.run_until_caught_up()
    assert sum(taken) > 0
    amended = [s.event for s in await container.store.read_all(0, 100_000) if isinstance(s.event, BookingAmended)]
    assert any(e.qualifying_points > 0 for e in amended) and any(e.qualifying_points < 0 for e in amended)
    anniversaries = len(first.known.table("member_anniversaries"))
    assert 0 < anniversaries <= known_rows if known_rows else anniversaries == 0
    await container.reports_runner.run_until_caught_up()
    live = await _tables(container)
    await rebuild(container.pool, container.store, page_size=97, workers=1)
    assert await _tables(container) == live
