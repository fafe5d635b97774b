"""Commands: imperative, carrying their time (`occurred_at`) and ids as data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ._frozen import fast_init

EXPIRE_LOTS_MAX = 1_000  # lots one ExpirePoints command takes at most, by default


@fast_init
@dataclass(frozen=True, slots=True)
class Command:
    member_id: str
    occurred_at: datetime

    @property
    def member_ids(self) -> tuple[str, ...]:
        """Every member whose state the command reads (its own first): the ledger loads
        them all before `decide_streams`. A command across members (a transfer) names
        the others too."""
        return (self.member_id,)


@fast_init
@dataclass(frozen=True, slots=True)
class ConfirmBooking(Command):
    """A booking was confirmed: its points are earned as pending until the trip is completed."""

    booking_id: str
    product: str
    amount: Decimal
    currency: str


@fast_init
@dataclass(frozen=True, slots=True)
class CompleteBooking(Command):
    """The trip was completed: pending points activate (or are earned active if the
    confirmation never reached us)."""

    booking_id: str
    product: str
    amount: Decimal
    currency: str


@fast_init
@dataclass(frozen=True, slots=True)
class CancelBooking(Command):
    booking_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class RefundBooking(Command):
    booking_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class RedeemPoints(Command):
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str


@fast_init
@dataclass(frozen=True, slots=True)
class AdjustPoints(Command):
    adjustment_id: str
    points: int
    reason: str
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class ExpirePoints(Command):
    """Expire what is left of the lots whose date is at or before `occurred_at`: the
    `lots_max` soonest of them, so that one command's events stay bounded (at most
    `lots_max + 1`: one lot may be split between a settled debt and its expiry). A
    member with more lots due takes several commands, each going on where the last
    stopped."""

    lots_max: int = EXPIRE_LOTS_MAX


@fast_init
@dataclass(frozen=True, slots=True)
class AmendBooking(Command):
    """The booking's amount changed: a partial refund of `refund_amount`
    (`reason="refunded"`, several add up to at most the booking) or an amendment to the
    new `amount` (`reason="amended"`). Exactly one of the two amounts is given."""

    booking_id: str
    reason: str  # refunded | amended
    amount: Decimal | None = None  # the new amount of an amendment
    refund_amount: Decimal | None = None  # what a partial refund gives back
    currency: str | None = None  # of the amounts: the booking's, or the change is refused


@fast_init
@dataclass(frozen=True, slots=True)
class PlaceHold(Command):
    hold_id: str
    points: int
    reward_id: str
    reward_kind: str
    expires_at: datetime


@fast_init
@dataclass(frozen=True, slots=True)
class CaptureHold(Command):
    hold_id: str
    redemption_id: str
    points: int  # at most what is held; the rest is released


@fast_init
@dataclass(frozen=True, slots=True)
class ReleaseHold(Command):
    hold_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class ExpireHolds(Command):
    """Release the member's holds whose `expires_at` is at or before `occurred_at`, at
    most `holds_max` of them (the scheduler's command)."""

    holds_max: int = 1_000


@fast_init
@dataclass(frozen=True, slots=True)
class ReverseRedemption(Command):
    redemption_id: str
    reversal_id: str
    points: int | None  # None: all that is not reversed yet
    reason: str
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class TransferPoints(Command):
    """From `member_id` to `to_member_id`, both streams in one transaction."""

    transfer_id: str
    to_member_id: str
    points: int
    reason: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.to_member_id)
