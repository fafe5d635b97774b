"""The booking event (one model for HTTP and Kafka): exactly what its published schema allows."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import pytest

from ledger.domain import AmendBooking, RefundBooking
from ledger.ingest.schema import BookingEvent, id_pattern

BASE = {"event_id": "e-1", "type": "booking.confirmed", "member_id": "M-1", "booking_id": "B-1", "product": "flight",
        "currency": "EUR", "occurred_at": "2026-11-25T09:30:00+01:00"}
PATTERN = BookingEvent.model_json_schema()["properties"]["amount"]["pattern"]


def _parsed(amount: str) -> Decimal | None:
    try:
        return BookingEvent.model_validate_json(json.dumps({**BASE, "amount": amount})).amount
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("amount",)]
        return None


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.from_regex(PATTERN, fullmatch=True), st.text(max_size=14),
                 st.decimals(allow_nan=True, allow_infinity=True).map(str)))
def test_an_amount_is_accepted_when_it_matches_the_schema_and_is_in_range(amount: str) -> None:
    # The schema's \d means ASCII digits, as in ECMA-262 regular expressions.
    matches = re.fullmatch(PATTERN.replace(r"\d", "[0-9]").strip("^$"), amount) is not None
    parsed = _parsed(amount)
    if matches and Decimal(amount) <= 10_000_000:
        assert parsed == Decimal(amount)
    else:
        assert parsed is None


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[0-9]{1,7}(\.[0-9]{1,2})?", fullmatch=True), st.from_regex(id_pattern(128), fullmatch=True),
       st.sampled_from(["+01:00", "Z", "-05:30", "+00:00"]), st.integers(0, 999_999))
def test_the_fingerprint_is_the_sha256_of_the_model_json(amount: str, event_id: str, offset: str, micros: int) -> None:
    """Stored request hashes were computed over `model_dump_json()`: it must not drift."""
    raw = {**BASE, "amount": amount, "event_id": event_id, "occurred_at": f"2026-11-25T09:30:00.{micros:06d}{offset}"}
    event = BookingEvent.model_validate(raw)
    assert event.fingerprint() == hashlib.sha256(event.model_dump_json().encode()).hexdigest()


def test_the_fingerprint_of_a_known_event_never_changes() -> None:
    """A library upgrade that changed the model's JSON would make every redelivered
    message look like a reused key with another body."""
    event = BookingEvent.model_validate({**BASE, "amount": "420.00"})
    assert event.model_dump_json() == (
        '{"event_id":"e-1","type":"booking.confirmed","member_id":"M-1","booking_id":"B-1","product":"flight",'
        '"amount":"420.00","currency":"EUR","occurred_at":"2026-11-25T09:30:00+01:00"}'
    )
    assert event.fingerprint() == "e6d29c3e2674e31a1680c7b5d30de4c804f04e2c484f4183d8343ee87f1f0a89"


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1999, 12, 30), max_value=datetime(2100, 1, 2)),
       st.sampled_from(["Z", "+00:00", "-00:00", "+01:00", "-05:30", "+14:00", "-12:00"]))
def test_occurred_at_range_and_the_commands_time(moment: datetime, offset: str) -> None:
    text = moment.isoformat(timespec="microseconds") + offset
    try:
        event = BookingEvent.model_validate({**BASE, "amount": "1.00", "occurred_at": text})
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("occurred_at",)]
        assert not 2000 <= moment.year <= 2099  # the years as written, in the sender's own offset
        return
    assert 2000 <= moment.year <= 2099
    at = event.to_command().occurred_at
    # The same instant, wall time and text (so the same event bodies and hashes).
    assert at == event.occurred_at and at.isoformat() == event.occurred_at.isoformat()
    assert at.replace(tzinfo=None) == event.occurred_at.replace(tzinfo=None)
    if at.utcoffset() == timedelta(0):
        assert at.tzinfo is UTC


def _refused_fields(**changes: object) -> set[str]:
    try:
        BookingEvent.model_validate_json(json.dumps({**BASE, "amount": "1.00", **changes}))
    except ValidationError as exc:
        return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
    return set()


# Each of these would be a member (or booking, or event) of its own that no route reaches
# or that looks like another one: none is accepted, none is folded into another.
CONFUSABLE_OR_UNREACHABLE_IDS = [
    "A/B", ".", "..", "../M-1", "M 1", " M-1", "M-1 ", "M?1", "M#1", "M%2F1", "-M1", "_M1",
    "M\u20111",  # non-breaking hyphen
    "M\u20101",  # hyphen
    "M\u22121",  # minus sign
    "M-\u200b1",  # zero-width space
    "M-1\u200b",
    "M-\u20601",  # word joiner
    "\ufeffM-1",  # byte order mark
    "\uff2d-1",  # full-width M
    "M\uff0d1",  # full-width hyphen-minus
    "\u041c-1",  # Cyrillic capital Em
    "Jos\u00e9", "Jose\u0301",  # NFC and NFD
    "M-1\u202e",  # right-to-left override
    "\u2067M-1\u2069",  # right-to-left isolate
    "M-\u00001", "M-1\n", "M\t1", "",
]


@pytest.mark.parametrize("field,limit", [("member_id", 64), ("booking_id", 64), ("event_id", 128)])
@pytest.mark.parametrize("value", CONFUSABLE_OR_UNREACHABLE_IDS, ids=ascii)
def test_ids_outside_the_grammar_are_refused_with_the_rule(field: str, limit: int, value: str) -> None:
    try:
        BookingEvent.model_validate_json(json.dumps({**BASE, "amount": "1.00", field: value}))
    except ValidationError as exc:
        (error,) = exc.errors()
        assert error["loc"] == (field,)
        assert f"1 to {limit} letters A-Z a-z, digits and . _ : @ + - (ASCII only)" in error["msg"], error["msg"]
        return
    raise AssertionError(f"{field}={value!r} was accepted")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_an_id_is_accepted_exactly_when_it_matches_the_published_pattern(value: str) -> None:
    schema = BookingEvent.model_json_schema()["properties"]["member_id"]
    assert schema["pattern"] == id_pattern(64)
    matches = re.fullmatch(schema["pattern"].strip("^$"), value) is not None
    assert ("member_id" not in _refused_fields(member_id=value)) == matches


def test_the_example_ids_and_the_usual_forms_are_accepted() -> None:
    for value in ("M-1001", "BK-000123", "bk-000123-confirmed", "0", "M.1", "M_1", "m:1", "user@example.com",
                  "a+b", "x" * 64):
        assert _refused_fields(member_id=value, booking_id=value) == set(), value


@pytest.mark.parametrize("value", [
    "1764059400", "2026-11-25 09:30:00+01:00", "2026-11-25T09:30+01:00", "2026-11-25T09:30:00.1234567Z",
    "2026-11-25T09:30:60Z", "2026-11-25T09:30:00+0100", "2026-11-25", "20261125T093000Z", "2026-02-30T09:30:00Z",
    "1999-12-31T23:59:59-01:00", "2100-01-01T00:30:00+01:00",
])
def test_occurred_at_is_strict_rfc_3339(value: str) -> None:
    assert _refused_fields(occurred_at=value) == {"occurred_at"}


def test_occurred_at_as_a_json_number_is_refused() -> None:
    raw = json.dumps({**BASE, "amount": "1.00"}).replace('"2026-11-25T09:30:00+01:00"', "1764059400")
    with pytest.raises(ValidationError) as caught:
        BookingEvent.model_validate_json(raw)
    assert [e["loc"] for e in caught.value.errors()] == [("occurred_at",)]


@pytest.mark.parametrize("value", ["2026-11-25t09:30:00z", "2026-11-25T09:30:00.5Z", "2026-11-25T09:30:00-00:00",
                                   "2000-01-01T00:30:00+01:00", "2099-12-31T23:59:59.999999-12:00"])
def test_occurred_at_in_rfc_3339_is_accepted(value: str) -> None:
    assert _refused_fields(occurred_at=value) == set()


def test_the_currency_schema_is_the_set_the_validator_accepts() -> None:
    codes = BookingEvent.model_json_schema()["properties"]["currency"]["enum"]
    assert "EUR" in codes and "XXY" not in codes and len(codes) > 150
    assert all(_refused_fields(currency=code) == set() for code in codes)
    assert _refused_fields(currency="XXY") == {"currency"}


REFUND = {**BASE, "type": "booking.refunded", "product": "hotel", "amount": "420.00"}


def test_a_refund_with_refund_amount_is_a_partial_refund_and_one_without_stays_the_full_refund() -> None:
    event = BookingEvent.model_validate({**REFUND, "refund_amount": "84.00"})
    assert event.to_command() == AmendBooking("M-1", event.occurred_at, "B-1", "refunded",
                                              refund_amount=Decimal("84.00"), currency="EUR")
    assert event.model_dump_json().endswith(',"refund_amount":"84.00"}')
    assert event.fingerprint() == hashlib.sha256(event.model_dump_json().encode()).hexdigest()
    assert event.fingerprint() != BookingEvent.model_validate({**REFUND, "refund_amount": "84.01"}).fingerprint()
    full = BookingEvent.model_validate(REFUND)
    assert full.to_command() == RefundBooking("M-1", full.occurred_at, "B-1")
    assert event.fingerprint() != full.fingerprint()
    # Without it, the model's JSON (and so every stored request hash of a refund) is what it was.
    assert full.model_dump_json() == (
        '{"event_id":"e-1","type":"booking.refunded","member_id":"M-1","booking_id":"B-1","product":"hotel",'
        '"amount":"420.00","currency":"EUR","occurred_at":"2026-11-25T09:30:00+01:00"}'
    )


def test_an_amendment_carries_the_new_amount() -> None:
    event = BookingEvent.model_validate({**REFUND, "type": "booking.amended", "amount": "504.00"})
    assert event.to_command() == AmendBooking("M-1", event.occurred_at, "B-1", "amended", amount=Decimal("504.00"),
                                              currency="EUR")
    zero = BookingEvent.model_validate({**REFUND, "type": "booking.amended", "amount": "0"})
    assert zero.to_command() == AmendBooking("M-1", zero.occurred_at, "B-1", "amended", amount=Decimal("0"),
                                             currency="EUR")


@pytest.mark.parametrize("value", ["0", "0.00", "00.0", "000", "-1.00", "+1.00", "1e2", "1.001", "10000000.01",
                                   "99999999", " 1.00", "1,00", "", "\u0661", 1, 1.5, None, True, ["1.00"]],
                         ids=ascii)
def test_a_refund_amount_outside_the_schema_is_refused_naming_it(value: object) -> None:
    assert _refused_fields(**{**REFUND, "refund_amount": value}) == {"refund_amount"}
    for bound in ("0.01", "0.1", "1", "01.50", "10000000", "10000000.00"):  # what is next to it is accepted
        assert _refused_fields(**{**REFUND, "refund_amount": bound}) == set(), bound


@pytest.mark.parametrize("kind", ["booking.confirmed", "booking.completed", "booking.cancelled", "booking.amended"])
def test_a_refund_amount_on_anything_but_a_refund_is_refused_naming_it(kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BookingEvent.model_validate({**REFUND, "type": kind, "refund_amount": "84.00"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("refund_amount",) and f"is for booking.refunded only, not {kind}" in error["msg"]


@pytest.mark.parametrize("field,value", [("amount", "-5.00"), ("amount", "504.001"), ("amount", None),
                                         ("currency", "eur"), ("product", "hostel"), ("booking_id", "B/1")])
def test_an_amendment_with_a_bad_field_is_refused_naming_it(field: str, value: object) -> None:
    assert _refused_fields(**{**REFUND, "type": "booking.amended", field: value}) == {field}


def test_an_amendment_needs_its_amount() -> None:
    raw = {k: v for k, v in REFUND.items() if k != "amount"}
    with pytest.raises(ValidationError) as caught:
        BookingEvent.model_validate({**raw, "type": "booking.amended"})
    assert [e["loc"] for e in caught.value.errors()] == [("amount",)]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.from_regex(PATTERN, fullmatch=True), st.text(max_size=12)))
def test_a_refund_amount_is_accepted_exactly_when_it_matches_its_published_pattern(value: str) -> None:
    """Positive amounts only, and the published pattern (a lookahead refuses the zeros) says so."""
    schema = BookingEvent.model_json_schema()
    pattern = schema["properties"]["refund_amount"]["pattern"]
    matches = re.fullmatch(pattern.strip("^$"), value) is not None
    assert ("refund_amount" not in _refused_fields(**{**REFUND, "refund_amount": value})) == matches
    if matches:
        assert Decimal(value) > 0


def test_the_published_schema_allows_refund_amount_on_refunds_only() -> None:
    schema = BookingEvent.model_json_schema()
    assert "refund_amount" not in schema["required"] and "default" not in schema["properties"]["refund_amount"]
    assert schema["if"] == {"properties": {"type": {"const": "booking.refunded"}}}
    assert schema["else"] == {"not": {"required": ["refund_amount"]}}
    assert "booking.amended" in schema["$defs"]["BookingEventType"]["enum"]
