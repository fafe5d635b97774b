"""Domain events: frozen, past tense, versioned. Never change one once written: a new
shape is a new `version` plus an upcaster in `UPCASTERS`."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from ._frozen import fast_init

LotTake = tuple[str, int]  # (lot id, points taken from it)


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    version: ClassVar[int] = 1
    type: ClassVar[str] = "Event"  # each event class's own name, set below: the store reads it per event
    occurred_at: datetime

    def __init_subclass__(cls) -> None:
        # Not super(): the slotted dataclass is a new class, which the zero-argument form
        # does not know (and object's own hook does nothing).
        cls.type = cls.__name__


@fast_init
@dataclass(frozen=True, slots=True)
class PointsEarned(Event):
    """Version 2 adds the conversion of a booking in a currency the rules have no rate
    for: `fx_rate` (units of `currency` per one unit of the programme currency, from the
    rate set in force at occurred_at) and `converted_amount` (the amount in the
    programme currency that earned, rounded half-even to cents); both None when the
    booking earned at a rate for its own currency, and for every version 1 event.
    It also adds `tier`: the member's tier the decider priced the earn at (its
    multiplier is in `breakdown`), which the reports count the lot's points under.
    Version 1 events upcast to `tier` None: their tier is worked out again from the
    member's qualifying points as they stood, which gives the decider's answer (the
    reports count them under no tier).

    Version 3 (P4, tier policies) adds what the booking counts towards tiers besides its
    points: the hotel `nights` and flight or rail `segments` the booking system sent
    (None when it sent none), and `spend`, the amount in the programme currency when the
    booking's own currency is another one (converted at the rate in force; None when it
    is the programme currency, or no rate was in force). None for every older event."""

    version: ClassVar[int] = 3
    lot_id: str
    booking_id: str
    product: str
    amount: str  # decimal string, as the booking system sent it
    currency: str
    points: int
    qualifying_points: int
    status: Literal["pending", "active"]
    expires_at: datetime | None  # None while pending: expiry runs from activation
    rules_version: str
    breakdown: tuple[tuple[str, int], ...]
    fx_rate: str | None = None
    converted_amount: str | None = None
    tier: str | None = None
    nights: int | None = None
    segments: int | None = None
    spend: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class PendingPointsActivated(Event):
    lot_id: str
    booking_id: str
    points: int
    qualifying_points: int
    expires_at: datetime


@fast_init
@dataclass(frozen=True, slots=True)
class PointsRedeemed(Event):
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    lots: tuple[LotTake, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class PointsExpired(Event):
    lot_id: str
    points: int  # what was still left of the lot


@fast_init
@dataclass(frozen=True, slots=True)
class DebtSettled(Event):
    """A lot reached its date while the member owed points (a debited shortfall): what
    was left of it paid the debt off, up to the debt, instead of expiring. The expiry
    decision settles first and expires (`PointsExpired`) only the rest of the lot."""

    lot_id: str
    points: int  # taken from the lot and off the debt


@fast_init
@dataclass(frozen=True, slots=True)
class PointsAdjusted(Event):
    """Version 2 (P3) adds complaint compensation: the support case (`case_id`), its
    `category` (delay, cancellation, service, other) and the `booking_id` it concerns;
    all None for an adjustment without a case, and for every version 1 event."""

    version: ClassVar[int] = 2
    adjustment_id: str
    points: int  # signed
    reason: str
    actor: str
    lot_id: str | None  # the new lot of a credit
    expires_at: datetime | None  # of that lot
    lots: tuple[LotTake, ...]  # what a debit took
    case_id: str | None = None
    category: str | None = None
    booking_id: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class EarnReversed(Event):
    booking_id: str
    reason: Literal["cancelled", "refunded"]
    points: int  # what the booking earned and is taken back
    lots: tuple[LotTake, ...]  # where it was taken from
    pending_points: int  # of `lots`, taken from pending lots
    qualifying_points: int  # tier-qualifying points withdrawn
    shortfall: int  # already spent, could not be taken back from any lot
    shortfall_debited: bool  # True: the shortfall became a negative balance


@fast_init
@dataclass(frozen=True, slots=True)
class BookingAmended(Event):
    """A booking's amount changed: a partial refund (`refunded`) or an amendment
    (`amended`: a fare difference, an extra night). The points and tier-qualifying
    points move in proportion, rule by rule of what the booking's lot holds now
    (`breakdown`: the signed change per rule), so that partial refunds that add up to
    the booking take back exactly what it earned. A decrease takes from the booking's
    lot (`lots`), and what was already spent is the `shortfall`, as in `EarnReversed`."""

    booking_id: str
    reason: Literal["refunded", "amended"]
    amount: str  # the booking's amount after the change, as a decimal string
    points: int  # signed: earned (+) or taken back (-)
    qualifying_points: int  # signed
    breakdown: tuple[tuple[str, int], ...]  # signed change per rule
    lots: tuple[LotTake, ...]  # a decrease: taken from the booking's lot
    pending_points: int  # of `lots`, taken while the lot was pending
    shortfall: int  # a decrease: already spent or held, could not be taken back
    shortfall_debited: bool


@fast_init
@dataclass(frozen=True, slots=True)
class PointsHeld(Event):
    """Points set aside at checkout, soonest-expiry first: they leave the lots (and
    `available`) until the hold is captured or released."""

    hold_id: str
    points: int
    reward_id: str
    reward_kind: str
    lots: tuple[LotTake, ...]
    expires_at: datetime  # released by the scheduler if not captured by then


@fast_init
@dataclass(frozen=True, slots=True)
class HoldCaptured(Event):
    """Part or all of a hold became a redemption (`redemption_id`), spent from the held
    lots soonest-expiry first, even a lot whose date passed while it was held: a hold
    guarantees its points until it ends. What is left is released by a `HoldReleased`
    in the same command."""

    hold_id: str
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    lots: tuple[LotTake, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class HoldReleased(Event):
    """What was left of a hold went back to its lots. Points whose lot reached its date
    meanwhile come back expired (`expired`); points of a booking taken back meanwhile
    (whose reversal already counted them as spent) are `forfeited`, and pay off the
    member's debt first (`debt_repaid`)."""

    hold_id: str
    reason: Literal["released", "expired", "captured"]
    points: int
    lots: tuple[LotTake, ...]  # back on the lots, spendable
    expired: tuple[LotTake, ...]
    forfeited: tuple[LotTake, ...]
    debt_repaid: int


