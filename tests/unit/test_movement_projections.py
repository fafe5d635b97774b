"""The read models of any history with movements (holds, reversals of redemptions,
transfers, partial refunds and amendments) are the fold's, as a rebuild's replay makes
them, and every balances row keeps the identity `projections.balances` states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    ExpireHolds,
    ExpirePoints,
    LedgerError,
    MemberState,
    PlaceHold,
    ProgramRules,
    RedeemPoints,
    RefundBooking,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
    decide_streams,
    fold,
)
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.store import StoredEvent
from projections.balances import COLUMNS as BALANCE_COLUMNS
from projections.models import ReadModels

MEMBERS = ("m", "n")
START = datetime(2025, 12, 1, tzinfo=UTC)
RULES = {negative: ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative,
                                           "return_grace_days": 30}) for negative in (False, True)}
bookings = st.sampled_from(["B0", "B1", "B2", "B3"])


@st.composite
def commands(draw: st.DrawFn) -> list:
    """Commands of two members; captures, releases and reversals name a hold or a
    redemption of the history drawn so far (when there is one), so that most apply."""
    # Both members start with points (hotel bookings of 1,000 EUR), for most holds to fit.
    at, out = START, [CompleteBooking(m, START, "B0", "hotel", Decimal(1000), "EUR") for m in MEMBERS]
    placed: list[tuple[str, str]] = []  # (member, hold id)
    spent: list[tuple[str, str]] = []  # (member, redemption id)
    for i in range(draw(st.integers(1, 40))):
        member, other = draw(st.sampled_from([MEMBERS, MEMBERS[::-1]]))
        kind = draw(st.sampled_from(["confirm", "complete", "complete", "cancel", "refund", "redeem", "expire",
                                     "adjust", "hold", "hold", "capture", "capture", "release", "expire_holds",
                                     "reverse", "transfer", "amend", "part_refund"]))
        # A capture or a release mostly comes before the hold's time is up.
        days = [0, 1] if kind in ("capture", "release") else [0, 0, 1, 20, 200, 400]
        at += timedelta(days=draw(st.sampled_from(days)), minutes=draw(st.integers(0, 600)))
        amount = draw(st.decimals(min_value=0, max_value=3000, places=2).map(Decimal))
        points = draw(st.integers(1, 4000))
        match kind:
            case "confirm":
                out.append(ConfirmBooking(member, at, draw(bookings), "flight", amount, "EUR"))
            case "complete":
                out.append(CompleteBooking(member, at, draw(bookings), "hotel", amount, "EUR"))
            case "cancel":
                out.append(CancelBooking(member, at, draw(bookings)))
            case "refund":
                out.append(RefundBooking(member, at, draw(bookings)))
            case "redeem":
                out.append(RedeemPoints(member, at, f"R{i}", points, "rw", "miles"))
                spent.append((member, f"R{i}"))
            case "expire":
                out.append(ExpirePoints(member, at, draw(st.sampled_from([1, 1_000]))))
            case "adjust":
                out.append(AdjustPoints(member, at, f"A{i}", draw(st.sampled_from([-1, 1])) * points, "goodwill",
                                        "support"))
            case "hold":
                out.append(PlaceHold(member, at, f"H{i}", points // 2 + 1, "rw", "hotel",
                                     at + timedelta(days=draw(st.sampled_from([1, 30, 800])))))
                placed.append((member, f"H{i}"))
            case "capture" if placed:
                member, hold = draw(st.sampled_from(placed))
                out.append(CaptureHold(member, at, hold, f"C{i}", draw(st.integers(1, 1500))))
                spent.append((member, f"C{i}"))
            case "release" if placed:
                member, hold = draw(st.sampled_from(placed))
                out.append(ReleaseHold(member, at, hold))
            case "expire_holds":
                out.append(ExpireHolds(member, at, draw(st.sampled_from([1, 1_000]))))
            case "reverse" if spent:
                member, redemption = draw(st.sampled_from(spent))
                out.append(ReverseRedemption(member, at, redemption, f"V{i}",
                                             draw(st.none() | st.integers(1, 3000)), "complaint", "support"))
            case "transfer":
                out.append(TransferPoints(member, at, f"T{i}", other, max(points, 100), "gift"))
            case "amend":
                out.append(AmendBooking(member, at, draw(bookings), "amended", amount=amount))
            case "part_refund":
                out.append(AmendBooking(member, at, draw(bookings), "refunded", refund_amount=amount))
    return out


def run(cmds: list, rules: ProgramRules) -> dict[str, list]:
    states = {m: MemberState(m) for m in MEMBERS}
    streams: dict[str, list] = {m: [] for m in MEMBERS}
    for command in cmds:
        try:
            decided = decide_streams(states, command, rules)
        except LedgerError:
            continue
        for m, events in decided.items():
            states[m] = fold(m, events, states[m])
            streams[m] += events
    return streams


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands(), st.booleans())
def test_a_replay_of_any_history_of_movements_gives_the_fold(cmds: list, negative_allowed: bool) -> None:
    streams = run(cmds, RULES[negative_allowed])
    models = ReadModels()
    for m in MEMBERS:
        for version, event in enumerate(streams[m], 1):
            models.apply(StoredEvent(version, m, version, event, {}, START, b""))
    tables = models.completed()
    for m in MEMBERS:
        stream = streams[m]
        if not stream:
            continue
        state = fold(m, stream)
        (row,) = [dict(zip(BALANCE_COLUMNS, r, strict=True)) for r in tables["balances"] if r[0] == m]
        assert (row["available"], row["pending"], row["held"], row["debt"]) == (
            state.balance, state.pending, state.held, state.debt)
        reversed_pending = sum(e.pending_points for e in stream if isinstance(e, EarnReversed | BookingAmended))
        settled = sum(e.points for e in stream if isinstance(e, DebtSettled))
        assert row["available"] + row["held"] == (
            row["lifetime_earned"] + row["lifetime_adjusted"] + row["lifetime_transferred_in"]
            - row["lifetime_redeemed"] - row["lifetime_expired"] - row["lifetime_transferred_out"]
            - (row["lifetime_reversed"] - reversed_pending) - (row["debt"] + settled))
        lots = {r[1]: r for r in tables["expiry_lots"] if r[0] == m}
        assert {lot_id: r[4] for lot_id, r in lots.items()} == {
            lot_id: lot.remaining for lot_id, lot in state.all_lots().items()}
        assert {lot_id: lots[lot_id][2] for lot_id in state.lots} == {
            lot_id: lot.status for lot_id, lot in state.lots.items()}
        assert {r[1]: r[4] for r in tables["holds"] if r[0] == m} == {
            **{h: "open" for h in state.holds}, **dict(state.holds_closed)}
        # A booking that qualified for nothing (an amount of 0) keeps a row of 0 when taken back.
        assert sorted((r[2], r[3]) for r in tables["tier_qualifying"] if r[0] == m and r[3]) == sorted(
            (at, points) for at, points in state.qualifying_entries() if points)

