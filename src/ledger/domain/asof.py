"""A member as of an instant, and a statement between two: pure folds of its events.

The as-of clock is the events' own time, `occurred_at` (the time the domain decides
with: lot dates, tier windows, transfer years), read along the member's stream in the
order its events were recorded. "As of T" is the longest beginning of the stream whose
events all occurred at or before T. So:

- for a stream whose times only go forward (every command the API or a scheduler
  makes, and booking events that arrive in order), it is exactly the events that
  occurred at or before T;
- a back-dated event (a booking system posting a booking dated yesterday) counts from
  its own time when nothing later-dated was on the member's record when it was posted;
  if something was, it counts from the latest time already on the record. An as-of
  answer for T therefore changes only while the member has no event dated after T: once
  one is recorded, the answer for T is fixed for good, which is what lets an auditor
  reproduce a figure.

It is always a beginning of the stream, so the state is one the ledger actually held
(a fold of a subset chosen by date alone could apply a reversal before the earn it
reverses, and fail). Lots past their date at T are left out of what is available at T
(`MemberState.available`), whether or not the expiry job had recorded them by then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from .events import (
    ActivityPointsEarned,
    AnniversaryBonusGranted,
    BookingAmended,
    DebtSettled,
    EarnReversed,
    Event,
    HoldCaptured,
    HoldReleased,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsHeld,
    PointsRedeemed,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
)
from .state import MemberState, evolve, fold


def as_of_prefix(events: Iterable[Event], at: datetime) -> Iterator[Event]:
    """The events (in stream order) that the member's record held as of `at`: up to the
    first that occurred after it."""
    for event in events:
        if event.occurred_at > at:
            return
        yield event


def state_as_of(member_id: str, events: Iterable[Event], at: datetime) -> MemberState | None:
    """The member's state as of `at` (see the module's rule), or None when none of its
    events counts by then (the member did not exist yet)."""
    state = fold(member_id, as_of_prefix(events, at))
    return state if state.exists else None


# What each event's change of the available balance is called in a statement: credits
# when it raises it, debits when it lowers it. A change of a kind the table does not
# expect on that side (none is known) is shown as "other", so that the sums still hold.
_CREDIT_NAMES: dict[type, str] = {
    PointsEarned: "earned", PendingPointsActivated: "earned", BookingAmended: "earned",
    PointsAdjusted: "adjusted", PointsTransferredIn: "transferred_in", RedemptionReversed: "reversed",
    HoldReleased: "released", ActivityPointsEarned: "earned", AnniversaryBonusGranted: "earned",
}
_DEBIT_NAMES: dict[type, str] = {
    PointsRedeemed: "redeemed", PointsRedeemedForHousehold: "redeemed", HoldCaptured: "redeemed",
    PointsHeld: "held", PointsExpired: "expired", DebtSettled: "expired", PointsAdjusted: "adjusted",
    PointsTransferredOut: "transferred_out", EarnReversed: "clawed_back", BookingAmended: "clawed_back",
}
CREDITS = ("earned", "adjusted", "transferred_in", "reversed", "released", "other")
DEBITS = ("redeemed", "held", "expired", "adjusted", "transferred_out", "clawed_back", "other")
OTHER_SOURCE = "other"  # earned points whose rules the events do not tell apart


@dataclass(frozen=True, slots=True)
class Statement:
    """A member's available balance at `start` and at `end`, and every change between,
    named: `opening + sum(credits) - sum(debits) == closing` (`balances`)."""

    member_id: str
    start: datetime
    end: datetime
    opening: int  # available as of `start` (0 for a member who did not exist yet)
    closing: int  # available as of `end`
    credits: dict[str, int] = field(default_factory=dict)  # by CREDITS name, each >= 0
    debits: dict[str, int] = field(default_factory=dict)  # by DEBITS name, each >= 0
    earned_by_source: dict[str, int] = field(default_factory=dict)  # credits["earned"] by rule label
    opening_pending: int = 0
    closing_pending: int = 0
    opening_held: int = 0
    closing_held: int = 0
    events: int = 0  # in the statement's span
    opened: bool = False  # whether the member existed as of `start`
    closed: bool = False  # whether the member existed as of `end`


def balances(statement: Statement) -> bool:
    """The statement's identities: opening + credits - debits = closing, the earned
    credit is the sum of its sources, and no line is negative."""
    lines = [*statement.credits.values(), *statement.debits.values(), *statement.earned_by_source.values()]
    return (statement.opening + sum(statement.credits.values()) - sum(statement.debits.values()) == statement.closing
            and sum(statement.earned_by_source.values()) == statement.credits.get("earned", 0)
            and all(points >= 0 for points in lines))


def statement(member_id: str, events: Iterable[Event], start: datetime, end: datetime) -> Statement:
    """The statement of the member's available balance from `start` to `end` (start <
    end), from its events in stream order. Each event counts from its time on the record
    (the module's rule: its own time, or the latest before it in the stream if later);
    between events, lots reaching their date make the `expired` debit, at their date,
    as the balance as of any instant leaves them out. Every change is measured as the
    difference it makes to `MemberState.available`, so the lines add up by construction
    and the ends are the as-of balances."""
    assert start < end
    events = list(events)
    before = len(list(as_of_prefix(events, start)))
    opening_state = fold(member_id, events[:before])  # in one draft: only the span's changes are measured
    state = opening_state
    credits: Counter[str] = Counter()
    debits: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    moment = start
    count = 0
    for event in as_of_prefix(events[before:], end):
        count += 1
        at = max(moment, event.occurred_at)
        _line(debits, "expired", state.available(moment) - state.available(at))
        after = evolve(state, event)
        change = after.available(at) - state.available(at)
        if change > 0:
            name = _CREDIT_NAMES.get(type(event), "other")
            credits[name] += change
            if name == "earned":
                for label, points in _sources(state, event, change):
                    sources[label] += points
        elif change < 0:
            debits[_DEBIT_NAMES.get(type(event), "other")] -= change
        state, moment = after, at
    _line(debits, "expired", state.available(moment) - state.available(end))
    return Statement(
        member_id, start, end, opening_state.available(start), state.available(end),
        {name: credits[name] for name in CREDITS}, {name: debits[name] for name in DEBITS},
        dict(sorted(sources.items())), opening_state.pending, state.pending, opening_state.held, state.held,
        count, opening_state.exists, state.exists,
    )


def _line(lines: Counter[str], name: str, points: int) -> None:
    assert points >= 0, "the available balance only falls as time passes"
    lines[name] += points


def _sources(before: MemberState, event: Event, points: int) -> list[tuple[str, int]]:
    """The points an earning credited, by the rule labels of the booking's breakdown
    (base, tier bonus, each promotion, first booking), in proportion when the credit is
    not the breakdown's whole sum; exact: the parts add up to `points`."""
    match event:
        case PointsEarned():
            breakdown = event.breakdown
        case PendingPointsActivated():
            breakdown = before.lot(event.lot_id).breakdown
        case BookingAmended() | ActivityPointsEarned() | AnniversaryBonusGranted():
            breakdown = event.breakdown
        case _:
            breakdown = ()
    parts = [(label, part) for label, part in breakdown if part > 0]
    total = sum(part for _, part in parts)
    if total == points:
        return parts
    if total <= 0:
        return [(OTHER_SOURCE, points)]
    # Largest remainders: each rule's share rounded down, the points left over to the
    # largest fractions, so the parts still add up exactly.
    shares = [(label, part * points // total, part * points % total) for label, part in parts]
    left = points - sum(share for _, share, _ in shares)
    order = sorted(range(len(shares)), key=lambda i: -shares[i][2])
    bonus = set(order[:left])
    return [(label, share + (1 if i in bonus else 0)) for i, (label, share, _) in enumerate(shares)]