@fast_init
@dataclass(frozen=True, slots=True)
class RedemptionReversed(Event):
    """Points of a redemption came back to the lots they were taken from, latest expiry
    first, with those lots' own dates: a lot past its date takes them back expired,
    unless the rules' grace period re-grants them on a new lot (`grace_lot_id`), and
    points of a booking taken back meanwhile are `forfeited` (see `HoldReleased`)."""

    redemption_id: str
    reversal_id: str
    points: int
    reason: str
    actor: str
    lots: tuple[LotTake, ...]  # back on the lots, spendable
    expired: tuple[LotTake, ...]
    forfeited: tuple[LotTake, ...]
    debt_repaid: int
    regranted: tuple[LotTake, ...]  # from lots past their date, onto the grace lot
    grace_lot_id: str | None
    expires_at: datetime | None  # of the grace lot


@fast_init
@dataclass(frozen=True, slots=True)
class PointsTransferredOut(Event):
    transfer_id: str
    to_member_id: str
    points: int
    reason: str
    lots: tuple[LotTake, ...]  # taken soonest-expiry first


@fast_init
@dataclass(frozen=True, slots=True)
class PointsTransferredIn(Event):
    """One lot credited by a transfer: a source lot's points with its date and origin
    (one event per source lot)."""

    transfer_id: str
    from_member_id: str
    lot_id: str
    points: int
    expires_at: datetime
    origin_lot_id: str  # the sender's lot
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdCreated(Event):
    """On the household's stream: the household exists, with its head as first member."""

    household_id: str
    head_member_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdMemberAdded(Event):
    """On the household's stream (the member's own records `HouseholdJoined`)."""

    household_id: str
    member_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdMemberRemoved(Event):
    """On the household's stream (the member's own records `HouseholdLeft`)."""

    household_id: str
    member_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdJoined(Event):
    """On the member's stream: it is in the household (a member is in one at most)."""

    household_id: str
    role: Literal["head", "member"]


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdLeft(Event):
    """On the member's stream: it is in no household any more."""

    household_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class HouseholdPointsRedeemed(Event):
    """On the household's stream: a redemption of the pool, and what each member paid
    (`shares`, in the roster's order); each paying member's stream records its part as
    a `PointsRedeemedForHousehold` with the same ids."""

    household_id: str
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    shares: tuple[tuple[str, int], ...]  # (member id, points), the members who paid


