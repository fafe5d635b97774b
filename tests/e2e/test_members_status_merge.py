"""Members' status and merges over HTTP: every route, the roles allowed and refused, bad
input (422 naming the field, nothing changed), 404 with merged_into, and the 409s."""

from __future__ import annotations

import itertools

import httpx

from .conftest import Api

_keys = itertools.count()
REWARD = {"id": "HTL-DISC-50", "kind": "hotel_discount"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"mk-{next(_keys)}"}


def booking(member: str, booking_id: str, kind: str = "booking.completed", at: str = "2026-11-20T09:30:00Z") -> dict:
    return {"event_id": f"evt-{member}-{booking_id}-{kind}", "type": kind, "member_id": member,
            "booking_id": booking_id, "product": "flight", "amount": "420.00", "currency": "EUR", "occurred_at": at}


async def events_count(api: Api) -> int:
    return int(await api.container.pool.fetchval("SELECT count(*) FROM events"))


async def post(client: httpx.AsyncClient, path: str, body: dict) -> httpx.Response:
    return await client.post(path, json=body, headers=key())


async def test_status_suspends_spending_not_earning_and_comes_back(api: Api) -> None:
    async with api.client("admin") as admin, api.client("support") as support, api.client("app") as app:
        r = await admin.post("/v1/booking-events", json=booking("M-S", "BK-S1"))
        assert r.status_code == 201, r.text
        assert (await support.get("/v1/members/M-S/status")).json() == {"member_id": "M-S", "status": "active",
                                                                         "position": None}
        r = await post(support, "/v1/members/M-S/status", {"status": "suspended", "reason": "fraud_review"})
        assert r.status_code == 201 and r.json()["status"] == "suspended" and r.json()["position"] > 0, r.text
        again = await post(support, "/v1/members/M-S/status", {"status": "suspended", "reason": "fraud_review"})
        assert again.status_code == 200 and again.json()["position"] is None

        r = await post(app, "/v1/members/M-S/redemptions", {"points": 100, "reward": REWARD})
        assert r.status_code == 409 and r.json()["title"] == "Member status conflict", r.text
        assert r.json()["member_status"] == "suspended" and r.json()["member_id"] == "M-S"
        r = await post(app, "/v1/members/M-S/holds", {"points": 100, "reward": REWARD})
        assert r.status_code == 409 and r.json()["member_status"] == "suspended", r.text
        r = await admin.post("/v1/booking-events", json=booking("M-S", "BK-S2"))
        assert r.status_code == 201 and r.json()["points"] > 0, r.text  # earning goes on
        assert (await app.get("/v1/members/M-S/status")).json()["status"] == "suspended"

        # As of an instant before the suspension, the member was active.
        r = await app.get("/v1/members/M-S/status", params={"as_of": "2026-11-21T00:00:00Z"})
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
        r = await post(support, "/v1/members/M-S/status", {"status": "active", "reason": "review_cleared"})
        assert r.status_code == 201 and r.json()["status"] == "active"
        r = await post(app, "/v1/members/M-S/redemptions", {"points": 100, "reward": REWARD})
        assert r.status_code == 201, r.text

        # Closed: nothing spent, no new booking earns; a closed member is not suspended; reopened.
        r = await post(support, "/v1/members/M-S/status", {"status": "closed", "reason": "customer_request"})
        assert r.status_code == 201 and r.json()["status"] == "closed"
        r = await admin.post("/v1/booking-events", json=booking("M-S", "BK-S3"))
        assert r.status_code == 409 and r.json()["member_status"] == "closed", r.text
        r = await post(support, "/v1/members/M-S/status", {"status": "suspended", "reason": "fraud_review"})
        assert r.status_code == 409 and r.json()["member_status"] == "closed"
        r = await post(support, "/v1/members/M-S/status", {"status": "active", "reason": "reopened"})
        assert r.status_code == 201 and r.json()["status"] == "active"


