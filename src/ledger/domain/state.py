"""Member state and `evolve`, the fold of a member's events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from .events import (
    EarnReversed,
    Event,
    LotTake,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
)


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
        """Spendable now: active lots not yet past their date, less any debt."""
        return sum(lot.remaining for lot in self.lots.values() if lot.spendable(at)) - self.debt

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
        lots = [lot for lot in self.lots.values() if lot.spendable(at)]
        lots.sort(key=lambda lot: (lot.expires_at, lot.lot_id))
        return lots

    def qualifying_entries(self) -> list[tuple[datetime, int]]:
        return [(at, points) for _, at, points in self.qualifying]


def _take(lots: dict[str, Lot], takes: Iterable[LotTake], *, spent: bool) -> dict[str, Lot]:
    lots = dict(lots)
    for lot_id, amount in takes:
        lot = lots[lot_id]
        assert 0 < amount <= lot.remaining, (lot_id, amount, lot.remaining)
        lots[lot_id] = replace(lot, remaining=lot.remaining - amount, spent=lot.spent + amount * spent)
    return lots


def evolve(state: MemberState, event: Event) -> MemberState:
    version = state.version + 1
    match event:
        # The two earn cases build their objects directly rather than through
        # `replace`, which inspects the dataclass on every call: they are most of
        # the events a member has, and every command and replay folds them.
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
            old = state.lots[event.lot_id]
            lot = Lot(old.lot_id, old.booking_id, old.points, old.remaining, "active", event.expires_at,
                      old.qualifying, old.spent, old.expired)
            return MemberState(
                state.member_id, version, {**state.lots, lot.lot_id: lot}, state.bookings,
                state.qualifying + ((event.booking_id, event.occurred_at, event.qualifying_points),), state.debt,
            )
        case PointsRedeemed():
            return replace(state, version=version, lots=_take(state.lots, event.lots, spent=True))
        case PointsExpired():
            lot = state.lots[event.lot_id]
            lot = replace(lot, remaining=lot.remaining - event.points, expired=lot.expired + event.points)
            return replace(state, version=version, lots={**state.lots, lot.lot_id: lot})
        case PointsAdjusted():
            if event.points > 0:
                assert event.lot_id is not None
                lot = Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at)
                return replace(state, version=version, lots={**state.lots, lot.lot_id: lot})
            return replace(state, version=version, lots=_take(state.lots, event.lots, spent=True))
        case EarnReversed():
            lots = _take(state.lots, event.lots, spent=False)
            lot_id = state.bookings[event.booking_id]
            lots[lot_id] = replace(lots[lot_id], status="reversed")
            return replace(
                state,
                version=version,
                lots=lots,
                qualifying=tuple(q for q in state.qualifying if q[0] != event.booking_id),
                debt=state.debt + (event.shortfall if event.shortfall_debited else 0),
            )
    raise AssertionError(f"unknown event {event!r}")


def fold(member_id: str, events: Iterable[Event], state: MemberState | None = None) -> MemberState:
    state = state or MemberState(member_id)
    for event in events:
        state = evolve(state, event)
    return state
