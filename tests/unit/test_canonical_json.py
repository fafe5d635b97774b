"""The canonical JSON of event data is byte for byte what the standard library wrote
before: every stored event's hash chain was computed over that text."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import (
    EarnReversed,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    to_data,
)
from ledger.domain.events import EVENT_TYPES, PAIR_FIELDS
from ledger.store.events import canonical, canonical_bytes, chain_hash, event_body

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _stdlib(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


EVENTS = [
    PointsEarned(T0, "lot:BK-1", "BK-1", "flight", "1234.56", "EUR", 1234, 1234, "active", T0 + timedelta(days=730),
                 "2026.1", (("base", 1000), ("tier", 234))),
    PointsEarned(T0, "lot:BK-ü", "BK-Zürich-東京-🛫", "hotel", "99.00", "CHF", 99, 0, "pending", None, "2026.1", ()),
    PendingPointsActivated(T0, "lot:BK-1", "BK-1", 1234, 1234, T0 + timedelta(days=730)),
    PointsRedeemed(T0, "r-1", 500, "reward-ÉTÉ", "miles", (("lot:BK-1", 400), ("lot:BK-2", 100))),
    PointsExpired(T0.replace(tzinfo=None), "lot:BK-1", 0),
    PointsAdjusted(T0, "adj-1", -50, 'complaint: "late" \\ tab\there\nnew line \x01 \x7f \u2028 ß',
                   "support@ex.ample", None, None, (("lot:BK-1", 50),)),
    PointsAdjusted(T0, "adj-2", 50, "goodwill – Entschädigung", "agent Øyvind", "lot:adj-2", T0, ()),
    EarnReversed(T0, "BK-1", "refunded", 1234, (("lot:BK-1", 1000),), 0, 1234, 234, True),
]


def test_event_data_encodes_to_the_same_bytes_as_before() -> None:
    for event in EVENTS:
        data = to_data(event)
        assert canonical(data) == _stdlib(data)
        assert canonical_bytes(data) == _stdlib(data).encode()


def test_the_chain_hash_is_the_same_over_text_and_bytes() -> None:
    body = _stdlib(to_data(EVENTS[1]))
    assert chain_hash(bytes(32), "m-ü", 3, "PointsEarned", 1, body) == chain_hash(
        bytes(32), "m-ü", 3, "PointsEarned", 1, body.encode()
    )


# Everything to_data produces and metadata carries: str-keyed objects of strings
# (any code point but lone surrogates, which no UTF-8 input can hold), 64-bit ints,
# booleans, None and lists.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_text, _json, max_size=8))
def test_any_json_data_encodes_to_the_same_bytes(data: dict[str, Any]) -> None:
    assert canonical_bytes(data) == _stdlib(data).encode()


# --- event_body: the store's generated encoder of an event's canonical bytes -----------------

_offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59)),
    # Offsets with seconds or microseconds, which orjson would cut to the minute.
    st.builds(lambda s: timezone(timedelta(seconds=s)), st.integers(-86_399, 86_399)),
    st.builds(lambda us: timezone(timedelta(microseconds=us)), st.integers(-86_399_999_999, 86_399_999_999)),
    st.sampled_from([ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Kolkata"), ZoneInfo("America/St_Johns")]),
)
_times = st.builds(lambda d, tz: d.replace(tzinfo=tz), st.datetimes(min_value=datetime(1, 1, 2),
                                                                     max_value=datetime(9999, 12, 30)), _offsets)
_pairs = st.lists(st.tuples(_text, st.integers(-(2**63), 2**63 - 1)), max_size=3).map(tuple)
# What a field may hold in a well-typed event, and values no event should hold (an
# encoder must then do exactly what the reference does: the same bytes or the same error).
_odd = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                 st.just(Decimal("1.5")), st.just(date(2026, 1, 1)))


def _field_values(f: dataclasses.Field) -> st.SearchStrategy[Any]:
    kind = str(f.type)
    if "datetime" in kind:
        return _times | st.none() | _odd
    if f.name in PAIR_FIELDS:
        return _pairs | _odd
    if kind == "int":
        return st.integers(-(2**63), 2**63 - 1) | _odd
    if kind == "bool":
        return st.booleans() | _odd
    return _text | st.none() | _odd


@st.composite
def _events(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(list(EVENT_TYPES.values())))
    return cls(*[draw(_field_values(f)) for f in dataclasses.fields(cls)])


def _encoded(encode: Any, event: Any) -> tuple[str, Any]:
    try:
        return "ok", encode(event)
    except Exception as exc:  # noqa: BLE001 - the outcome, whatever it is, must be the same
        return "error", (type(exc), str(exc))


def test_event_body_is_the_canonical_bytes_of_the_known_events() -> None:
    for event in EVENTS:
        assert event_body(event) == canonical_bytes(to_data(event)) == _stdlib(to_data(event)).encode()


@settings(max_examples=1_000, deadline=None)
@given(_events())
def test_event_body_is_canonical_bytes_of_to_data_for_any_event(event: Any) -> None:
    assert _encoded(event_body, event) == _encoded(lambda e: canonical_bytes(to_data(e)), event)


def test_an_offset_with_seconds_takes_the_reference_path() -> None:
    odd = timezone(timedelta(hours=5, minutes=30, seconds=15))
    event = PointsExpired(T0.replace(tzinfo=odd), "lot:BK-1", 3)
    assert b"+05:30:15" in event_body(event)
    assert event_body(event) == canonical_bytes(to_data(event))
