from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ledger.domain import CompleteBooking, ConfirmBooking, RedeemPoints
from ledger.handlers import CommandRequest

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def earn(member: str, booking: str, amount: str = "100.00", *, pending: bool = False, key: str | None = None,
         at: datetime = T0) -> CommandRequest:
    cls = ConfirmBooking if pending else CompleteBooking
    return CommandRequest(cls(member, at, booking, "flight", Decimal(amount), "EUR"),
                          idempotency_key=key, request_hash=key or "", metadata={"source": "test"})


def redeem(member: str, points: int, rid: str, at: datetime = T0) -> CommandRequest:
    return CommandRequest(RedeemPoints(member, at, rid, points, "reward", "hotel_discount"),
                          idempotency_key=rid, request_hash=rid)
