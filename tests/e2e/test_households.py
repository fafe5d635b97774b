"""Household pools over HTTP: every route, the roles allowed and refused, bad input."""

from __future__ import annotations

import itertools

import pytest

from .conftest import Api

_keys = itertools.count()


def booking(member: str, occurred_at: str, amount: str = "420.00") -> dict:
    """A completed booking: an active lot expiring `expiry_months` after `occurred_at`."""
    return {"event_id": f"evt-{member}-{occurred_at}", "type": "booking.completed", "member_id": member,
            "booking_id": f"BK-{member}-{occurred_at}", "product": "flight", "amount": amount, "currency": "EUR",
            "occurred_at": occurred_at}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{next(_keys)}"}


async def seed(api: Api, *members: tuple[str, str]) -> None:
    async with api.client("admin") as admin:
        for member, at in members:
            r = await admin.post("/v1/booking-events", json=booking(member, at))
            assert r.status_code == 201, r.text


async def events_count(api: Api) -> int:
    return int(await api.container.pool.fetchval("SELECT count(*) FROM events"))


REWARD = {"id": "HTL-DISC-50", "kind": "hotel_discount"}


async def test_a_household_redeems_soonest_expiry_first_across_its_members(api: Api) -> None:
    # 2,600 points each (420 EUR of flight, with the first-booking bonus); B's lot expires first, then C's.
    await seed(api, ("M-A", "2026-11-20T09:30:00Z"), ("M-B", "2026-06-01T09:30:00Z"), ("M-C", "2026-09-01T09:30:00Z"))
    async with api.client("app") as app:
        create = {"household_id": "FAM-1", "head_member_id": "M-A"}
        headers = key()
        r = await app.post("/v1/households", json=create, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json() == {"household_id": "FAM-1", "head_member_id": "M-A", "members": ["M-A"],
                            "position": r.json()["position"]}
        again = await app.post("/v1/households", json=create, headers=headers)
        assert again.status_code == 200 and again.json() == r.json()
        r = await app.post("/v1/households", json=create, headers=key())
        assert r.status_code == 409 and r.json()["title"] == "Movement conflict"

        for member in ("M-B", "M-C"):
            r = await app.put(f"/v1/households/FAM-1/members/{member}", headers=key())
            assert r.status_code == 201, r.text
        assert r.json()["members"] == ["M-A", "M-B", "M-C"]
        written = r.json()["position"]
        r = await app.put("/v1/households/FAM-1/members/M-B", headers=key())  # a member already
        assert r.status_code == 200 and r.json()["members"] == ["M-A", "M-B", "M-C"] and r.json()["position"] is None

        r = await app.get("/v1/households/FAM-1/balance", params={"min_position": written})
        assert r.status_code == 200, r.text
        assert r.json()["available"] == 7_800
        assert [(m["member_id"], m["role"], m["available"]) for m in r.json()["members"]] == [
            ("M-A", "head", 2_600), ("M-B", "member", 2_600), ("M-C", "member", 2_600)]

        # A member's hold shows as held, and leaves the household's available.
        r = await app.post("/v1/members/M-B/holds", json={"points": 600, "reward": REWARD}, headers=key())
        assert r.status_code == 201, r.text
        hold_id = r.json()["hold_id"]
        r = await app.get("/v1/households/FAM-1/balance", params={"min_position": r.json()["position"]})
        assert (r.json()["available"], r.json()["held"]) == (7_200, 600)
        assert [m["held"] for m in r.json()["members"]] == [0, 600, 0]
        r = await app.post(f"/v1/members/M-B/holds/{hold_id}/release", headers=key())
        assert r.status_code == 201, r.text
        written = r.json()["position"]

        body = {"points": 3_000, "reward": REWARD}
        headers = key()
        r = await app.post("/v1/households/FAM-1/redemptions", json=body, headers=headers)
        assert r.status_code == 201, r.text
        result = r.json()
        assert result["points"] == 3_000 and result["reward"] == REWARD
        assert [(m["member_id"], m["points"], m["lots"]) for m in result["members"]] == [
            ("M-B", 2_600, [{"lot_id": "booking:BK-M-B-2026-06-01T09:30:00Z", "points": 2_600}]),
            ("M-C", 400, [{"lot_id": "booking:BK-M-C-2026-09-01T09:30:00Z", "points": 400}]),
        ]
        replay = await app.post("/v1/households/FAM-1/redemptions", json=body, headers=headers)
        assert replay.status_code == 200 and replay.json() == result
        r = await app.post("/v1/households/FAM-1/redemptions", json={**body, "points": 5_000}, headers=headers)
        assert r.status_code == 409 and r.json()["title"] == "Idempotency key reused"

        r = await app.post("/v1/households/FAM-1/redemptions", json={"points": 4_801, "reward": REWARD}, headers=key())
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert (r.json()["available"], r.json()["requested"]) == (4_800, 4_801)

        r = await app.get("/v1/households/FAM-1/balance", params={"min_position": result["position"]})
        assert r.json()["available"] == 4_800
        assert [m["available"] for m in r.json()["members"]] == [2_600, 0, 2_200]
        r = await app.get("/v1/members/M-C/history", params={"limit": 1})
        (entry,) = r.json()["events"]
        assert entry["type"] == "PointsRedeemedForHousehold"
        assert (entry["data"]["household_id"], entry["data"]["redemption_id"]) == ("FAM-1", result["redemption_id"])
        r = await app.get("/v1/members/M-C/balance")
        assert r.json()["available"] == 2_200 and r.json()["lifetime_redeemed"] == 400
    async with api.client("support") as support:  # a member's part is reversed on its own, by the household's id
        r = await support.post(f"/v1/members/M-C/redemptions/{result['redemption_id']}/reversals",
                               json={"points": 150, "reason": "Voucher cancelled"}, headers=key())
        assert r.status_code == 201, r.text
        r = await support.get("/v1/members/M-C/balance", params={"min_position": r.json()["position"]})
        assert r.json()["available"] == 2_350
    async with api.client("app") as app:

        # A member leaves (not the head); its points stay its own; it may head a household of its own.
        r = await app.delete("/v1/households/FAM-1/members/M-C", headers=key())
        assert r.status_code == 200 and r.json()["members"] == ["M-A", "M-B"]
        r = await app.delete("/v1/households/FAM-1/members/M-C", headers=key())
        assert r.status_code == 404 and r.json()["title"] == "Household member not found"
        r = await app.delete("/v1/households/FAM-1/members/M-A", headers=key())
        assert r.status_code == 409 and "head" in r.json()["detail"]
        r = await app.post("/v1/households", json={"household_id": "FAM-2", "head_member_id": "M-B"}, headers=key())
        assert r.status_code == 409 and r.json()["household_id"] == "FAM-1"  # in one household at most
        r = await app.post("/v1/households", json={"household_id": "FAM-2", "head_member_id": "M-C"}, headers=key())
        assert r.status_code == 201

        r = await app.get("/v1/households/FAM-1/balance", params={"min_position": r.json()["position"]})
        assert r.json()["available"] == 2_600  # M-A's; M-B spent all
        for method, path in (("GET", "/v1/households/NOPE/balance"), ("PUT", "/v1/households/NOPE/members/M-A"),
                             ("POST", "/v1/households/NOPE/redemptions")):
            r = await app.request(method, path, headers=key(), json={"points": 1, "reward": REWARD})
            assert r.status_code == 404 and r.json()["title"] == "Household not found", (method, path)
        r = await app.put("/v1/households/FAM-2/members/NOBODY", headers=key())
        assert r.status_code == 404 and r.json()["title"] == "Member not found"
    # A household is no member: its stream has no balance row.
    assert not await api.container.pool.fetchval("SELECT count(*) FROM balances WHERE member_id LIKE 'household/%'")


async def test_a_household_has_at_most_household_members_max_members(api: Api) -> None:
    members = [f"M-{n}" for n in range(api.container.rules.household_members_max + 1)]
    await seed(api, *((m, "2026-11-20T09:30:00Z") for m in members))
    async with api.client("admin") as admin:
        r = await admin.post("/v1/households", json={"household_id": "BIG", "head_member_id": members[0]}, headers=key())
        assert r.status_code == 201
        for member in members[1:-1]:
            assert (await admin.put(f"/v1/households/BIG/members/{member}", headers=key())).status_code == 201
        before = await events_count(api)
        r = await admin.put(f"/v1/households/BIG/members/{members[-1]}", headers=key())
        assert r.status_code == 409 and r.json()["limit"] == "household_members_max"
        assert await events_count(api) == before


WRITES = {
    "create": ("POST", "/v1/households", {"household_id": "FAM-{role}", "head_member_id": "M-{role}"}),
    "add": ("PUT", "/v1/households/FAM-{role}/members/M-{role}-2", None),
    "redeem": ("POST", "/v1/households/FAM-{role}/redemptions", {"points": 10, "reward": REWARD}),
    "remove": ("DELETE", "/v1/households/FAM-{role}/members/M-{role}-2", None),
}
ALLOWED = {"app": True, "admin": True, "support": False, "auditor": False, "ingest": False}
READERS = {"app", "admin", "support", "auditor"}  # who reads member accounts reads household balances


@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_app_and_admin_keys_manage_households_and_others_are_refused(api: Api, role: str) -> None:
    await seed(api, (f"M-{role}", "2026-11-20T09:30:00Z"), (f"M-{role}-2", "2026-11-20T09:30:00Z"))
    async with api.client(role) as client:
        for name, (method, path, body) in WRITES.items():
            payload = None if body is None else {k: v.format(role=role) if isinstance(v, str) else v
                                                 for k, v in body.items()}
            r = await client.request(method, path.format(role=role), headers=key(), json=payload)
            if ALLOWED[role]:
                assert r.status_code in (200, 201), (role, name, r.text)
            else:
                assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", (role, name)
    async with api.client("admin") as admin:  # so that there is a household to read
        r = await admin.post("/v1/households", json={"household_id": "FAM-read", "head_member_id": f"M-{role}-2"},
                             headers=key())
        assert r.status_code == 201, r.text
    async with api.client(role) as client:
        r = await client.get("/v1/households/FAM-read/balance", params={"min_position": r.json()["position"]})
        assert r.status_code == (200 if role in READERS else 403), (role, r.text)


BAD = [
    ("POST", "/v1/households", {"household_id": "FAM 1", "head_member_id": "M-A"}, "household_id"),
    ("POST", "/v1/households", {"household_id": "FAM-1", "head_member_id": "household/x"}, "head_member_id"),
    ("POST", "/v1/households", {"household_id": "FAM-1"}, "head_member_id"),
    ("POST", "/v1/households", {"household_id": "FAM-1", "head_member_id": "M-A", "extra": 1}, "extra"),
    ("PUT", "/v1/households/FAM-1/members/M%20B", None, "member_id"),
    ("PUT", "/v1/households/FAM-1/members/" + "M" * 65, None, "member_id"),
    ("DELETE", "/v1/households/FAM!1/members/M-B", None, "household_id"),
    ("GET", "/v1/households/-FAM/balance", None, "household_id"),
    ("POST", "/v1/households/FAM-1/redemptions", {"points": 0, "reward": REWARD}, "points"),
    ("POST", "/v1/households/FAM-1/redemptions", {"points": "10", "reward": REWARD}, "points"),
    ("POST", "/v1/households/FAM-1/redemptions", {"points": 10, "reward": {"id": "R", "kind": "cash"}}, "reward.kind"),
    ("POST", "/v1/households/FAM-1/redemptions", {"points": 10}, "reward"),
]


async def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(api: Api) -> None:
    await seed(api, ("M-A", "2026-11-20T09:30:00Z"), ("M-B", "2026-11-20T09:30:00Z"))
    async with api.client("admin") as admin:
        r = await admin.post("/v1/households", json={"household_id": "FAM-1", "head_member_id": "M-A"}, headers=key())
        assert r.status_code == 201
        before = await events_count(api)
        for method, path, body, field in BAD:
            r = await admin.request(method, path, headers=key(), json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert field in [e["field"] for e in r.json()["errors"]], (path, body, r.json())
        r = await admin.put("/v1/households/FAM-1/members/M-B")  # no Idempotency-Key
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["Idempotency-Key"]
        r = await admin.get("/v1/households/FAM-1/balance", params={"min_position": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "min_position"
        r = await admin.patch("/v1/households/FAM-1/members/M-B", headers=key())
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"  # both routes of the path
        assert await events_count(api) == before


async def test_redemptions_racing_roster_changes_apply_on_some_roster_and_never_fail(api: Api) -> None:
    import asyncio

    await seed(api, ("M-A", "2026-11-20T09:30:00Z"), ("M-B", "2026-06-01T09:30:00Z"))
    async with api.client("app") as app:
        assert (await app.post("/v1/households", json={"household_id": "FAM-R", "head_member_id": "M-A"},
                               headers=key())).status_code == 201

        async def toggle(n: int) -> int:
            method = app.put if n % 2 == 0 else app.delete
            return (await method("/v1/households/FAM-R/members/M-B", headers=key())).status_code

        async def spend() -> int:
            r = await app.post("/v1/households/FAM-R/redemptions", json={"points": 100, "reward": REWARD},
                               headers=key())
            return r.status_code

        statuses = await asyncio.wait_for(asyncio.gather(*(
            coroutine for n in range(6) for coroutine in (toggle(n), spend()))), timeout=60)
    toggles, spends = statuses[0::2], statuses[1::2]
    assert set(toggles) <= {200, 201, 404}, toggles  # a DELETE may come before its PUT
    # Applied on the roster of the moment, or (a member joined each time it was sent, three
    # times running) a retryable 503; never anything else.
    assert set(spends) <= {201, 503}, spends
    async with api.client("app") as app:
        head = await api.container.store.head()
        r = await app.get("/v1/households/FAM-R/balance", params={"min_position": head})
        members = {m["member_id"]: m["available"] for m in r.json()["members"]}
        a = (await app.get("/v1/members/M-A/balance", params={"min_position": head})).json()["available"]
        b = (await app.get("/v1/members/M-B/balance", params={"min_position": head})).json()["available"]
    assert a + b == 2 * 2_600 - 100 * spends.count(201)
    assert members["M-A"] == a