@fast_init
@dataclass(frozen=True, slots=True)
class PointsRedeemedForHousehold(Event):
    """On a member's stream: its part of a household redemption, taken from its lots
    soonest-expiry first (the order runs across the household's lots). A reversal
    (`ReverseRedemption` with the same redemption id) returns it to this member."""

    household_id: str
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    lots: tuple[LotTake, ...]


# The reward catalogue. Each reward is a stream of its own (`reward_stream_id`): its
# definition, replaced as a whole by each `RewardDefined`, and one event per unit of
# stock taken or given back, appended in the same transaction as the member's
# redemption or hold (see `ledger.domain.catalogue`). The member's redemption or hold
# of a catalogue reward is the usual `PointsRedeemed` or `PointsHeld` (their shapes are
# unchanged, so every stored event still verifies against its hash), followed in the
# same command by a `CatalogueRewardTaken` with what priced it.


@fast_init
@dataclass(frozen=True, slots=True)
class RewardDefined(Event):
    """A reward of the catalogue created, or its definition replaced as a whole."""

    reward_id: str
    kind: str
    name_en: str
    name_zh_cn: str | None
    points_by_tier: tuple[tuple[str, int], ...]  # (tier, price in points)
    stock: int | None  # units in all, taken ones included; None: unlimited
    available_from: datetime | None
    available_to: datetime | None  # exclusive
    miles_ratio: str | None  # airline miles per point, a decimal string
    partner: str | None  # the airline of a miles reward
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class RewardStockTaken(Event):
    """On the reward's stream: a unit went to a member's redemption or hold."""

    reward_id: str
    member_id: str
    movement: Literal["redemption", "hold"]
    movement_id: str
    tier: str
    points: int
    miles: int | None


@fast_init
@dataclass(frozen=True, slots=True)
class RewardStockReturned(Event):
    """On the reward's stream: a unit taken came back, its hold released or expired, or
    its redemption reversed in full."""

    reward_id: str
    member_id: str
    movement_id: str
    reason: Literal["released", "expired", "reversed"]


@fast_init
@dataclass(frozen=True, slots=True)
class CatalogueRewardTaken(Event):
    """On the member's stream, after the `PointsRedeemed` or `PointsHeld` of the same
    command: the catalogue reward it was for, priced at the member's `tier` then
    (`points`, what the redemption or hold is for), and for airline miles the `miles` at
    the reward's ratio and the `partner` airline."""

    movement: Literal["redemption", "hold"]
    movement_id: str
    reward_id: str
    kind: str
    tier: str
    points: int
    miles: int | None
    partner: str | None


# Members (M2): a member's status, and the merge of a duplicate account into a survivor.
# No free text enters these events: a reason is a code from `STATUS_REASONS` (a note
# typed by an agent may name the member, and the event store keeps it for good).

STATUS_REASONS = ("fraud_review", "customer_request", "duplicate_account", "compliance", "inactivity", "deceased",
                  "review_cleared", "reopened", "other")
MemberStatus = Literal["active", "suspended", "closed"]

# Members (M1): enrolment, profiles and erasure. No personal data in clear: each profile
# field is a value sealed with the member's own data key (see `ledger.crypto`), which
# erasure destroys; the events stay as they are and the hash chains still verify.


@fast_init
@dataclass(frozen=True, slots=True)
class MemberStatusChanged(Event):
    """On the member's stream: its status changed from `from_status` to `to_status`, for
    `reason` (a code of `STATUS_REASONS`), by `actor` (the API key's id)."""

    from_status: str
    to_status: str
    reason: str
    actor: str


