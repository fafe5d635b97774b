"""The reward catalogue over HTTP: every route, the roles allowed and refused, bad input
(422 naming the field, nothing changed), window and stock refusals, tier pricing, miles,
stock coming back, and 50 concurrent redemptions of a reward with stock 10."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from .conftest import Api

_keys = itertools.count()
HOTEL = {"kind": "hotel_discount", "names": {"en": "50% off a hotel night", "zh-CN": "酒店住宿五折"},
         "points_by_tier": {"member": 500, "gold": 300}, "stock": 3}
MILES = {"kind": "airline_miles", "names": {"en": "Air China miles"}, "points_by_tier": {"member": 1001},
         "stock": None, "miles_ratio": 0.5, "partner": "CA"}


def booking(member: str, amount: str = "420.00") -> dict:
    """A completed flight: 5 points a euro and 500 for the first booking (420 EUR: 2,600)."""
    return {"event_id": f"evt-{member}", "type": "booking.completed", "member_id": member,
            "booking_id": f"BK-{member}", "product": "flight", "amount": amount, "currency": "EUR",
            "occurred_at": "2026-11-20T09:30:00Z"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"cat-{next(_keys)}"}


async def seed(api: Api, *members: str, amount: str = "420.00") -> None:
    async with api.client("ingest") as ingest:
        for member in members:
            r = await ingest.post("/v1/booking-events", json=booking(member, amount))
            assert r.status_code == 201, r.text


async def define(api: Api, reward_id: str, body: dict[str, Any], status: int = 201) -> dict:
    async with api.client("admin") as admin:
        r = await admin.put(f"/v1/programme/rewards/{reward_id}", json=body)
    assert r.status_code == status, r.text
    return r.json()


async def events_count(api: Api) -> int:
    return int(await api.container.pool.fetchval("SELECT count(*) FROM events"))


async def test_every_catalogue_route_with_its_roles_and_tier_prices(api: Api) -> None:
    await seed(api, "M-1")
    await seed(api, "M-GOLD", amount="3000.00")  # 15,500 qualifying points: gold
    created = await define(api, "HTL-50", HOTEL)
    assert created["taken"] == 0 and created["remaining"] == 3 and created["names"]["zh-CN"] == "酒店住宿五折"
    assert (await define(api, "HTL-50", HOTEL, status=200))["position"] is None  # the same: nothing changed
    replaced = await define(api, "HTL-50", {**HOTEL, "stock": 5}, status=200)
    assert replaced["stock"] == 5 and replaced["position"] > created["position"]
    for role in ("app", "support", "auditor", "ingest"):
        async with api.client(role) as client:
            r = await client.put("/v1/programme/rewards/HTL-50", json=HOTEL)
            assert r.status_code == 403, (role, r.text)
    miles = await define(api, "MILES-CA", MILES)
    for role in ("app", "support", "auditor", "admin"):
        async with api.client(role) as client:
            r = await client.get("/v1/programme/rewards", params={"min_position": miles["position"], "limit": 1})
            assert r.status_code == 200, (role, r.text)
            assert [x["reward_id"] for x in r.json()["rewards"]] == ["HTL-50"] and r.json()["next_after"] == "HTL-50"
            r = await client.get("/v1/programme/rewards/MILES-CA")
            assert r.status_code == 200 and r.json()["miles_ratio"] == "0.5" and r.json()["partner"] == "CA"
    async with api.client("ingest") as ingest:
        assert (await ingest.get("/v1/programme/rewards")).status_code == 403
    async with api.client("admin") as admin:
        r = await admin.delete("/v1/programme/rewards/HTL-50")
        assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"  # both routes of the path
    async with api.client("app") as app:
        for member, tier, price in (("M-1", "member", 500), ("M-GOLD", "gold", 300)):
            r = await app.get("/v1/programme/rewards", params={"member_id": member})
            assert r.status_code == 200 and r.json()["tier"] == tier
            assert r.json()["rewards"][0]["price"] == price and r.json()["rewards"][0]["unavailable"] is None
        r = await app.get("/v1/programme/rewards", params={"after": "HTL-50", "member_id": "M-1"})
        assert [(x["reward_id"], x["price"], x["miles"]) for x in r.json()["rewards"]] == [("MILES-CA", 1001, 500)]
        assert r.json()["next_after"] is None
        r = await app.get("/v1/programme/rewards", params={"member_id": "M-NOBODY"})
        assert r.status_code == 404
        r = await app.get("/v1/programme/rewards/NOPE")
        assert r.status_code == 404 and r.json()["reward_id"] == "NOPE"

        r = await app.post("/v1/members/M-GOLD/redemptions", json={"reward": {"id": "HTL-50"}}, headers=key())
        assert r.status_code == 201, r.text
        assert r.json()["points"] == 300 and r.json()["reward"] == {"id": "HTL-50", "kind": "hotel_discount"}
        assert r.json()["catalogue"] == {"tier": "gold", "points": 300, "miles": None, "partner": None}
        assert r.json()["available_after"] == 15_500 - 300
        r = await app.post("/v1/members/M-1/redemptions", json={"reward": {"id": "MILES-CA"}}, headers=key())
        assert r.status_code == 201 and r.json()["catalogue"] == {"tier": "member", "points": 1001, "miles": 500,
                                                                   "partner": "CA"}
        r = await app.post("/v1/members/M-1/redemptions", json={"reward": {"id": "NOPE"}}, headers=key())
        assert r.status_code == 404
        # Free-form, as before: the caller's points, no catalogue, whatever the id.
        r = await app.post("/v1/members/M-1/redemptions", json={"points": 100, "reward": {"id": "HTL-50",
                                                                                          "kind": "voucher"}},
                           headers=key())
        assert r.status_code == 201 and r.json()["points"] == 100 and r.json()["catalogue"] is None
        r = await app.get("/v1/programme/rewards/HTL-50")
        assert (r.json()["taken"], r.json()["remaining"]) == (1, 4)
    async with api.client("admin") as admin:
        history = (await admin.get("/v1/members/M-GOLD/history")).json()
        types = [e["type"] for e in history["events"]]
        assert "CatalogueRewardTaken" in types and "PointsRedeemed" in types


async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(api: Api) -> None:
    await seed(api, "M-2")
    await define(api, "HTL-50", HOTEL)
    before = await events_count(api)
    bad = [
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "kind": "airline_miles"}, "miles_ratio"),
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "miles_ratio": 2.0}, "miles_ratio"),
        ("put", "/v1/programme/rewards/HTL-9", {**MILES, "partner": None}, "partner"),
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "available_from": "2027-01-01T00:00:00"},
         "available_from"),
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "points_by_tier": {}}, "points_by_tier"),
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "points_by_tier": {"member": 0}}, "points_by_tier"),
        ("put", "/v1/programme/rewards/HTL-9", {**HOTEL, "stock": -1}, "stock"),
        ("put", "/v1/programme/rewards/bad%20id", HOTEL, "reward_id"),
        ("post", "/v1/members/M-2/redemptions", {"reward": {"id": "HTL-50", "kind": "voucher"}}, "reward.kind"),
        ("post", "/v1/members/M-2/redemptions", {"points": 10, "reward": {"id": "HTL-50"}}, "reward.kind"),
        ("post", "/v1/members/M-2/holds", {"reward": {"id": "HTL-50"}, "ttl_s": 0}, "ttl_s"),
    ]
    async with api.client("admin") as admin:
        for method, path, body, field in bad:
            r = await admin.request(method.upper(), path, json=body, headers=key())
            assert r.status_code == 422, (path, body, r.text)
            assert field in r.json()["detail"], (field, r.json())
        r = await admin.get("/v1/programme/rewards", params={"limit": 0})
        assert r.status_code == 422 and "limit" in r.json()["detail"]
        # A window ending before it starts: the schema cannot say it, so a 409, and nothing changes either.
        r = await admin.put("/v1/programme/rewards/HTL-9", json={**HOTEL, "available_from": "2027-01-01T00:00:00Z",
                                                                "available_to": "2026-01-01T00:00:00Z"})
        assert r.status_code == 409 and "window" in r.json()["detail"]
    assert await events_count(api) == before


async def test_window_and_stock_refusals_name_why_and_holds_and_reversals_give_stock_back(api: Api) -> None:
    await seed(api, "M-3", "M-4")
    await define(api, "SOON", {**HOTEL, "available_from": "2099-01-01T00:00:00Z"})
    await define(api, "PAST", {**HOTEL, "available_to": "2020-01-01T00:00:00Z"})
    await define(api, "GOLD-ONLY", {**HOTEL, "points_by_tier": {"gold": 100}})
    await define(api, "ONE", {**HOTEL, "stock": 1})
    async with api.client("app") as app:
        for reward, reason in (("SOON", "not_yet_available"), ("PAST", "no_longer_available"),
                               ("GOLD-ONLY", "not_offered_to_tier")):
            r = await app.post("/v1/members/M-3/redemptions", json={"reward": {"id": reward}}, headers=key())
            assert r.status_code == 409 and r.json()["reason"] == reason, r.text
        r = await app.post("/v1/members/M-3/holds", json={"reward": {"id": "ONE"}, "ttl_s": 600}, headers=key())
        assert r.status_code == 201 and r.json()["points"] == 500 and r.json()["catalogue"]["tier"] == "member"
        hold_id = r.json()["hold_id"]
        r = await app.post("/v1/members/M-4/redemptions", json={"reward": {"id": "ONE"}}, headers=key())
        assert r.status_code == 409 and r.json()["reason"] == "out_of_stock" and r.json()["title"] == \
            "Reward unavailable"
        r = await app.post(f"/v1/members/M-3/holds/{hold_id}/capture", json={"points": 100}, headers=key())
        assert r.status_code == 409 and "captured whole" in r.json()["detail"]
        release = key()
        r = await app.post(f"/v1/members/M-3/holds/{hold_id}/release", headers=release)
        assert r.status_code == 201, r.text
        r = await app.post(f"/v1/members/M-3/holds/{hold_id}/release", headers=release)  # a retry: the answer again
        assert r.status_code == 200, r.text
        assert (await app.get("/v1/programme/rewards/ONE")).json()["remaining"] == 1
        r = await app.post("/v1/members/M-4/redemptions", json={"reward": {"id": "ONE"}}, headers=key())
        assert r.status_code == 201
        redemption_id = r.json()["redemption_id"]
    async with api.client("support") as support:
        path = f"/v1/members/M-4/redemptions/{redemption_id}/reversals"
        r = await support.post(path, json={"points": 100, "reason": "goodwill"}, headers=key())
        assert r.status_code == 201, r.text
        async with api.client("app") as app:
            assert (await app.get("/v1/programme/rewards/ONE")).json()["remaining"] == 0  # kept: reversed in part
        r = await support.post(path, json={"reason": "trip cancelled"}, headers=key())
        assert r.status_code == 201, r.text
    async with api.client("app") as app:
        assert (await app.get("/v1/programme/rewards/ONE")).json()["remaining"] == 1
    async with api.client("admin") as admin:
        r = await admin.put("/v1/programme/rewards/ONE", json={**HOTEL, "stock": 0})
        assert r.status_code == 200 and r.json()["remaining"] == 0


async def test_fifty_concurrent_redemptions_of_a_reward_with_stock_ten_give_exactly_ten(api: Api) -> None:
    members = [f"M-C{i}" for i in range(10)]  # 2,600 points each: five redemptions of 500
    await seed(api, *members)
    await define(api, "LAST-10", {**HOTEL, "stock": 10})
    async with api.client("app") as app:
        async def redeem(i: int) -> int:
            r = await app.post(f"/v1/members/{members[i % 10]}/redemptions", json={"reward": {"id": "LAST-10"}},
                               headers=key())
            assert r.status_code in (201, 409), r.text
            assert r.status_code == 201 or r.json()["reason"] == "out_of_stock", r.text
            return r.status_code

        codes = await asyncio.wait_for(asyncio.gather(*(redeem(i) for i in range(50))), 20)
        assert codes.count(201) == 10 and codes.count(409) == 40
        r = await app.get("/v1/programme/rewards/LAST-10")
        assert (r.json()["taken"], r.json()["remaining"]) == (10, 0)
    redeemed = await api.container.pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'PointsRedeemed' AND data->>'reward_id' = 'LAST-10'")
    assert redeemed == 10
