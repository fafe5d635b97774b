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
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from ledger.domain import AmendBooking, CancelBooking, Command, CompleteBooking, ConfirmBooking, RefundBooking
from ledger.handlers import CommandRequest, KafkaSource


# Every id on HTTP and Kafka (member, booking, event, reward) is a system identifier,
# not a name a person types: one ASCII grammar for all of them. ASCII refuses every
# look-alike by construction (U+2011 for '-', full-width letters, zero-width spaces,
# bidi overrides, NFC/NFD pairs), and starting with a letter or digit refuses "." and
# "..". Nothing is normalised: folding "Ｍ-1" (NFKC) or a decomposed "é" (NFC) into
# another id would merge two senders' members, or split one id across two spellings
# whose hashes and idempotency keys differ, so a non-ASCII id is refused, never mapped.
# No '/', '?', '#', '%' or whitespace either: every id accepted here is reachable as one
# path segment of /v1/members/{member_id}/..., unescaped.
ID_CHARS = "A-Za-z0-9._:@+-"
ID_RULE = "letters A-Z a-z, digits and . _ : @ + - (ASCII only), starting with a letter or digit"


def id_pattern(max_length: int) -> str:
    return f"^[A-Za-z0-9][{ID_CHARS}]{{0,{max_length - 1}}}$"


def _identifier(max_length: int) -> Any:
    grammar = re.compile(f"[A-Za-z0-9][{ID_CHARS}]{{0,{max_length - 1}}}")

    def check(value: str) -> str:
        if grammar.fullmatch(value) is None:
            raise ValueError(f"must be 1 to {max_length} {ID_RULE}")
        return value

    return check


def Identifier(max_length: int) -> Any:  # noqa: N802 - a type alias factory
    return Annotated[
        str,
        AfterValidator(_identifier(max_length)),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_length, "pattern": id_pattern(max_length),
                        "description": f"1 to {max_length} {ID_RULE}."}),
    ]


# Free text (a reason) is for people: any script, line breaks and tabs, but no control
# characters and no invisible format characters: bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069) reorder what a support agent or an auditor reads, and
# zero-width spaces, word joiners and BOMs (U+200B, U+2060, U+FEFF) hide text or make a
# blank reason look filled in. U+200C and U+200D (zero-width non-joiner and joiner) stay:
# Persian, Indic scripts and emoji sequences need them. Astral format characters stay
# too (tag characters spell flag emoji). The classes are written as escapes that mean
# the same in Python's `re` and in ECMA-262 (the schema's dialect), so the published
# pattern is the validator.
_TEXT_FORBIDDEN = (
    r"\x00-\x08\x0b-\x1f\x7f-\x9f"  # control characters other than tab and line feed
    r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"  # format characters (Cf) ...
    r"\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"  # ... of the BMP
)
# Allowed, but not enough on their own: whitespace, the two joiners, variation selectors
# and the combining grapheme joiner, and the blank letters (Hangul fillers, braille blank).
_TEXT_BLANK = (
    r"\t\n\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\u200c\u200d\u034f\ufe00-\ufe0f\u115f\u1160\u3164\uffa0\u2800"
)
TEXT_PATTERN = f"^[^{_TEXT_FORBIDDEN}]*[^{_TEXT_FORBIDDEN}{_TEXT_BLANK}][^{_TEXT_FORBIDDEN}]*$"
_TEXT_BAD = re.compile(f"[{_TEXT_FORBIDDEN}]")
_TEXT_VISIBLE = re.compile(f"[^{_TEXT_FORBIDDEN}{_TEXT_BLANK}]")


def _text(value: str) -> str:
    bad = _TEXT_BAD.search(value)
    if bad:
        raise ValueError(f"must not contain control or invisible format characters (U+{ord(bad.group()):04X})")
    if _TEXT_VISIBLE.search(value) is None:
        raise ValueError("must not be blank: it needs at least one visible character")
    return value


def Text(max_length: int) -> Any:  # noqa: N802 - a type alias factory
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(_text),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_length, "pattern": TEXT_PATTERN}),
    ]