@fast_init
@dataclass(frozen=True, slots=True)
class MemberMergedAway(Event):
    """On the duplicate's stream: it was merged into `merged_into` and is closed for good.
    Everything it had left went to the survivor's `MemberMergedIn` of the same command:
    `lots` what was still on each open lot (pending or active), `pending` of it pending,
    `debt` the debt it owed, `qualifying` the bookings whose tier-qualifying points went."""

    merged_into: str
    reason: str
    actor: str
    lots: tuple[LotTake, ...]
    pending: int
    debt: int
    qualifying: tuple[str, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class MemberMergedIn(Event):
    """On the survivor's stream: a duplicate's lots, every one of them (open and closed,
    with their counters, dates and origin, each in `state.lot_row` form), its bookings
    (booking id, lot id), debt, redemptions still reversible (id, points, lots) and the
    catalogue rewards of them (kind, movement id, reward id), so that later
    cancellations, refunds, amendments and reversals of them apply here. Its holds (none
    open: a merge refuses those) stay its own history."""

    from_member_id: str
    reason: str
    actor: str
    moved_lots: tuple[tuple[Any, ...], ...]
    bookings: tuple[tuple[str, str], ...]
    debt: int
    redemptions: tuple[tuple[Any, ...], ...]
    catalogue: tuple[tuple[str, str, str], ...]


# P4, tier policies. The tier in force is the member's, on its own stream: an upgrade in
# the command of the earn (or activation) that qualifies for it, right after that
# event; a downgrade, one tier at a time, and its warning from the tier review
# (`ledger.domain.tierpolicy`, run by the tier scheduler).


@fast_init
@dataclass(frozen=True, slots=True)
class TierChanged(Event):
    """The tier in force changed from `from_tier` to `to_tier`, why: the `criterion` the
    member had (`value`) against the tier's `threshold` (an upgrade: the one that
    qualified; a downgrade: the nearest to the tier lost), under `rules_version`.
    `evaluation_at`: the evaluation date of a downgrade; None for an upgrade."""

    from_tier: str
    to_tier: str
    direction: Literal["upgrade", "downgrade"]
    criterion: str
    value: str  # a decimal string
    threshold: str
    rules_version: str
    evaluation_at: datetime | None


@fast_init
@dataclass(frozen=True, slots=True)
class TierWarning(Event):
    """The member does not qualify for `tier` (in force) now: unless it does by
    `downgrade_at` (the evaluation date `evaluation_at` plus the grace days), it drops
    to `to_tier` then."""

    tier: str
    to_tier: str
    evaluation_at: datetime
    downgrade_at: datetime
    rules_version: str


@fast_init
@dataclass(frozen=True, slots=True)
class MemberEnrolled(Event):
    """The member enrolled, with the profile fields given (each sealed, or None when not
    given) and their marketing consent (a flag, no personal data)."""

    actor: str
    name: str | None
    email: str | None
    phone: str | None
    country: str | None
    locale: str | None
    birth_date: str | None
    marketing_consent: bool


@fast_init
@dataclass(frozen=True, slots=True)
class MemberProfileChanged(Event):
    """Profile fields changed (a merge patch): each field is None when unchanged, "" when
    removed, else its new value sealed; `marketing_consent` None when unchanged."""

    actor: str
    name: str | None
    email: str | None
    phone: str | None
    country: str | None
    locale: str | None
    birth_date: str | None
    marketing_consent: bool | None


@fast_init
@dataclass(frozen=True, slots=True)
class MemberErased(Event):
    """The member's data key was destroyed (an erasure request): every sealed field of
    theirs, in any event, snapshot or read model, is unreadable from here on."""

    actor: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        PointsEarned, PendingPointsActivated, PointsRedeemed, PointsExpired, PointsAdjusted, EarnReversed, DebtSettled,
        BookingAmended, PointsHeld, HoldCaptured, HoldReleased, RedemptionReversed, PointsTransferredOut,
        PointsTransferredIn, HouseholdCreated, HouseholdMemberAdded, HouseholdMemberRemoved, HouseholdJoined,
        HouseholdLeft, HouseholdPointsRedeemed, PointsRedeemedForHousehold, RewardDefined, RewardStockTaken,
        RewardStockReturned, CatalogueRewardTaken,
        # Members (M2)
        MemberStatusChanged, MemberMergedAway, MemberMergedIn,
        # Tier policies (P4)
        TierChanged, TierWarning,
        # Members (M1)
        MemberEnrolled, MemberProfileChanged, MemberErased,
    )
}