async def test_status_roles_bad_input_and_unknown_members(api: Api) -> None:
    async with api.client("admin") as admin:
        assert (await admin.post("/v1/booking-events", json=booking("M-R", "BK-R1"))).status_code == 201
    for role in ("app", "auditor", "ingest"):
        async with api.client(role) as client:
            r = await post(client, "/v1/members/M-R/status", {"status": "suspended", "reason": "fraud_review"})
            assert r.status_code == 403, (role, r.text)
            r = await post(client, "/v1/members/M-R/merges", {"member_id": "M-X", "reason": "duplicate_account"})
            assert r.status_code == 403, (role, r.text)
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/v1/members/M-R/status")).status_code == 401
    async with api.client("support") as support:
        before = await events_count(api)
        for body, field in (({"status": "frozen", "reason": "fraud_review"}, "status"),
                            ({"status": "suspended", "reason": "He called us names"}, "reason"),
                            ({"status": "suspended"}, "reason"),
                            ({"status": "suspended", "reason": "fraud_review", "note": "x"}, "note")):
            r = await post(support, "/v1/members/M-R/status", body)
            assert r.status_code == 422, r.text
            assert field in {e["field"] for e in r.json()["errors"]}, (field, r.json())
        for body, field in (({"reason": "duplicate_account"}, "member_id"),
                            ({"member_id": "M X", "reason": "duplicate_account"}, "member_id"),
                            ({"member_id": "M-X", "reason": "because"}, "reason")):
            r = await post(support, "/v1/members/M-R/merges", body)
            assert r.status_code == 422 and field in {e["field"] for e in r.json()["errors"]}, r.text
        assert await events_count(api) == before
        r = await post(support, "/v1/members/M-NOBODY/status", {"status": "suspended", "reason": "fraud_review"})
        assert r.status_code == 404 and r.json()["title"] == "Member not found"
        assert (await support.get("/v1/members/M-NOBODY/status")).status_code == 404


async def test_a_merge_moves_everything_and_the_duplicate_answers_404_with_merged_into(api: Api) -> None:
    async with api.client("admin") as admin, api.client("support") as support, api.client("app") as app:
        for member, booking_id in (("M-A", "BK-A1"), ("M-D", "BK-D1"), ("M-D", "BK-D2")):
            r = await admin.post("/v1/booking-events", json=booking(member, booking_id))
            assert r.status_code == 201, r.text
        pending = booking("M-D", "BK-D3", "booking.confirmed")
        r = await admin.post("/v1/booking-events", json=pending)
        assert r.status_code == 201, r.text
        r = await app.get("/v1/members/M-D/balance", params={"min_position": r.json()["position"]})
        dup = r.json()
        a = (await app.get("/v1/members/M-A/balance")).json()

        r = await post(support, "/v1/members/M-A/merges", {"member_id": "M-D", "reason": "duplicate_account"})
        assert r.status_code == 201, r.text
        merged = r.json()
        assert merged["member_id"] == "M-A" and merged["merged_member_id"] == "M-D"
        assert (merged["lots"], merged["bookings"], merged["points"], merged["pending"], merged["debt"]) == (
            3, 3, dup["available"], dup["pending"], 0)

        position = {"min_position": merged["position"]}
        r = await app.get("/v1/members/M-A/balance", params=position)
        assert r.json()["available"] == a["available"] + dup["available"]
        assert r.json()["pending"] == a["pending"] + dup["pending"]
        for path in ("balance", "tier", "expiry-schedule", "history", "statement", "verification", "segment",
                     "status"):
            r = await app.get(f"/v1/members/M-D/{path}", params=position if path == "balance" else None)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["title"] == "Member merged" and r.json()["merged_into"] == "M-A", (path, r.json())
        schedule = (await app.get("/v1/members/M-A/expiry-schedule")).json()
        assert {"booking:BK-D1", "booking:BK-D2"} <= {lot["lot_id"] for lot in schedule["lots"]}

        # Later booking events of the duplicate apply to the survivor: a completion, a
        # cancellation of a booking earned before the merge, and a new booking.
        r = await admin.post("/v1/booking-events", json=booking("M-D", "BK-D3", "booking.completed"))
        assert r.status_code == 201 and r.json()["member_id"] == "M-A", r.text
        r = await admin.post("/v1/booking-events", json=booking("M-D", "BK-D1", "booking.cancelled"))
        assert r.status_code == 201 and r.json()["member_id"] == "M-A" and r.json()["points"] < 0, r.text
        r = await admin.post("/v1/booking-events", json=booking("M-D", "BK-D9"))
        assert r.status_code == 201 and r.json()["member_id"] == "M-A", r.text
        again = await admin.post("/v1/booking-events", json=booking("M-D", "BK-D9"))
        assert again.status_code == 200 and again.json() == r.json()

        # Writes to the duplicate itself are refused with the survivor's id.
        r = await post(app, "/v1/members/M-D/redemptions", {"points": 1, "reward": REWARD})
        assert r.status_code == 404 and r.json()["merged_into"] == "M-A", r.text

        # 409s and 404s: into itself, a merged member, an unknown one.
        r = await post(support, "/v1/members/M-A/merges", {"member_id": "M-A", "reason": "duplicate_account"})
        assert r.status_code == 409, r.text
        r = await post(support, "/v1/members/M-A/merges", {"member_id": "M-D", "reason": "duplicate_account"})
        assert r.status_code == 404 and r.json()["merged_into"] == "M-A", r.text
        r = await post(support, "/v1/members/M-A/merges", {"member_id": "M-NOBODY", "reason": "duplicate_account"})
        assert r.status_code == 404 and r.json()["title"] == "Member not found", r.text