_NO_OFFSET = timedelta(0)
# RFC 3339's date-time and nothing else (the parser alone also takes a bare number of
# seconds, a space for the T, no seconds, and more than 6 decimals, cut silently): a
# 'T' (or 't'), seconds, at most microseconds (what the ledger stores), and 'Z' or an
# offset. The years are the range's, as written: 2000 to 2099 in the sender's own offset,
# so the pattern says all of it; a leap second (:60) is refused, as Python has none.
OCCURRED_AT_PATTERN = (
    r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_OCCURRED_AT = re.compile(OCCURRED_AT_PATTERN)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value  # built in code, not parsed: the range check below still applies
    if not isinstance(value, str) or _OCCURRED_AT.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time from 2000 to 2099 with seconds and an offset or Z,"
                         " such as \"2026-11-25T09:30:00+01:00\"")
    return value


def _plausible(moment: datetime) -> datetime:
    if not 2000 <= moment.year <= 2099:
        raise ValueError("must be from 2000-01-01 to 2099-12-31 (in its own offset)")
    return moment


# What the published schema's pattern allows, and all of it: 0 to 10,000,000 with at
# most 2 decimals, in ASCII digits only (`\d` would also take other scripts' digits,
# which Decimal reads), no sign, exponent, underscore or whitespace. The range is in the
# pattern (an 8-digit amount starts with 0 or is 10000000), so no schema-valid amount
# is refused.
AMOUNT_PATTERN = r"^(0?[0-9]{1,7}(\.[0-9]{1,2})?|10000000(\.00?)?)$"
_AMOUNT = re.compile(AMOUNT_PATTERN)


def _decimal_string(value: Any) -> Any:
    # A JSON number may already have lost digits in a client's float; money travels as text.
    if not isinstance(value, str):
        raise ValueError("must be a decimal string such as \"420.00\"")
    if _AMOUNT.fullmatch(value) is None:
        raise ValueError("must be a decimal string from 0 to 10000000 with at most 2 decimals, such as \"420.00\"")
    return value


# The same grammar and range, without zero: a refund gives something back. The lookahead
# refuses a string of zeros and points only (every zero the amount grammar spells), and
# means the same in Python's `re` and in ECMA-262.
POSITIVE_AMOUNT_PATTERN = r"^(?![0.]*$)" + AMOUNT_PATTERN[1:]


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be more than 0, such as \"84.00\"")
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
# Published as the exact set, so a client (or a fuzzer) that follows the schema never
# sends a code the validator refuses; whether the programme earns in it is the rules' say.
Currency = Annotated[
    str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency),
    WithJsonSchema({"type": "string", "enum": sorted(_CURRENCIES)}),
]
Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(le=10_000_000),  # sign, digits, decimals and range: checked as text by `_decimal_string`
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["420.00"]}),
]
PositiveAmount = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(le=10_000_000),
    AfterValidator(_positive),
    WithJsonSchema({"type": "string", "pattern": POSITIVE_AMOUNT_PATTERN, "examples": ["84.00"]}),
]
OccurredAt = Annotated[
    AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_plausible),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": OCCURRED_AT_PATTERN}),
]


class BookingEventType(StrEnum):
    confirmed = "booking.confirmed"
    completed = "booking.completed"
    cancelled = "booking.cancelled"
    refunded = "booking.refunded"
    amended = "booking.amended"


class Product(StrEnum):
    flight = "flight"
    hotel = "hotel"
    package = "package"
    rail = "rail"
    car = "car"


# Each product's plain name, as the commands carry it: `Product.value` is a property of
# the enum's, four times the cost of this look-up on every booking message.
_PRODUCT_NAMES: dict[Product, str] = {product: product.value for product in Product}