# (type, stored version) -> function turning that version's data into the next one's.
UPCASTERS: dict[tuple[str, int], Any] = {
    ("PointsEarned", 1): lambda data: {**data, "fx_rate": None, "converted_amount": None, "tier": None},
    ("PointsEarned", 2): lambda data: {**data, "nights": None, "segments": None, "spend": None},
    ("PointsAdjusted", 1): lambda data: {**data, "case_id": None, "category": None, "booking_id": None},
}
# (type, version) -> the data of the version before, for what an upcast event was stored
# as: the hash chain covers the stored bytes, so a verifier hashes the stored shape.
DOWNCASTERS: dict[tuple[str, int], Any] = {
    ("PointsEarned", 2): lambda data: {k: v for k, v in data.items() if k not in ("fx_rate", "converted_amount", "tier")},
    ("PointsEarned", 3): lambda data: {k: v for k, v in data.items() if k not in ("nights", "segments", "spend")},
    ("PointsAdjusted", 2): lambda data: {k: v for k, v in data.items() if k not in ("case_id", "category", "booking_id")},
}

_DATETIME_FIELDS = ("occurred_at", "expires_at", "available_from", "available_to", "evaluation_at", "downgrade_at",
                    "since")
PAIR_FIELDS = ("lots", "breakdown", "expired", "forfeited", "regranted", "shares", "points_by_tier", "counted")


@functools.cache
def _field_names(cls: type[Event]) -> tuple[str, ...]:
    # dataclasses.fields() rebuilds its answer on every call; the store and the
    # projections convert every event, so the names are looked up once per class.
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_data_reference(event: Event) -> dict[str, Any]:
    """`to_data` spelt out for any event: what the generated encoders must match."""
    data: dict[str, Any] = {}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name in PAIR_FIELDS:
            value = [list(pair) for pair in value]
        data[name] = value
    return data


def _make_encoder(cls: type[Event]) -> Callable[[Event], dict[str, Any]]:
    """`_to_data_reference` for one class, as one generated dict display: the store
    encodes every event it appends, and a loop over the fields with getattr and
    isinstance per field cost twice as much. Only the fields annotated as datetimes
    are checked for one (a well-typed event holds no datetime anywhere else)."""
    items = []
    for f in dataclasses.fields(cls):
        value = f"event.{f.name}"
        if "datetime" in str(f.type):
            value = f"(_v.isoformat() if isinstance(_v := {value}, datetime) else _v)"
        elif f.name in PAIR_FIELDS:
            value = f"[list(pair) for pair in {value}]"
        items.append(f"{f.name!r}: {value}")
    source = f"def encode(event):\n    return {{{', '.join(items)}}}\n"
    namespace: dict[str, Any] = {"datetime": datetime}
    exec(source, namespace)  # noqa: S102 - generated from the field names only
    return namespace["encode"]


_ENCODERS: dict[type, Callable[[Event], dict[str, Any]]] = {}


def to_data(event: Event) -> dict[str, Any]:
    """The JSON body of an event; the inverse of `from_data`."""
    encode = _ENCODERS.get(event.__class__)
    if encode is None:
        encode = _ENCODERS[event.__class__] = _make_encoder(event.__class__)
    return encode(event)


def stored_data(event: Event, version: int) -> dict[str, Any]:
    """The body of `event` as it was stored at schema `version` (older than or equal to
    its class's): what its hash covers, for an event read back through upcasters."""
    data = to_data(event)
    for v in range(event.version, version, -1):
        data = DOWNCASTERS[(event.type, v)](data)
    return data