async def test_merges_refused_by_state_change_nothing(api: Api) -> None:
    async with api.client("admin") as admin, api.client("support") as support, api.client("app") as app:
        for member, booking_id in (("M-P", "BK-P1"), ("M-Q", "BK-P1"), ("M-H", "BK-H1"), ("M-U", "BK-U1")):
            assert (await admin.post("/v1/booking-events", json=booking(member, booking_id))).status_code == 201
        assert (await post(app, "/v1/members/M-H/holds", {"points": 10, "reward": REWARD})).status_code == 201
        r = await post(support, "/v1/members/M-U/status", {"status": "suspended", "reason": "fraud_review"})
        assert r.status_code == 201
        before = await events_count(api)
        for duplicate, why in (("M-Q", "bookings"), ("M-H", "open_holds"), ("M-U", "suspended")):
            r = await post(support, "/v1/members/M-P/merges", {"member_id": duplicate, "reason": "duplicate_account"})
            assert r.status_code == 409, (duplicate, r.text)
            body = r.json()
            assert body.get("conflicting") == why or why in body or body.get("member_status") == why, body
        assert await events_count(api) == before
        assert not await api.container.pool.fetchval("SELECT count(*) FROM member_redirects")


async def _merged(api: Api) -> None:
    """M-D merged into M-A."""
    async with api.client("admin") as admin, api.client("support") as support:
        for member, booking_id in (("M-A", "BK-A1"), ("M-D", "BK-D1")):
            assert (await admin.post("/v1/booking-events", json=booking(member, booking_id))).status_code == 201
        r = await post(support, "/v1/members/M-A/merges", {"member_id": "M-D", "reason": "duplicate_account"})
        assert r.status_code == 201, r.text


MEMBER_READS = ("balance", "tier", "expiry-schedule", "history", "statement", "verification", "segment")


async def test_a_merge_is_told_only_to_a_caller_who_may_read_the_member(api: Api) -> None:
    # The merged check ran before the key check: with no key, a wrong key or a key of
    # another role, a read of the duplicate answered 404 naming the survivor.
    await _merged(api)
    async with api.client(None) as nobody, api.client(None, Authorization="Bearer lk_0.unknown") as unknown, \
            api.client("ingest") as ingest, api.client("app") as app:
        for path in MEMBER_READS:
            for client, status in ((nobody, 401), (unknown, 401), (ingest, 403)):
                r = await client.get(f"/v1/members/M-D/{path}")
                assert r.status_code == status and "M-A" not in r.text, (path, status, r.text)
        r = await app.get("/v1/members/M-D/balance")
        assert r.status_code == 404 and r.json()["merged_into"] == "M-A", r.text


async def test_a_merged_duplicate_s_personal_data_can_be_erased(api: Api) -> None:
    # The erasure destroyed the duplicate's data key, then its event was refused because
    # the member was merged: a 404 "Member merged" for an erasure that had happened, and
    # none on the record.
    async with api.client("admin") as admin, api.client("support") as support:
        r = await support.post("/v1/members", json={"member_id": "M-D", "profile": {"email": "dup@example.com"}})
        assert r.status_code == 201, r.text
    await _merged(api)
    async with api.client("admin") as admin, api.client("support") as support:
        r = await admin.post("/v1/members/M-D/erasure")
        assert r.status_code == 200 and r.json()["position"] is not None, r.text
        again = await admin.post("/v1/members/M-D/erasure")
        assert again.status_code == 200 and again.json() == r.json(), again.text
        r = await support.get("/v1/members", params={"email": "dup@example.com"})
        assert r.json()["members"] == [], r.text
        export = (await support.get("/v1/members/M-D/export")).json()
        assert export["profile"]["status"] == "erased"
        assert [e["type"] for e in export["events"]][-2:] == ["MemberMergedAway", "MemberErased"], export["events"]
