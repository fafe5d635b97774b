"""Domain events: frozen, past tense, versioned. Never change one once written: a new
shape is a new `version` plus an upcaster in `UPCASTERS`."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

LotTake = tuple[str, int]  # (lot id, points taken from it)


@dataclass(frozen=True, slots=True)
class Event:
    version: ClassVar[int] = 1
    occurred_at: datetime

    @property
    def type(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class PointsEarned(Event):
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


@dataclass(frozen=True, slots=True)
class PendingPointsActivated(Event):
    lot_id: str
    booking_id: str
    points: int
    qualifying_points: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PointsRedeemed(Event):
    redemption_id: str
    points: int
    reward_id: str
    reward_kind: str
    lots: tuple[LotTake, ...]


@dataclass(frozen=True, slots=True)
class PointsExpired(Event):
    lot_id: str
    points: int  # what was still left of the lot


@dataclass(frozen=True, slots=True)
class PointsAdjusted(Event):
    adjustment_id: str
    points: int  # signed
    reason: str
    actor: str
    lot_id: str | None  # the new lot of a credit
    expires_at: datetime | None  # of that lot
    lots: tuple[LotTake, ...]  # what a debit took


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


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (PointsEarned, PendingPointsActivated, PointsRedeemed, PointsExpired, PointsAdjusted, EarnReversed)
}

# (type, stored version) -> function turning that version's data into the next one's.
UPCASTERS: dict[tuple[str, int], Any] = {}

_DATETIME_FIELDS = ("occurred_at", "expires_at")
_PAIR_FIELDS = ("lots", "breakdown")


@functools.cache
def _field_names(cls: type[Event]) -> tuple[str, ...]:
    # dataclasses.fields() rebuilds its answer on every call; the store and the
    # projections convert every event, so the names are looked up once per class.
    return tuple(f.name for f in dataclasses.fields(cls))


def to_data(event: Event) -> dict[str, Any]:
    """The JSON body of an event; the inverse of `from_data`."""
    data: dict[str, Any] = {}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name in _PAIR_FIELDS:
            value = [list(pair) for pair in value]
        data[name] = value
    return data


@functools.cache
def _decoding(cls: type[Event]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The datetime fields and the pair fields of an event class."""
    names = _field_names(cls)
    return tuple(n for n in _DATETIME_FIELDS if n in names), tuple(n for n in _PAIR_FIELDS if n in names)


_fromisoformat = datetime.fromisoformat


def from_data(type_name: str, version: int, data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[type_name]
    while version < cls.version:
        data = UPCASTERS[(type_name, version)](data)
        version += 1
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
