"""Every role allowed and refused where it should be; every bad input a clear 4xx."""

from __future__ import annotations

import json

import pytest

from .conftest import Api
from .test_walkthrough import BOOKING

REDEEM = {"points": 10, "reward": {"id": "R", "kind": "voucher"}}
ADJUST = {"points": 10, "reason": "goodwill"}

# (method, path, body, needs Idempotency-Key) for each route
ROUTES = {
    "post_booking": ("POST", "/v1/booking-events", BOOKING, False),
    "redeem": ("POST", "/v1/members/M-1001/redemptions", REDEEM, True),
    "adjust": ("POST", "/v1/members/M-1001/adjustments", ADJUST, True),
    "balance": ("GET", "/v1/members/M-1001/balance", None, False),
    "tier": ("GET", "/v1/members/M-1001/tier", None, False),
    "expiry": ("GET", "/v1/members/M-1001/expiry-schedule", None, False),
    "history": ("GET", "/v1/members/M-1001/history", None, False),
    "events": ("GET", "/v1/events", None, False),
}
READS = {"balance", "tier", "expiry", "history"}
ALLOWED = {
    "ingest": {"post_booking"},
    "app": READS | {"redeem"},
    "support": READS | {"adjust"},
    "auditor": READS | {"events"},
    "admin": set(ROUTES),
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_each_role_is_allowed_and_refused_where_it_should_be(api: Api, role: str) -> None:
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "event_id": "seed", "type": "booking.completed"})
        assert r.status_code == 201
    async with api.client(role) as client:
        for name, (method, path, body, keyed) in ROUTES.items():
            headers = {"Idempotency-Key": f"{role}-{name}", "Content-Type": "application/json"} if keyed else {}
            payload = {**body, "event_id": f"{role}-evt", "booking_id": f"{role}-bk"} if name == "post_booking" else body
            r = await client.request(method, path, headers=headers, json=payload,
                                     params={"min_position": 1} if method == "GET" else None)
            if name in ALLOWED[role]:
                assert r.status_code in (200, 201), (role, name, r.text)
            else:
                assert r.status_code == 403, (role, name, r.text)
                assert r.headers["content-type"] == "application/problem+json"