def _json_integer(value: Any) -> Any:
    """What JSON Schema calls an integer: 3 or 3.0, never true, "3" or null."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be an integer")
    return value


NIGHTS_MAX = 365  # one booking's hotel nights at most
SEGMENTS_MAX = 100  # one booking's flight or rail segments at most


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
            }, {
                "event_id": "bk-20261127-000124-refunded-1",
                "type": "booking.refunded",
                "member_id": "M-1001",
                "booking_id": "BK-000124",
                "product": "hotel",
                "amount": "420.00",
                "currency": "EUR",
                "refund_amount": "84.00",
                "occurred_at": "2026-11-27T10:00:00+01:00",
            }, {
                "event_id": "bk-20261127-000125-amended-1",
                "type": "booking.amended",
                "member_id": "M-1001",
                "booking_id": "BK-000125",
                "product": "hotel",
                "amount": "504.00",
                "currency": "EUR",
                "occurred_at": "2026-11-27T11:00:00+01:00",
            }],
            # `refund_amount` belongs to a refund only: the published schema says so too,
            # so that a client (or a fuzzer) following it never sends what is refused.
            "if": {"properties": {"type": {"const": BookingEventType.refunded.value}}},
            "else": {"not": {"required": ["refund_amount"]}},
        },
    )

    event_id: EventId = Field(description="Unique per source message: the idempotency key.")
    type: BookingEventType
    member_id: MemberId
    booking_id: BookingId
    product: Product
    amount: Amount = Field(description="The booking's amount (for `booking.amended`, its new amount): decimal string,"
                                       " at most 2 decimals, 0 to 10,000,000.")
    currency: Currency = Field(description="ISO 4217 code: the booking's currency, that of `amount` and"
                                           " `refund_amount`.")
    occurred_at: OccurredAt = Field(
        description="RFC 3339 date-time with seconds and an offset (or Z), years 2000 to 2099.")
    # None only when the message has no `refund_amount`: an explicit null is refused, as
    # a sender's missing value must not turn a partial refund into a full one. Left out
    # of the model's JSON when None, so that the fingerprint of every event without it
    # (every stored request hash) stays what it was.
    refund_amount: PositiveAmount = Field(
        default=None, exclude_if=lambda value: value is None,
        json_schema_extra=lambda schema: schema.pop("default", None),  # None is no value a sender may send
        description="`booking.refunded` only: what this partial refund gives back, in the booking's currency,"
                    " more than 0 and at most what is left of the booking (else 409). Absent: a full refund.")

    # P4, tier policies: what the booking counts towards tiers besides its points. Left
    # out of the model's JSON when absent, as `refund_amount` is, so every stored
    # request hash of an event without them stays what it was.
    nights: Annotated[int, Field(ge=0, le=NIGHTS_MAX), BeforeValidator(_json_integer)] = Field(
        default=None, exclude_if=lambda value: value is None,
        json_schema_extra=lambda schema: schema.pop("default", None),
        description="Hotel nights of the booking (hotels and packages), for tiers that qualify on nights.")
    segments: Annotated[int, Field(ge=0, le=SEGMENTS_MAX), BeforeValidator(_json_integer)] = Field(
        default=None, exclude_if=lambda value: value is None,
        json_schema_extra=lambda schema: schema.pop("default", None),
        description="Flight or rail segments of the booking, for tiers that qualify on segments.")

    @field_validator("refund_amount")
    @classmethod
    def _refund_only(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        kind = info.data.get("type")  # absent when `type` itself was refused: that error names it
        if kind is not None and kind != BookingEventType.refunded:
            raise ValueError(f"is for booking.refunded only, not {kind.value}")
        return value

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
            # The constructor rather than `replace(tzinfo=UTC)`, whose keyword argument
            # costs half as much again (0.58 against 0.38 µs, on every message).
            at = datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, UTC, fold=at.fold)
        match self.type:
            case BookingEventType.confirmed:
                return ConfirmBooking(self.member_id, at, self.booking_id, _PRODUCT_NAMES[self.product], self.amount,
                                      self.currency, self.nights, self.segments)
            case BookingEventType.completed:
                return CompleteBooking(self.member_id, at, self.booking_id, _PRODUCT_NAMES[self.product], self.amount,
                                       self.currency, self.nights, self.segments)
            case BookingEventType.cancelled:
                return CancelBooking(self.member_id, at, self.booking_id)
            case BookingEventType.refunded if self.refund_amount is None:
                return RefundBooking(self.member_id, at, self.booking_id)
            case BookingEventType.refunded:
                return AmendBooking(self.member_id, at, self.booking_id, "refunded", refund_amount=self.refund_amount,
                                    currency=self.currency)
            case BookingEventType.amended:
                return AmendBooking(self.member_id, at, self.booking_id, "amended", amount=self.amount,
                                    currency=self.currency)
        raise AssertionError(self.type)

    def to_request(self, source: str, *, message: KafkaSource | None = None, **metadata: Any) -> CommandRequest:
        """`message`: the Kafka message this event came in (see `KafkaSource`)."""
        # In field order (command, idempotency key, request hash, metadata, source): one
        # per Kafka message, and keyword arguments cost a third more.
        return CommandRequest(
            self.to_command(),
            f"booking-event:{self.event_id}",
            self.fingerprint(),
            {"source": source, "causation_id": self.event_id, "correlation_id": self.booking_id, **metadata},
            message,
        )
