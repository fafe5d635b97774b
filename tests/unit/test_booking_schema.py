"""The booking event's amount: exactly what the published schema's pattern allows."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.ingest.schema import OCCURRED_AT_MAX, OCCURRED_AT_MIN, BookingEvent

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
@given(st.from_regex(r"[0-9]{1,7}(\.[0-9]{1,2})?", fullmatch=True), st.text(min_size=1, max_size=20),
       st.sampled_from(["+01:00", "Z", "-05:30", "+00:00"]), st.integers(0, 999_999))
def test_the_fingerprint_is_the_sha256_of_the_model_json(amount: str, event_id: str, offset: str, micros: int) -> None:
    """Stored request hashes were computed over `model_dump_json()`: it must not drift."""
    raw = {**BASE, "amount": amount, "event_id": event_id.strip() or "e",
           "occurred_at": f"2026-11-25T09:30:00.{micros:06d}{offset}"}
    try:
        event = BookingEvent.model_validate(raw)
    except ValidationError:
        return  # an event id with control characters
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
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert not OCCURRED_AT_MIN <= parsed < OCCURRED_AT_MAX
        return
    assert OCCURRED_AT_MIN <= event.occurred_at < OCCURRED_AT_MAX
    at = event.to_command().occurred_at
    # The same instant, wall time and text (so the same event bodies and hashes).
    assert at == event.occurred_at and at.isoformat() == event.occurred_at.isoformat()
    assert at.replace(tzinfo=None) == event.occurred_at.replace(tzinfo=None)
    if at.utcoffset() == timedelta(0):
        assert at.tzinfo is UTC
