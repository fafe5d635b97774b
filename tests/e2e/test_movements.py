"""The movements over HTTP: holds (placed, captured, released, ended), redemption
reversals and transfers; replays, roles, bad input, and the 404 and 409 of each."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

LOT = "booking:BK-000123"
HOLD = {"points": 1000, "reward": {"id": "CAR-UPG-1", "kind": "upgrade"}, "ttl_s": 600}
REDEEM = {"points": 2000, "reward": {"id": "HTL-DISC-20", "kind": "hotel_discount"}}


async def _member(admin: httpx.AsyncClient, member_id: str = "M-1001", amount: str = "420.00") -> None:
    """A member with one active lot: a completed flight of 420 EUR earns 2,600 points."""
    r = await admin.post("/v1/booking-events", json={
        **BOOKING, "event_id": f"{member_id}-completed", "member_id": member_id, "booking_id": "BK-000123",
        "type": "booking.completed", "amount": amount})
    assert r.status_code == 201, r.text


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def _hold(client: httpx.AsyncClient, key: str, member_id: str = "M-1001", **changes: Any) -> httpx.Response:
    return await client.post(f"/v1/members/{member_id}/holds", headers=_key(key), json={**HOLD, **changes})


async def _history(api: Api, member_id: str = "M-1001") -> list[dict[str, Any]]:
    async with api.client("admin") as admin:
        r = await admin.get(f"/v1/members/{member_id}/history", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["events"]


async def test_a_hold_is_captured_in_part_and_the_rest_released(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app:
        await _member(admin)
        before = datetime.now().astimezone()
        r = await _hold(app, "checkout-1")
        assert r.status_code == 201, r.text
        hold = r.json()
        assert hold["points"] == 1000 and hold["lots"] == [{"lot_id": LOT, "points": 1000}]
        assert hold["available_after"] == 1600 and hold["hold_id"].startswith("hold-")
        expires_at = datetime.fromisoformat(hold["expires_at"])
        assert before + timedelta(seconds=599) <= expires_at <= datetime.now().astimezone() + timedelta(seconds=601)

        again = await _hold(app, "checkout-1")
        assert again.status_code == 200 and again.json() == hold
        for other in ({"points": 999}, {"ttl_s": 601}, {"reward": {"id": "CAR-UPG-2", "kind": "upgrade"}}):
            r = await _hold(app, "checkout-1", **other)
            assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused", other

        capture = f"/v1/members/M-1001/holds/{hold['hold_id']}/capture"
        r = await app.post(capture, headers=_key("pay-1"), json={"points": 600})
        assert r.status_code == 201, r.text
        captured = r.json()
        assert captured["hold_id"] == hold["hold_id"] and captured["redemption_id"].startswith("cap-")
        assert (captured["points"], captured["released"], captured["available_after"]) == (600, 400, 2000)
        assert captured["lots"] == [{"lot_id": LOT, "points": 600}]
        again = await app.post(capture, headers=_key("pay-1"), json={"points": 600})
        assert again.status_code == 200 and again.json() == captured
        r = await app.post(capture, headers=_key("pay-1"), json={"points": 500})
        assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused"

        # The hold ended with its capture: neither a second capture nor a release applies.
        r = await app.post(capture, headers=_key("pay-2"), json={"points": 100})
        assert r.status_code == 409 and r.json()["title"] == "Movement conflict", r.text
        assert r.json()["hold_status"] == "captured"
        r = await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/release", headers=_key("undo-1"))
        assert r.status_code == 409 and r.json()["hold_status"] == "captured"

    types = [e["type"] for e in await _history(api)]
    assert types[:3] == ["HoldReleased", "HoldCaptured", "PointsHeld"]


async def test_a_hold_released_gives_its_points_back_and_ends(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app:
        await _member(admin)
        hold = (await _hold(app, "checkout-1")).json()
        release = f"/v1/members/M-1001/holds/{hold['hold_id']}/release"
        r = await app.post(release, headers=_key("undo-1"))  # no body at all
        assert r.status_code == 201, r.text
        released = r.json()
        assert released["hold_id"] == hold["hold_id"] and released["points"] == 1000
        assert released["restored"] == [{"lot_id": LOT, "points": 1000}]
        assert (released["expired"], released["forfeited"], released["debt_repaid"]) == ([], [], 0)
        assert released["available_after"] == 2600
        again = await app.post(release, headers=_key("undo-1"))
        assert again.status_code == 200 and again.json() == released

        r = await app.post(release, headers=_key("undo-2"), json={})
        assert r.status_code == 409 and r.json()["hold_status"] == "released", r.text
        r = await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/capture", headers=_key("pay-1"),
                           json={"points": 10})
        assert r.status_code == 409 and r.json()["hold_status"] == "released"

        # An empty object is a release too; another hold of the same key is another request.
        second = (await _hold(app, "checkout-2")).json()
        r = await app.post(f"/v1/members/M-1001/holds/{second['hold_id']}/release", headers=_key("undo-1"), json={})
        assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused"
        r = await app.post(f"/v1/members/M-1001/holds/{second['hold_id']}/release", headers=_key("undo-3"), json={})
        assert r.status_code == 201 and r.json()["available_after"] == 2600


async def test_holds_refused_by_the_ledger_state(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app:
        await _member(admin)
        r = await _hold(app, "big", points=2601)
        assert r.status_code == 409 and r.json()["title"] == "Insufficient points"
        assert r.json()["available"] == 2600
        r = await _hold(app, "nobody", member_id="nobody")
        assert r.status_code == 404 and r.json()["title"] == "Member not found"
        r = await app.post("/v1/members/M-1001/holds/hold-unknown/capture", headers=_key("p"), json={"points": 1})
        assert r.status_code == 404 and r.json()["title"] == "Hold not found", r.text
        r = await app.post("/v1/members/M-1001/holds/hold-unknown/release", headers=_key("u"))
        assert r.status_code == 404 and r.json()["title"] == "Hold not found"
        r = await app.post("/v1/members/nobody/holds/hold-unknown/release", headers=_key("u"))
        assert r.status_code == 404

        hold = (await _hold(app, "checkout-1")).json()
        r = await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/capture", headers=_key("p"),
                           json={"points": 1001})
        assert r.status_code == 409 and r.json()["title"] == "Movement conflict" and r.json()["held"] == 1000
        # A hold held by one member is unknown to another.
        await _member(admin, "M-2002")
        r = await app.post(f"/v1/members/M-2002/holds/{hold['hold_id']}/release", headers=_key("u2"))
        assert r.status_code == 404

        # Past its time, a hold cannot be captured or released, even before the scheduler ends it.
        short = (await _hold(app, "checkout-2", ttl_s=60)).json()
        real_clock = api.container.clock
        api.container.clock = lambda: real_clock() + timedelta(seconds=61)
        try:
            for action, body in (("capture", {"points": 10}), ("release", None)):
                r = await app.post(f"/v1/members/M-1001/holds/{short['hold_id']}/{action}",
                                   headers=_key(f"late-{action}"), json=body)
                assert r.status_code == 409 and r.json()["hold_status"] == "expired", (action, r.text)
        finally:
            api.container.clock = real_clock


async def test_a_redemption_is_reversed_in_part_then_in_full(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app, api.client("support") as support:
        await _member(admin)
        redemption = (await app.post("/v1/members/M-1001/redemptions", headers=_key("order-77"), json=REDEEM)).json()
        path = f"/v1/members/M-1001/redemptions/{redemption['redemption_id']}/reversals"
        body = {"points": 800, "reason": "Hotel closed for renovation"}
        r = await support.post(path, headers=_key("case-1"), json=body)
        assert r.status_code == 201, r.text
        reversal = r.json()
        assert reversal["redemption_id"] == redemption["redemption_id"] and reversal["reversal_id"].startswith("rv-")
        assert (reversal["points"], reversal["available_after"]) == (800, 1400)
        assert reversal["restored"] == [{"lot_id": LOT, "points": 800}]
        assert (reversal["expired"], reversal["forfeited"], reversal["regranted"]) == ([], [], [])
        assert (reversal["debt_repaid"], reversal["grace_expires_at"]) == (0, None)
        again = await support.post(path, headers=_key("case-1"), json=body)
        assert again.status_code == 200 and again.json() == reversal
        r = await support.post(path, headers=_key("case-1"), json={**body, "reason": "Another reason"})
        assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused"

        r = await support.post(path, headers=_key("case-2"), json={"points": 1201, "reason": "Too much"})
        assert r.status_code == 409 and r.json()["title"] == "Movement conflict" and r.json()["reversible"] == 1200
        r = await support.post(path, headers=_key("case-3"), json={"reason": "The rest of it"})  # all that is left
        assert r.status_code == 201 and (r.json()["points"], r.json()["available_after"]) == (1200, 2600), r.text
        r = await support.post(path, headers=_key("case-4"), json={"points": None, "reason": "Once more"})
        assert r.status_code == 409 and r.json()["reversible"] == 0

        r = await support.post("/v1/members/M-1001/redemptions/rd-unknown/reversals", headers=_key("case-5"),
                               json={"reason": "Unknown"})
        assert r.status_code == 404 and r.json()["title"] == "Redemption not found"
        r = await support.post("/v1/members/nobody/redemptions/rd-unknown/reversals", headers=_key("case-6"),
                               json={"reason": "Unknown"})
        assert r.status_code == 404

        # A capture is a redemption too: its id is what a reversal names.
        hold = (await _hold(app, "checkout-1")).json()
        captured = (await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/capture", headers=_key("pay-1"),
                                   json={"points": 1000})).json()
        r = await support.post(f"/v1/members/M-1001/redemptions/{captured['redemption_id']}/reversals",
                               headers=_key("case-7"), json={"points": 250, "reason": "Upgrade not given"})
        assert r.status_code == 201 and r.json()["available_after"] == 1850, r.text

    history = await _history(api)
    reversed_ = [e for e in history if e["type"] == "RedemptionReversed"]
    assert [e["data"]["actor"] for e in reversed_] == ["support-key"] * 3
    assert reversed_[-1]["data"]["reason"] == "Hotel closed for renovation"


async def test_a_transfer_moves_points_between_two_members(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app:
        await _member(admin, "M-1001")
        await _member(admin, "M-2002", amount="100.00")  # 1,000 points
        body = {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 500, "reason": "Gift"}
        r = await app.post("/v1/transfers", headers=_key("gift-1"), json=body)
        assert r.status_code == 201, r.text
        transfer = r.json()
        assert transfer["transfer_id"].startswith("tr-")
        assert (transfer["from_member_id"], transfer["to_member_id"], transfer["points"]) == ("M-1001", "M-2002", 500)
        assert transfer["lots"] == [{"lot_id": LOT, "points": 500}] and transfer["available_after"] == 2100
        again = await app.post("/v1/transfers", headers=_key("gift-1"), json=body)
        assert again.status_code == 200 and again.json() == transfer
        r = await app.post("/v1/transfers", headers=_key("gift-1"), json={**body, "points": 501})
        assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused"

        received = (await _history(api, "M-2002"))[0]
        assert received["type"] == "PointsTransferredIn" and received["position"] == transfer["position"]
        assert (received["data"]["points"], received["data"]["origin_lot_id"]) == (500, f"M-1001/{LOT}")
        # The receiver's lot keeps the sender's date, and the receiver can spend it.
        r = await app.post("/v1/members/M-2002/redemptions", headers=_key("spend"),
                           json={"points": 1500, "reward": {"id": "R", "kind": "voucher"}})
        assert r.status_code == 201 and r.json()["available_after"] == 0, r.text

        r = await app.post("/v1/transfers", headers=_key("gift-2"), json={**body, "points": 99})
        assert r.status_code == 409 and r.json()["title"] == "Limit exceeded" and r.json()["limit"] == "points_min"
        r = await app.post("/v1/transfers", headers=_key("gift-3"), json={**body, "points": 2101})
        assert r.status_code == 409 and r.json()["title"] == "Insufficient points"
        r = await app.post("/v1/transfers", headers=_key("gift-4"), json={**body, "to_member_id": "nobody"})
        assert r.status_code == 404 and r.json()["member_id"] == "nobody"
        r = await app.post("/v1/transfers", headers=_key("gift-5"), json={**body, "from_member_id": "nobody"})
        assert r.status_code == 404 and r.json()["member_id"] == "nobody"


async def test_a_yearly_transfer_limit_is_a_409_naming_it(api: Api) -> None:
    async with api.client("admin") as admin, api.client("app") as app:
        await _member(admin, "M-1001", amount="30000.00")  # 150,500 points
        await _member(admin, "M-2002")
        body = {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 100_001, "reason": "Gift"}
        r = await app.post("/v1/transfers", headers=_key("gift-1"), json=body)
        assert r.status_code == 409, r.text
        problem = r.json()
        assert (problem["title"], problem["limit"]) == ("Limit exceeded", "sent_points_per_year")
        assert r.headers["content-type"] == "application/problem+json"
        r = await app.post("/v1/transfers", headers=_key("gift-2"), json={**body, "points": 100_000})
        assert r.status_code == 201 and r.json()["available_after"] == 50_500
        r = await app.post("/v1/transfers", headers=_key("gift-3"), json={**body, "points": 100})
        assert r.status_code == 409 and r.json()["limit"] == "sent_points_per_year"


# Each new route: (name, method, path template, body); {hold} and {redemption} are filled in.
MOVEMENTS = {
    "hold": ("/v1/members/M-1001/holds", HOLD),
    "capture": ("/v1/members/M-1001/holds/{hold}/capture", {"points": 100}),
    "release": ("/v1/members/M-1001/holds/{hold}/release", None),
    "reverse": ("/v1/members/M-1001/redemptions/{redemption}/reversals", {"points": 100, "reason": "Complaint"}),
    "transfer": ("/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 100,
                                   "reason": "Gift"}),
}
ALLOWED = {
    "ingest": set(),
    "app": {"hold", "capture", "release", "transfer"},
    "support": {"reverse"},
    "auditor": set(),
    "admin": set(MOVEMENTS),
}


async def test_each_role_is_allowed_and_refused_where_it_should_be(api: Api) -> None:
    async with api.client("admin") as admin:
        await _member(admin, "M-1001", amount="2000.00")  # 10,500 points
        await _member(admin, "M-2002")
        holds = iter([(await _hold(admin, f"setup-hold-{i}", points=100)).json()["hold_id"] for i in range(10)])
        redemption = (await admin.post("/v1/members/M-1001/redemptions", headers=_key("setup-redeem"),
                                       json={**REDEEM, "points": 1000})).json()["redemption_id"]
    for role, allowed in ALLOWED.items():
        async with api.client(role) as client:
            for name, (template, body) in MOVEMENTS.items():
                path = template.format(hold=next(holds) if "{hold}" in template else None, redemption=redemption)
                r = await client.post(path, headers=_key(f"{role}-{name}"), json=body)
                if name in allowed:
                    assert r.status_code == 201, (role, name, r.text)
                else:
                    assert r.status_code == 403, (role, name, r.text)
                    assert r.headers["content-type"] == "application/problem+json"
                    assert r.json()["title"] == "Forbidden"


BAD = [
    # (route, path, body, field), each refused with 422 naming the field.
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "points": 0}, "points"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "points": 10_000_001}, "points"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "points": "100"}, "points"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "points": 2.5}, "points"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "ttl_s": 0}, "ttl_s"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "ttl_s": 86_401}, "ttl_s"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "reward": {"id": "R", "kind": "cash"}}, "reward.kind"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "reward": {"id": "R/1", "kind": "voucher"}}, "reward.id"),
    ("hold", "/v1/members/M-1001/holds", {"points": 10}, "reward"),
    ("hold", "/v1/members/M-1001/holds", {**HOLD, "surprise": 1}, "surprise"),
    ("hold", "/v1/members/M%E2%80%911001/holds", HOLD, "member_id"),
    ("capture", "/v1/members/M-1001/holds/{hold}/capture", {"points": 0}, "points"),
    ("capture", "/v1/members/M-1001/holds/{hold}/capture", {}, "points"),
    ("capture", "/v1/members/M-1001/holds/{hold}/capture", {"points": True}, "points"),
    ("capture", "/v1/members/M-1001/holds/%2E%2E/capture", {"points": 10}, "hold_id"),
    ("capture", "/v1/members/M-1001/holds/" + "h" * 65 + "/capture", {"points": 10}, "hold_id"),
    ("release", "/v1/members/M-1001/holds/{hold}/release", {"points": 10}, "points"),
    ("release", "/v1/members/M-1001/holds/{hold}/release", [], "body"),
    ("release", "/v1/members/M-1001/holds/A%20B/release", None, "hold_id"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"reason": ""}, "reason"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"reason": "   "}, "reason"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"reason": "x" * 501}, "reason"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"reason": "a\u202eb"}, "reason"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"points": 10}, "reason"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"points": 0, "reason": "x"}, "points"),
    ("reverse", "/v1/members/M-1001/redemptions/{redemption}/reversals", {"points": 1.5, "reason": "x"}, "points"),
    ("reverse", "/v1/members/M-1001/redemptions/rd%0A1/reversals", {"reason": "x"}, "redemption_id"),
    ("transfer", "/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M-1001", "points": 100,
                                   "reason": "Gift"}, "to_member_id"),
    ("transfer", "/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M 2002", "points": 100,
                                   "reason": "Gift"}, "to_member_id"),
    ("transfer", "/v1/transfers", {"from_member_id": "", "to_member_id": "M-2002", "points": 100,
                                   "reason": "Gift"}, "from_member_id"),
    ("transfer", "/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 0,
                                   "reason": "Gift"}, "points"),
    ("transfer", "/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 100,
                                   "reason": "\u200b"}, "reason"),
    ("transfer", "/v1/transfers", {"from_member_id": "M-1001", "to_member_id": "M-2002", "points": 100},
     "reason"),
]


async def test_bad_input_names_the_field_and_changes_nothing(api: Api) -> None:
    async with api.client("admin") as admin:
        await _member(admin, "M-1001")
        await _member(admin, "M-2002")
        hold = (await _hold(admin, "setup-hold", points=100)).json()["hold_id"]
        r = await admin.post("/v1/members/M-1001/redemptions", headers=_key("setup-redeem"),
                             json={**REDEEM, "points": 100})
        redemption, position = r.json()["redemption_id"], r.json()["position"]

        async def balances() -> list[dict[str, Any]]:
            return [(await admin.get(f"/v1/members/{m}/balance", params={"min_position": position})).json()
                    for m in ("M-1001", "M-2002")]

        before = [await _history(api, m) for m in ("M-1001", "M-2002")], await balances()
        events = await api.container.pool.fetchval("SELECT count(*) FROM events")
        for i, (route, template, body, field) in enumerate(BAD):
            path = template.format(hold=hold, redemption=redemption)
            r = await admin.post(path, headers=_key(f"bad-{i}"), json=body)
            assert r.status_code == 422, (route, body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert field in {e["field"] for e in r.json()["errors"]}, (route, body, r.json())
            assert field in r.json()["detail"]
        for route, (template, body) in MOVEMENTS.items():  # the key is required on every write
            r = await admin.post(template.format(hold=hold, redemption=redemption), json=body)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key", (route, r.text)
        r = await admin.post(f"/v1/members/M-1001/holds/{hold}/release", content=b"{",
                             headers={**_key("bad-json"), "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["title"] == "Malformed JSON"
        assert await api.container.pool.fetchval("SELECT count(*) FROM events") == events
        assert ([await _history(api, m) for m in ("M-1001", "M-2002")], await balances()) == before
