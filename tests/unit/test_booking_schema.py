"""The booking event's amount: exactly what the published schema's pattern allows."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.ingest.schema import BookingEvent

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
