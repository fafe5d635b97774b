"""The canonical JSON of event data is byte for byte what the standard library wrote
before: every stored event's hash chain was computed over that text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

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
from ledger.store.events import canonical, canonical_bytes, chain_hash

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
