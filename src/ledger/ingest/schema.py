"""The booking event a booking system sends, over HTTP or Kafka: one model for both."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from ledger.domain import CancelBooking, Command, CompleteBooking, ConfirmBooking, RefundBooking
from ledger.handlers import CommandRequest, KafkaSource


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(value: str) -> str:
    """Free text (a reason): line breaks and tabs are fine, other control characters not."""
    if _TEXT_CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def Text(max_length: int) -> Any:  # noqa: N802 - a type alias factory
    return Annotated[str, StringConstraints(min_length=1, max_length=max_length), AfterValidator(_text)]


def Identifier(max_length: int) -> Any:  # noqa: N802 - a type alias factory
    return Annotated[str, StringConstraints(min_length=1, max_length=max_length), AfterValidator(_printable)]


_NO_OFFSET = timedelta(0)
OCCURRED_AT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
OCCURRED_AT_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def _plausible(moment: datetime) -> datetime:
    # An offset is under a day, so a local year from 2001 to 2098 is inside the range
    # whatever the offset: the common case needs no offset arithmetic.
    if 2001 <= moment.year <= 2098:
        return moment
    if not OCCURRED_AT_MIN <= moment < OCCURRED_AT_MAX:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return moment


# What the published schema's pattern allows: ASCII digits only (`\d` would also take other
# scripts' digits, which Decimal reads), no sign, exponent, underscore or whitespace.
_AMOUNT = re.compile(r"[0-9]{1,8}(\.[0-9]{1,2})?")


def _decimal_string(value: Any) -> Any:
    # A JSON number may already have lost digits in a client's float; money travels as text.
    if not isinstance(value, str):
        raise ValueError("must be a decimal string such as \"420.00\"")
    if _AMOUNT.fullmatch(value) is None:
        raise ValueError("must be a decimal string of at most 8 digits and 2 decimals, such as \"420.00\"")
    return value


# ISO 4217 codes, read once: a lookup through pycountry costs 0.4 µs per message.
_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)


def _currency(code: str) -> str:
    if code not in _CURRENCIES:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


EventId = Identifier(128)
MemberId = Identifier(64)
BookingId = Identifier(64)
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(le=10_000_000),  # sign, digits and decimals: checked as text by `_decimal_string`
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,8}(\.\d{1,2})?$", "examples": ["420.00"]}),
]
OccurredAt = Annotated[AwareDatetime, AfterValidator(_plausible)]


class BookingEventType(StrEnum):
    confirmed = "booking.confirmed"
    completed = "booking.completed"
    cancelled = "booking.cancelled"
    refunded = "booking.refunded"


class Product(StrEnum):
    flight = "flight"
    hotel = "hotel"
    package = "package"
    rail = "rail"
    car = "car"


class BookingEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{
                "event_id": "bk-20261125-000123-confirmed",
                "type": "booking.confirmed",
                "member_id": "M-1001",
                "booking_id": "BK-000123",
                "product": "flight",
                "amount": "420.00",
                "currency": "EUR",
                "occurred_at": "2026-11-25T09:30:00+01:00",
            }]
        },
    )

    event_id: EventId = Field(description="Unique per source message: the idempotency key.")
    type: BookingEventType
    member_id: MemberId
    booking_id: BookingId
    product: Product
    amount: Amount = Field(description="Decimal string, at most 2 decimals, 0 to 10,000,000.")
    currency: Currency = Field(description="ISO 4217 code.")
    occurred_at: OccurredAt = Field(description="RFC 3339 with offset, between 2000 and 2100.")

    def fingerprint(self) -> str:
        """Same event id with a different body is refused: this is what 'same' means."""
        # The bytes of `model_dump_json()`, without its str round trip: stored hashes
        # were computed over that text, so it must never change.
        return hashlib.sha256(self.__pydantic_serializer__.to_json(self)).hexdigest()

    def to_command(self) -> Command:
        at: datetime = self.occurred_at
        if at.tzinfo is not UTC and at.utcoffset() == _NO_OFFSET:
            # The parser's own UTC zone as the standard library's: the same instant and
            # the same text, and the domain compares it with the UTC times of states
            # read from the store without asking either zone for its offset.
            at = at.replace(tzinfo=UTC)
        match self.type:
            case BookingEventType.confirmed:
                return ConfirmBooking(self.member_id, at, self.booking_id, self.product.value, self.amount, self.currency)
            case BookingEventType.completed:
                return CompleteBooking(self.member_id, at, self.booking_id, self.product.value, self.amount, self.currency)
            case BookingEventType.cancelled:
                return CancelBooking(self.member_id, at, self.booking_id)
            case BookingEventType.refunded:
                return RefundBooking(self.member_id, at, self.booking_id)
        raise AssertionError(self.type)

    def to_request(self, source: str, *, message: KafkaSource | None = None, **metadata: Any) -> CommandRequest:
        """`message`: the Kafka message this event came in (see `KafkaSource`)."""
        return CommandRequest(
            self.to_command(),
            idempotency_key=f"booking-event:{self.event_id}",
            request_hash=self.fingerprint(),
            metadata={"source": source, "causation_id": self.event_id, "correlation_id": self.booking_id, **metadata},
            source=message,
        )
