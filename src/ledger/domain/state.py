"""Member state and `evolve`, the fold of a member's events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._frozen import fast_init
from .events import (
    DebtSettled,
    EarnReversed,
    Event,
    LotTake,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
)


@fast_init
@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: str
    booking_id: str | None
    points: int
    remaining: int
    status: str  # pending | active | reversed
    expires_at: datetime | None
    qualifying: int = 0  # tier-qualifying points the booking earned
    spent: int = 0  # redeemed or debited from this lot
    expired: int = 0

    def spendable(self, at: datetime) -> bool:
        return self.status == "active" and self.remaining > 0 and self.expires_at is not None and self.expires_at > at


@fast_init
@dataclass(frozen=True, slots=True)
class MemberState:
    member_id: str
    version: int = 0
    lots: dict[str, Lot] = field(default_factory=dict)  # never mutated: evolve copies
    bookings: dict[str, str] = field(default_factory=dict)  # booking id -> lot id
    qualifying: tuple[tuple[str, datetime, int], ...] = ()  # (booking id, earned at, points)
    debt: int = 0  # a shortfall debited as a negative balance

    @property
    def exists(self) -> bool:
        return self.version > 0

    def available(self, at: datetime) -> int:
        """Spendable now: active lots not yet past their date, less any debt they owe."""
        # `Lot.spendable` inlined: the handler asks this after every command, and a
        # method call per lot was most of its cost.
        total = 0
        for lot in self.lots.values():
            if lot.status == "active" and lot.remaining > 0 and lot.expires_at is not None and lot.expires_at > at:
                total += lot.remaining
        return total - self.debt_owed(at)

    def available_and_pending(self, at: datetime) -> tuple[int, int]:
        """`(self.available(at), self.pending)` in one pass over the lots: what the
        handler records after every command."""
        available = pending = 0
        for lot in self.lots.values():
            status = lot.status
            if status == "active":
                if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at > at:
                    available += lot.remaining
            elif status == "pending":
                pending += lot.remaining
        return available - self.debt_owed(at), pending

    def debt_owed(self, at: datetime) -> int:
        """The debt that the spendable points still owe at `at`.

        A debt is paid off by the soonest-expiring points first: when a lot reaches its
        date, what is left of it settles the debt (`DebtSettled`) and only the rest
        expires. Points already past their date that the expiry job has not reached yet
        will settle it that way, so they are counted against the debt now: available is
        the same before and after the job, and the debt is never charged twice."""
        if not self.debt:
            return 0
        overdue = 0
        for lot in self.lots.values():
            if lot.status == "active" and lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= at:
                overdue += lot.remaining
        return max(self.debt - overdue, 0)

    @property
    def balance(self) -> int:
        """Active points still on lots, less debt, whatever their dates (the ledger view
        until the expiry job has run)."""
        return sum(lot.remaining for lot in self.lots.values() if lot.status == "active") - self.debt

    @property
    def pending(self) -> int:
        return sum(lot.remaining for lot in self.lots.values() if lot.status == "pending")

    def spendable_lots(self, at: datetime) -> list[Lot]:
        """In the order redemptions consume them: soonest expiry first."""
        lots = [
            lot for lot in self.lots.values()  # Lot.spendable inlined, as in `available`
            if lot.status == "active" and lot.remaining > 0 and lot.expires_at is not None and lot.expires_at > at
        ]
        lots.sort(key=lambda lot: (lot.expires_at, lot.lot_id))
        return lots

    def qualifying_entries(self) -> list[tuple[datetime, int]]:
        return [(at, points) for _, at, points in self.qualifying]


# Lots and states are built directly rather than through `dataclasses.replace`, which
# inspects the dataclass's fields on every call: every command and every replayed
# event goes through here.


def _taken(lot: Lot, amount: int, spent: bool) -> Lot:
    """The lot after `amount` points were taken from it: spent (redeemed or debited), or
    taken back by a reversal."""
    assert 0 < amount <= lot.remaining, (lot.lot_id, amount, lot.remaining)
    return Lot(
        lot.lot_id, lot.booking_id, lot.points, lot.remaining - amount, lot.status, lot.expires_at, lot.qualifying,
        lot.spent + amount if spent else lot.spent, lot.expired,
    )


def _expired(lot: Lot, points: int) -> Lot:
    return Lot(
        lot.lot_id, lot.booking_id, lot.points, lot.remaining - points, lot.status, lot.expires_at, lot.qualifying,
        lot.spent, lot.expired + points,
    )


def _with_status(lot: Lot, status: str, expires_at: datetime | None) -> Lot:
    return Lot(lot.lot_id, lot.booking_id, lot.points, lot.remaining, status, expires_at, lot.qualifying, lot.spent,
               lot.expired)


def _take(lots: dict[str, Lot], takes: Iterable[LotTake], *, spent: bool) -> dict[str, Lot]:
    lots = dict(lots)
    for lot_id, amount in takes:
        lots[lot_id] = _taken(lots[lot_id], amount, spent)
    return lots


def evolve(state: MemberState, event: Event) -> MemberState:
    """The state after one event. `fold` does the same for many events at once; a
    property test checks that the two agree."""
    version = state.version + 1
    match event:
        case PointsEarned():
            lot = Lot(
                event.lot_id, event.booking_id, event.points, event.points, event.status, event.expires_at,
                event.qualifying_points,
            )
            qualifying = state.qualifying
            if event.status == "active":
                qualifying += ((event.booking_id, event.occurred_at, event.qualifying_points),)
            return MemberState(
                state.member_id, version, {**state.lots, lot.lot_id: lot},
                {**state.bookings, event.booking_id: lot.lot_id}, qualifying, state.debt,
            )
        case PendingPointsActivated():
            lot = _with_status(state.lots[event.lot_id], "active", event.expires_at)
            return MemberState(
                state.member_id, version, {**state.lots, lot.lot_id: lot}, state.bookings,
                state.qualifying + ((event.booking_id, event.occurred_at, event.qualifying_points),), state.debt,
            )
        case PointsRedeemed():
            lots = _take(state.lots, event.lots, spent=True)
            return MemberState(state.member_id, version, lots, state.bookings, state.qualifying, state.debt)
        case PointsExpired():
            lot = _expired(state.lots[event.lot_id], event.points)
            lots = {**state.lots, lot.lot_id: lot}
            return MemberState(state.member_id, version, lots, state.bookings, state.qualifying, state.debt)
        case DebtSettled():
            # Spent, as a redemption's points are: a refund of the lot's booking later takes
            # back what paid the debt as its shortfall, so the debt comes back.
            assert event.points <= state.debt, (event.points, state.debt)
            lot = _taken(state.lots[event.lot_id], event.points, True)
            lots = {**state.lots, lot.lot_id: lot}
            return MemberState(state.member_id, version, lots, state.bookings, state.qualifying,
                               state.debt - event.points)
        case PointsAdjusted():
            if event.points > 0:
                assert event.lot_id is not None
                lot = Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at)
                lots = {**state.lots, lot.lot_id: lot}
            else:
                lots = _take(state.lots, event.lots, spent=True)
            return MemberState(state.member_id, version, lots, state.bookings, state.qualifying, state.debt)
        case EarnReversed():
            lots = _take(state.lots, event.lots, spent=False)
            lot_id = state.bookings[event.booking_id]
            lot = lots[lot_id]
            lots[lot_id] = _with_status(lot, "reversed", lot.expires_at)
            return MemberState(
                state.member_id, version, lots, state.bookings,
                tuple(q for q in state.qualifying if q[0] != event.booking_id),
                state.debt + (event.shortfall if event.shortfall_debited else 0),
            )
    raise AssertionError(f"unknown event {event!r}")


def fold(member_id: str, events: Iterable[Event], state: MemberState | None = None) -> MemberState:
    """`evolve` over `events`, starting from `state` (or a new member).

    What loads a member from its history: rather than a new state, with copies of its
    dictionaries, per event (quadratic in the length of the history), the lots,
    bookings and qualifying entries are kept in mutable locals and frozen once at the
    end. Each case does what the same case of `evolve` does, in the same order (the
    same errors for a broken history, the same dictionary order);
    tests/unit/test_properties.py checks that both give the same state.
    """
    state = state or MemberState(member_id)
    lots, bookings, qualifying = dict(state.lots), dict(state.bookings), list(state.qualifying)
    version, debt = state.version, state.debt
    for event in events:
        version += 1
        match event:
            case PointsEarned():
                lots[event.lot_id] = Lot(
                    event.lot_id, event.booking_id, event.points, event.points, event.status, event.expires_at,
                    event.qualifying_points,
                )
                if event.status == "active":
                    qualifying.append((event.booking_id, event.occurred_at, event.qualifying_points))
                bookings[event.booking_id] = event.lot_id
            case PendingPointsActivated():
                lot = _with_status(lots[event.lot_id], "active", event.expires_at)
                lots[lot.lot_id] = lot
                qualifying.append((event.booking_id, event.occurred_at, event.qualifying_points))
            case PointsRedeemed():
                for lot_id, amount in event.lots:
                    lots[lot_id] = _taken(lots[lot_id], amount, True)
            case PointsExpired():
                lot = _expired(lots[event.lot_id], event.points)
                lots[lot.lot_id] = lot
            case DebtSettled():
                assert event.points <= debt, (event.points, debt)
                lots[event.lot_id] = _taken(lots[event.lot_id], event.points, True)
                debt -= event.points
            case PointsAdjusted():
                if event.points > 0:
                    assert event.lot_id is not None
                    lots[event.lot_id] = Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at)
                else:
                    for lot_id, amount in event.lots:
                        lots[lot_id] = _taken(lots[lot_id], amount, True)
            case EarnReversed():
                for lot_id, amount in event.lots:
                    lots[lot_id] = _taken(lots[lot_id], amount, False)
                lot_id = bookings[event.booking_id]
                lot = lots[lot_id]
                lots[lot_id] = _with_status(lot, "reversed", lot.expires_at)
                qualifying = [q for q in qualifying if q[0] != event.booking_id]
                debt += event.shortfall if event.shortfall_debited else 0
            case _:
                raise AssertionError(f"unknown event {event!r}")
    if version == state.version:
        return state  # no events: the very same state, as evolving nothing gives
    return MemberState(state.member_id, version, lots, bookings, tuple(qualifying), debt)


# Bumped whenever `evolve` (or the state's shape) changes what a history folds to: a
# snapshot in another format is ignored and the member is folded from its events.
SNAPSHOT_FORMAT = 1


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def to_snapshot(state: MemberState) -> dict[str, Any]:
    """A state as JSON-ready data (without its member id and version, kept beside it):
    what `from_snapshot` turns back into an equal state, in the same dictionary order."""
    return {
        "lots": [[lot.lot_id, lot.booking_id, lot.points, lot.remaining, lot.status, _iso(lot.expires_at),
                  lot.qualifying, lot.spent, lot.expired] for lot in state.lots.values()],
        "bookings": list(state.bookings.items()),
        "qualifying": [[booking_id, at.isoformat(), points] for booking_id, at, points in state.qualifying],
        "debt": state.debt,
    }


def from_snapshot(member_id: str, version: int, data: dict[str, Any]) -> MemberState:
    lots = {}
    for lot_id, booking_id, points, remaining, status, expires_at, qualifying, spent, expired in data["lots"]:
        lots[lot_id] = Lot(lot_id, booking_id, points, remaining, status, _moment(expires_at), qualifying, spent, expired)
    return MemberState(
        member_id, version, lots, dict(data["bookings"]),
        tuple((booking_id, datetime.fromisoformat(at), points) for booking_id, at, points in data["qualifying"]),
        data["debt"],
    )
