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
    nights: int | None = None  # P4: hotel nights, flight or rail segments, as the booking system sent them
    segments: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class CompleteBooking(Command):
    """The trip was completed: pending points activate (or are earned active if the
    confirmation never reached us)."""

    booking_id: str
    product: str
    amount: Decimal
    currency: str
    nights: int | None = None  # P4: hotel nights, flight or rail segments, as the booking system sent them
    segments: int | None = None


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
    # P3, complaint compensation: the support case, its category and the booking concerned.
    case_id: str | None = None
    category: str | None = None
    booking_id: str | None = None


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
    """`reward_streams`: the stream of the catalogue reward the hold is for (see
    `reward_stream_id`), whose unit of stock comes back with it; () for a free-form one."""

    hold_id: str
    reward_streams: tuple[str, ...] = ()

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, *self.reward_streams)


@fast_init
@dataclass(frozen=True, slots=True)
class ExpireHolds(Command):
    """Release the member's holds whose `expires_at` is at or before `occurred_at`, at
    most `holds_max` of them (the scheduler's command)."""

    holds_max: int = 1_000
    # The streams of the catalogue rewards of the due holds: a catalogue hold whose
    # reward's stream is not read here is left for a command that reads it.
    reward_streams: tuple[str, ...] = ()

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, *self.reward_streams)


@fast_init
@dataclass(frozen=True, slots=True)
class ReverseRedemption(Command):
    redemption_id: str
    reversal_id: str
    points: int | None  # None: all that is not reversed yet
    reason: str
    actor: str
    reward_streams: tuple[str, ...] = ()  # the catalogue reward's stream, as `ReleaseHold`'s

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, *self.reward_streams)


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


HOUSEHOLD_STREAM_PREFIX = "household/"


def household_stream_id(household_id: str) -> str:
    """The stream of a household: `/` is outside the member id grammar, so a household's
    stream can never be a member's."""
    return f"{HOUSEHOLD_STREAM_PREFIX}{household_id}"


def is_household_stream(stream_id: str) -> bool:
    return stream_id.startswith(HOUSEHOLD_STREAM_PREFIX)


@fast_init
@dataclass(frozen=True, slots=True)
class CreateHousehold(Command):
    """A household pool with `head_member_id` as its head and first member; `member_id`
    is the household's stream (`household_stream_id(household_id)`)."""

    household_id: str
    head_member_id: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.head_member_id)


@fast_init
@dataclass(frozen=True, slots=True)
class AddHouseholdMember(Command):
    """`household_member_id` joins the household (nothing to do if it is in already)."""

    household_id: str
    household_member_id: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.household_member_id)


@fast_init
@dataclass(frozen=True, slots=True)
class RemoveHouseholdMember(Command):
    household_id: str
    household_member_id: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.household_member_id)


@fast_init
@dataclass(frozen=True, slots=True)
class RedeemForHousehold(Command):
    """Points from the lots of every member of the household, soonest expiry first across
    all of them, in one transaction. `roster` is the household's members as the sender
    read them (head first): the command reads those streams, and is refused (retryably)
    if a member joined since; one who left since is left out."""

    household_id: str
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    roster: tuple[str, ...]

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, *self.roster)


REWARD_STREAM_PREFIX = "reward/"


def reward_stream_id(reward_id: str) -> str:
    """The stream of a catalogue reward: `/` is outside the member id grammar, as for households."""
    return f"{REWARD_STREAM_PREFIX}{reward_id}"


def is_reward_stream(stream_id: str) -> bool:
    return stream_id.startswith(REWARD_STREAM_PREFIX)


@fast_init
@dataclass(frozen=True, slots=True)
class DefineReward(Command):
    """Create or replace a catalogue reward; `member_id` is its stream (`reward_stream_id`)."""

    reward_id: str
    kind: str
    name_en: str
    name_zh_cn: str | None
    points_by_tier: tuple[tuple[str, int], ...]
    stock: int | None
    available_from: datetime | None
    available_to: datetime | None
    miles_ratio: Decimal | None
    partner: str | None
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class RedeemReward(Command):
    """Redeem a unit of a catalogue reward at the price of the member's tier now."""

    redemption_id: str
    reward_id: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, reward_stream_id(self.reward_id))


@fast_init
@dataclass(frozen=True, slots=True)
class HoldReward(Command):
    """Hold a unit of a catalogue reward and its price until `expires_at`."""

    hold_id: str
    reward_id: str
    expires_at: datetime

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, reward_stream_id(self.reward_id))


# Members (M2): status and merges.
# P4, tier policies.


@fast_init
@dataclass(frozen=True, slots=True)
class ChangeMemberStatus(Command):
    """Suspend, close or reactivate a member; `reason` is a code of `STATUS_REASONS`."""

    status: str
    reason: str
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class MergeMembers(Command):
    """Merge `duplicate_id` into the member (the survivor): its lots, pending points,
    bookings and tier-qualifying history move here, and it is closed for good."""

    duplicate_id: str
    reason: str
    actor: str

    @property
    def member_ids(self) -> tuple[str, ...]:
        return (self.member_id, self.duplicate_id)
class ReviewTier(Command):
    """Review the member's tier in force at `occurred_at` (the tier scheduler's command):
    a downgrade of one tier if an evaluation date (plus the grace days) has passed since
    the last change and the member did not qualify then, or a warning when one is near
    (see `ledger.domain.tierpolicy.review`). Appends nothing when neither is due."""