@functools.cache
def _decoding(cls: type[Event]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The datetime fields and the pair fields of an event class."""
    names = _field_names(cls)
    return tuple(n for n in _DATETIME_FIELDS if n in names), tuple(n for n in PAIR_FIELDS if n in names)


_fromisoformat = datetime.fromisoformat


def _from_data_reference(cls: type[Event], data: dict[str, Any]) -> Event:
    """Current-version data to an event, spelt out: what the generated decoders must
    match, and what decides (and raises) for any data they do not expect."""
    kwargs = dict(data)
    datetimes, pairs = _decoding(cls)
    for name in datetimes:
        value = kwargs.get(name)
        if value is not None:
            kwargs[name] = _fromisoformat(value)
    for name in pairs:
        if name in kwargs:
            kwargs[name] = tuple([(str(a), int(b)) for a, b in kwargs[name]])
    return cls(**kwargs)


def _make_decoder(cls: type[Event]) -> Callable[[dict[str, Any]], Event]:
    """`_from_data_reference` for one class and data with exactly its fields, as one
    generated function: no copy of the dict, no keyword arguments. The conversions run
    in the reference's order (datetimes, then pairs), so they fail the same way."""
    names = _field_names(cls)
    assert not {"data", "cls", "a", "b"} & set(names), "a field would shadow a name the decoder uses"
    datetimes, pairs = _decoding(cls)
    lines = [f"    if type(data) is not dict or len(data) != {len(names)}:\n        raise KeyError\n"]
    for name in datetimes:
        lines.append(
            f"    {name} = data[{name!r}]\n    if {name} is not None:\n        {name} = _fromisoformat({name})\n"
        )
    for name in pairs:
        lines.append(f"    {name} = tuple([(str(a), int(b)) for a, b in data[{name!r}]])\n")
    args = ", ".join(name if name in datetimes or name in pairs else f"data[{name!r}]" for name in names)
    source = f"def decode(data):\n{''.join(lines)}    return cls({args})\n"
    namespace: dict[str, Any] = {"cls": cls, "_fromisoformat": _fromisoformat}
    exec(source, namespace)  # noqa: S102 - generated from the field names only
    return namespace["decode"]


_DECODERS: dict[type, Callable[[dict[str, Any]], Event]] = {cls: _make_decoder(cls) for cls in EVENT_TYPES.values()}


def _tuples(value: Any) -> Any:
    """JSON's nested lists back into the tuples the event was made with."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _nested_decoder(cls: type[Event]) -> Callable[[dict[str, Any]], Event]:
    # Their records nest (a lot's row holds its breakdown): the generated decoder leaves
    # them lists, and the event must equal the one decided.
    flat = _DECODERS[cls]
    names = _field_names(cls)[1:]

    def decode(data: dict[str, Any]) -> Event:
        event = flat(data)
        return cls(event.occurred_at, *(_tuples(getattr(event, name)) for name in names))

    return decode


_DECODERS[MemberMergedIn] = _nested_decoder(MemberMergedIn)
_DECODERS[MemberMergedAway] = _nested_decoder(MemberMergedAway)


def from_data(type_name: str, version: int, data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[type_name]
    while version < cls.version:
        data = UPCASTERS[(type_name, version)](data)
        version += 1
    try:
        return _DECODERS[cls](data)
    except Exception:  # noqa: BLE001, S110
        # Data the generated decoder does not expect (a missing or unknown key, a value
        # that does not convert): the reference decides, so the outcome and any error
        # are exactly what they always were. It runs outside this handler so that its
        # error does not carry the decoder's as its context.
        pass
    return _from_data_reference(cls, data)


# P3, earn beyond bookings: activities, referrals, anniversaries and earn caps (see
# `ledger.domain.earn`). A breakdown entry `cap:<source>:<period>` is negative: the
# points the cap withheld, so that a breakdown still adds up to the points.


@fast_init
@dataclass(frozen=True, slots=True)
class ActivityPointsEarned(Event):
    """An activity of the member's (a share, a review, a survey, a referral), with what
    it earned under `rules_version`: `points` on the lot `lot_id` (None, with no date,
    when it earned nothing: a share of a trip already rewarded, no rule, or capped).
    A referral appends one to each member: the referrer's (`role` "referrer") and the
    referred member's ("referred"), each naming the other (`counterpart_member_id`)."""

    activity_id: str
    activity_type: str
    role: Literal["member", "referrer", "referred"]
    channel: str | None
    booking_id: str | None
    counterpart_member_id: str | None
    points: int
    lot_id: str | None
    expires_at: datetime | None
    rules_version: str
    breakdown: tuple[tuple[str, int], ...]


@fast_init
@dataclass(frozen=True, slots=True)
class AnniversaryBonusGranted(Event):
    """The `year`-th anniversary of the member's first activity (`since`), granted once,
    at the anniversary instant (`occurred_at`), under the rules in force then."""

    year: int
    since: datetime
    points: int
    lot_id: str | None
    expires_at: datetime | None
    rules_version: str
    breakdown: tuple[tuple[str, int], ...]


@fast_init
@dataclass(frozen=True, slots=True)
class BookingEarnCounted(Event):
    """After a booking's `PointsEarned` while a cap on a part of a booking's earn is in
    force: the points each capped source granted, by calendar month (UTC), as
    `(source@YYYY-MM, points)`, for the member's cap counters."""

    booking_id: str
    counted: tuple[tuple[str, int], ...]


for _cls in (ActivityPointsEarned, AnniversaryBonusGranted, BookingEarnCounted):
    EVENT_TYPES[_cls.__name__] = _cls
    _DECODERS[_cls] = _make_decoder(_cls)