async def test_missing_wrong_and_revoked_keys_get_401(api: Api) -> None:
    from ledger.keys import revoke_key

    async with api.client(None) as anonymous:
        r = await anonymous.get("/v1/members/M-1001/balance")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        for token in ("nonsense", "lk_abc.def", api.tokens["admin"] + "x", "lk_" + "a" * 300):
            r = await anonymous.get("/v1/members/M-1001/balance", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, token
    await revoke_key(api.container.pool, "auditor-key")
    # A fresh client, so the key is checked against the database again.
    api_state = api  # the server caches checked keys for a few seconds; a never-used key is not cached
    async with api_state.client("auditor") as auditor:
        assert (await auditor.get("/v1/members/M-1001/balance")).status_code == 401


BAD_BOOKINGS = [
    ("amount", {"amount": "1.001"}),
    ("amount", {"amount": "-5"}),
    ("amount", {"amount": "10000000.01"}),
    ("amount", {"amount": "NaN"}),
    ("amount", {"amount": "12abc"}),
    # Forms Decimal reads but the published pattern does not allow.
    ("amount", {"amount": "1e3"}),
    ("amount", {"amount": "1_000"}),
    ("amount", {"amount": " 5"}),
    ("amount", {"amount": "+5"}),
    ("amount", {"amount": ".5"}),
    ("amount", {"amount": "\u0664\u0662\u0660"}),  # 420 in Arabic-Indic digits
    ("amount", {"amount": "123456789"}),
    ("currency", {"currency": "XXY"}),
    ("currency", {"currency": "eur"}),
    ("product", {"product": "cruise"}),
    ("type", {"type": "booking.exploded"}),
    ("occurred_at", {"occurred_at": "2026-11-20T09:30:00"}),
    ("occurred_at", {"occurred_at": "yesterday"}),
    ("member_id", {"member_id": "M\u00071001"}),
    ("member_id", {"member_id": ""}),
    ("member_id", {"member_id": "x" * 65}),
    ("booking_id", {"booking_id": "BK\n1"}),
    ("event_id", {"event_id": "e" * 129}),
    ("event_id", {"event_id": 12345}),
    ("surprise", {"surprise": "unknown field"}),
    ("amount", {"amount": 420.5}),
    ("occurred_at", {"occurred_at": "0001-01-01T00:00:00+05:00"}),
    ("occurred_at", {"occurred_at": "9999-12-31T23:59:59Z"}),
    ("event_id", {"event_id": "a\u0000b"}),
    # Ids no route could reach, and look-alike or invisible forms of "M-1001".
    ("member_id", {"member_id": "A/B"}),
    ("member_id", {"member_id": "."}),
    ("member_id", {"member_id": ".."}),
    ("member_id", {"member_id": "M\u20111001"}),  # U+2011 non-breaking hyphen
    ("member_id", {"member_id": "M-\u200b1001"}),  # zero-width space
    ("member_id", {"member_id": "\uff2d-1001"}),  # full-width M
    ("member_id", {"member_id": "Jose\u0301"}),  # NFD (and its NFC form below): neither is folded
    ("member_id", {"member_id": "Jos\u00e9"}),
    ("member_id", {"member_id": "M-1001\u202e"}),  # right-to-left override
    ("booking_id", {"booking_id": "BK/1"}),
    ("event_id", {"event_id": "\ufeffbk-1"}),
    ("occurred_at", {"occurred_at": 1764059400}),
    ("occurred_at", {"occurred_at": "1764059400"}),
    ("occurred_at", {"occurred_at": "2026-11-20 09:30:00+01:00"}),
    ("occurred_at", {"occurred_at": "2026-11-20T09:30+01:00"}),
]


@pytest.mark.parametrize("field,change", BAD_BOOKINGS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_BOOKINGS)])
async def test_bad_booking_events_name_the_field_and_change_nothing(api: Api, field: str, change: dict) -> None:
    async with api.client("ingest") as ingest:
        r = await ingest.post("/v1/booking-events", json={**BOOKING, **change})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert field in problem["detail"]
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_missing_fields_and_wrong_types(api: Api) -> None:
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={k: v for k, v in BOOKING.items() if k != "amount"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "amount"
        r = await admin.post("/v1/booking-events", json=[BOOKING])
        assert r.status_code == 422
        r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "k"},
                             json={"points": "10", "reward": {"id": "R", "kind": "voucher"}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "points"
        for points in (0, -1, 10_000_001, 1.5, True):
            r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "k"},
                                 json={**REDEEM, "points": points})
            assert r.status_code == 422, points
        r = await admin.post("/v1/members/M-1001/redemptions", json=REDEEM)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
        for field, body in (("points", {"points": 0, "reason": "x"}), ("reason", {"points": 5, "reason": ""}),
                            ("reason", {"points": 5, "reason": "x" * 501}), ("reason", {"points": 5}),
                            ("points", {"points": 2_000_000, "reason": "x"}), ("reason", {"points": 5, "reason": "a\u0000b"}),
                            ("reason", {"points": 5, "reason": "a\u0001b"}), ("reason", {"points": 5, "reason": "   "})):
            r = await admin.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": "a"}, json=body)
            assert r.status_code == 422, body
            assert field in {e["field"] for e in r.json()["errors"]}, (body, r.json())
        r = await admin.get("/v1/members/M-1001/history", params={"limit": 1000})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"
        r = await admin.get("/v1/members/M-1001/balance", params={"min_position": -1})
        assert r.status_code == 422
        r = await admin.get("/v1/members/%07bad/balance")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "member_id"
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_ids_in_paths_follow_the_same_grammar(api: Api) -> None:
    async with api.client("admin") as admin:
        for raw in ("%2E%2E", "%2E", "M%E2%80%911001", "M-%E2%80%8B1001", "%EF%BC%AD-1001", "M-1001%E2%80%AE",
                    "Jose%CC%81", "A%20B", "-M"):
            for path in (f"/v1/members/{raw}/balance", f"/v1/members/{raw}/history"):
                r = await admin.get(path)
                assert r.status_code == 422, (path, r.text)
                assert r.json()["errors"][0]["field"] == "member_id"
                assert "ASCII only" in r.json()["errors"][0]["message"]
            r = await admin.post(f"/v1/members/{raw}/redemptions", json=REDEEM, headers={"Idempotency-Key": "k"})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "member_id", raw
        r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "k"},
                             json={**REDEEM, "reward": {"id": "R\u20111", "kind": "voucher"}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reward.id"
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_ids_with_a_nul_or_control_character_in_paths_are_a_422(api: Api) -> None:
    # The merged-member check of the member reads looked such an id up before the route
    # validated it, and PostgreSQL refuses a NUL in text: a 500.
    async with api.client("admin") as admin:
        for raw in ("M-1001%00", "%00", "M%0A1", "M%7F"):
            for path in ("balance", "tier", "expiry-schedule", "history", "statement", "verification", "segment"):
                r = await admin.get(f"/v1/members/{raw}/{path}")
                assert r.status_code == 422, (raw, path, r.text)
                assert r.json()["errors"][0]["field"] == "member_id", (raw, path, r.text)


async def test_reasons_need_a_visible_character_and_no_bidi_controls(api: Api) -> None:
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        assert r.status_code == 201
        for reason in ("\u200b", "\u200b\u2060\ufeff", " \u200b\n\t\u3000", "\u3164", "refund \u202eevil",
                       "\u2067abc\u2069", "a\u200eb", "a\u00adb"):
            r = await admin.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": "a"},
                                 json={"points": 5, "reason": reason})
            assert r.status_code == 422, (reason, r.text)
            assert r.json()["errors"][0]["field"] == "reason", reason
        for i, reason in enumerate(("航班延误五小时，补偿积分", "Seat not as booked\nsecond line", "客户投诉\t已处理",
                                    "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",
                                    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001F468\u200d\U0001F469")):
            r = await admin.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": f"ok-{i}"},
                                 json={"points": 5, "reason": reason})
            assert r.status_code == 201, (reason, r.text)
            assert r.json()["reason"] == reason


JSON = {"Content-Type": "application/json"}


async def test_an_integer_valued_float_is_that_integer(api: Api) -> None:
    """JSON Schema counts 100.0 as an integer: the API takes it as 100, and as the same request."""
    async with api.client("admin") as admin:
        await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "f", **JSON},
                             content=b'{"points": 100.0, "reward": {"id": "R", "kind": "voucher"}}')
        assert r.status_code == 201 and r.json()["points"] == 100, r.text
        again = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "f"},
                                 json={"points": 100, "reward": {"id": "R", "kind": "voucher"}})
        assert again.status_code == 200 and again.json() == r.json()
        r = await admin.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": "g", **JSON},
                             content=b'{"points": -2.5e1, "reason": "x"}')
        assert r.status_code == 201 and r.json()["points"] == -25, r.text
        for points in (b"0.0", b"100.5", b"1e300", b'"100"', b"true"):
            r = await admin.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": "h", **JSON},
                                 content=b'{"points": %s, "reason": "x"}' % points)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "points", points


async def test_malformed_json_and_oversized_bodies(api: Api) -> None:
    async with api.client("admin", **{"Content-Type": "application/json"}) as admin:
        r = await admin.post("/v1/booking-events", content=b'{"event_id": "x",')
        assert r.status_code == 400 and r.json()["title"] == "Malformed JSON"
        assert r.json()["errors"][0]["field"] == "body"
        r = await admin.post("/v1/booking-events", content=b"\xff\xfe")
        assert r.status_code in (400, 422)
        big = json.dumps({**BOOKING, "member_id": "x" * 200_000}).encode()
        r = await admin.post("/v1/booking-events", content=big)
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"

        async def chunks():  # no Content-Length: the limit must still hold
            for _ in range(100):
                yield b" " * 1024

        r = await admin.post("/v1/booking-events", content=chunks())
        assert r.status_code == 413
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_json_nested_too_deeply_is_malformed_json_as_on_kafka(api: Api) -> None:
    # Python's parser gives up on deep nesting with a RecursionError, which FastAPI turned
    # into a bare 400 "HTTP error"; the Kafka consumer calls the same bytes "not JSON".
    async with api.client("admin", **{"Content-Type": "application/json"}) as admin:
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):
            r = await admin.post("/v1/booking-events", content=body)
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
            assert r.json()["title"] == "Malformed JSON"
            assert [(e["field"], e["type"]) for e in r.json()["errors"]] == [("body", "json_invalid")]
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_unknown_member_and_booking(api: Api) -> None:
    async with api.client("admin") as admin:
        for path in ("balance", "tier", "expiry-schedule", "history"):
            r = await admin.get(f"/v1/members/nobody/{path}")
            assert r.status_code == 404 and r.json()["title"] == "Member not found", path
        # Well formed, and refused by the ledger's state: a conflict, not an invalid request.
        r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.cancelled"})
        assert r.status_code == 409 and r.json()["title"] == "Booking not found"
        # BRL earns converted at the default rates; XAF has no rate of any kind.
        r = await admin.post("/v1/booking-events", json={**BOOKING, "currency": "XAF"})
        assert r.status_code == 409 and r.json()["title"] == "Currency not earned" and r.json()["currency"] == "XAF"
        assert "XAF" in r.json()["detail"]
        r = await admin.post("/v1/members/nobody/adjustments", headers={"Idempotency-Key": "a"}, json=ADJUST)
        assert r.status_code == 404
