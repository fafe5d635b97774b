"""Earn beyond bookings over HTTP (P3): activities under the rules in force at their
time, idempotent by activity id; referrals earning both members once; caps recorded in
the breakdown; roles; bad input (422 naming the field, nothing changed); complaint
compensation on adjustments and the history by case."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
FROM = "2027-02-01T00:00:00Z"
AT = "2027-02-03T10:00:00+08:00"
P3_RULES = {
    "activities": {"social.shared": {"points": 50, "per_booking_once": True},
                   "review.submitted": {"points": 30}, "survey.completed": {"points": 20},
                   "referral.completed": {"points": 500, "referred_points": 200}},
    "anniversary": {"points_by_year": {"1": 100}, "per_year": 100, "points_max": 1000},
    "caps": [{"source": "social.shared", "period": "month", "max_points": 120}],
}


async def _publish(admin: httpx.AsyncClient) -> None:
    first = (await admin.get("/v1/programme/rules")).json()
    r = await admin.post("/v1/programme/rules", json={**first, "version": "2027.p3", "effective_from": FROM, **P3_RULES})
    assert r.status_code == 201, r.text


def _share(activity_id: str, booking_id: str, **extra: str) -> dict:
    return {"type": "social.shared", "activity_id": activity_id, "occurred_at": AT, "channel": "wechat",
            "booking_id": booking_id, **extra}


async def test_activities_earn_per_the_rules_once_per_id_and_capped(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("ingest") as ingest, api.client("app") as app:
        await _publish(admin)
        r = await ingest.post("/v1/members/M-30/activities", json=_share("s1", "BK-1"))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["points"] == 50
        (event,) = body["events"]
        assert event["type"] == "ActivityPointsEarned"
        assert event["data"]["rules_version"] == "2027.p3"
        assert event["data"]["breakdown"] == [["activity:social.shared", 50]]
        # The same body again: the original result; another body under the same id: 409.
        again = await ingest.post("/v1/members/M-30/activities", json=_share("s1", "BK-1"))
        assert again.status_code == 200 and again.json()["events"] == body["events"]
        assert (await ingest.post("/v1/members/M-30/activities",
                                  json=_share("s1", "BK-1", channel="weibo"))).status_code == 409
        # The same trip shared again earns nothing (once per booking); the cap withholds the rest.
        same_trip = (await ingest.post("/v1/members/M-30/activities", json=_share("s2", "BK-1"))).json()
        assert same_trip["points"] == 0
        assert (await ingest.post("/v1/members/M-30/activities", json=_share("s3", "BK-2"))).json()["points"] == 50
        capped = (await ingest.post("/v1/members/M-30/activities", json=_share("s4", "BK-3"))).json()
        assert capped["points"] == 20
        assert capped["events"][0]["data"]["breakdown"] == [["activity:social.shared", 50],
                                                             ["cap:social.shared:month", -30]]
        for kind, points in (("review.submitted", 30), ("survey.completed", 20)):
            r = await admin.post("/v1/members/M-30/activities",
                                 json={"type": kind, "activity_id": f"f-{kind}", "occurred_at": AT})
            assert r.status_code == 201 and r.json()["points"] == points, r.text
        # Before the version with activities, an activity earns nothing, and says under which version.
        early = (await ingest.post("/v1/members/M-30/activities", json={
            "type": "review.submitted", "activity_id": "early", "occurred_at": "2027-01-10T00:00:00Z"})).json()
        assert early["points"] == 0 and early["events"][0]["data"]["rules_version"] == "2026.1"
        balance = (await app.get("/v1/members/M-30/balance", params={"min_position": early["position"]})).json()
        assert balance["available"] == 50 + 50 + 20 + 30 + 20
        # The statement, the balance as of a moment, the chain's verification read them too.
        api.container.clock = lambda: datetime(2027, 3, 1, tzinfo=UTC)
        async with api.client("auditor") as auditor:
            statement = await auditor.get("/v1/members/M-30/statement", params={
                "from": "2027-01-01T00:00:00Z", "to": "2027-02-28T00:00:00Z"})
            assert statement.status_code == 200, statement.text
            assert statement.json()["closing_balance"] == 170
            assert sum(statement.json()["earned_by_source"].values()) == 170
            as_of = await auditor.get("/v1/members/M-30/balance", params={"as_of": "2027-02-10T00:00:00Z"})
            assert as_of.status_code == 200 and as_of.json()["available"] == 170, as_of.text
            assert (await auditor.get("/v1/members/M-30/verification")).json()["ok"] is True
        # Roles: the app cannot post activities.
        assert (await app.post("/v1/members/M-30/activities", json=_share("s9", "BK-9"))).status_code == 403


async def test_a_closed_member_earns_on_no_activity_and_is_referred_by_nobody(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("ingest") as ingest, api.client("support") as support:
        await _publish(admin)
        for member in ("M-60", "M-61"):
            r = await ingest.post("/v1/booking-events", json={
                **BOOKING, "event_id": f"ev-{member}", "member_id": member, "booking_id": f"BK-{member}",
                "occurred_at": AT})
            assert r.status_code == 201, r.text
        r = await support.post("/v1/members/M-60/status", json={"status": "closed", "reason": "customer_request"},
                               headers={"Idempotency-Key": "close-M-60"})
        assert r.status_code == 201, r.text
        before = await api.container.pool.fetchval("SELECT count(*) FROM events")
        r = await ingest.post("/v1/members/M-60/activities", json=_share("c1", "BK-M-60"))
        assert r.status_code == 409 and r.json()["member_status"] == "closed", r.text
        for referrer, referred in (("M-61", "M-60"), ("M-60", "M-61")):
            r = await ingest.post(f"/v1/members/{referrer}/activities", json={
                "type": "referral.completed", "activity_id": f"ref-{referrer}", "occurred_at": AT,
                "referred_member_id": referred})
            assert r.status_code == 409 and r.json()["member_id"] == "M-60", r.text
        assert await api.container.pool.fetchval("SELECT count(*) FROM events") == before


async def test_referral_earns_both_once_after_the_first_completed_booking(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("ingest") as ingest:
        await _publish(admin)
        referral = {"type": "referral.completed", "activity_id": "ref-1", "occurred_at": AT,
                    "referred_member_id": "M-41"}
        # The referred member has no completed booking yet: refused.
        assert (await ingest.post("/v1/members/M-40/activities", json=referral)).status_code == 404
        r = await ingest.post("/v1/booking-events", json={
            **BOOKING, "event_id": "ev-41", "member_id": "M-41", "booking_id": "BK-41", "type": "booking.confirmed",
            "occurred_at": AT})
        assert r.status_code == 201, r.text
        assert (await ingest.post("/v1/members/M-40/activities", json=referral)).status_code == 409
        r = await ingest.post("/v1/booking-events", json={
            **BOOKING, "event_id": "ev-41c", "member_id": "M-41", "booking_id": "BK-41", "type": "booking.completed",
            "occurred_at": AT})
        assert r.status_code == 201, r.text
        r = await ingest.post("/v1/members/M-40/activities", json={**referral, "activity_id": "ref-2"})
        assert r.status_code == 201, r.text
        by_role = {e["data"]["role"]: e["data"]["points"] for e in r.json()["events"]}
        assert by_role == {"referrer": 500, "referred": 200} and r.json()["points"] == 500
        # A second referral of the same member, by anyone: refused; a self-referral too.
        again = await ingest.post("/v1/members/M-42/activities", json={**referral, "activity_id": "ref-3"})
        assert again.status_code == 409 and "referred already" in again.json()["detail"]
        self_ref = await ingest.post("/v1/members/M-41/activities", json={**referral, "activity_id": "ref-4"})
        assert self_ref.status_code == 409


async def test_bad_activities_are_refused_naming_the_field_and_change_nothing(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("ingest") as ingest, api.client("app") as app:
        for body, field in (
            ({"type": "social.liked", "activity_id": "x1", "occurred_at": AT}, "type"),
            ({"type": "social.shared", "activity_id": "x2", "occurred_at": AT}, "channel"),
            ({"type": "social.shared", "activity_id": "x3", "occurred_at": AT, "channel": "myspace"}, "channel"),
            ({"type": "referral.completed", "activity_id": "x4", "occurred_at": AT}, "referred_member_id"),
            ({"type": "review.submitted", "activity_id": "x5", "occurred_at": AT, "channel": "x"}, "channel"),
            ({"type": "review.submitted", "activity_id": "", "occurred_at": AT}, "activity_id"),
            ({"type": "review.submitted", "activity_id": "x6", "occurred_at": "yesterday"}, "occurred_at"),
        ):
            r = await ingest.post("/v1/members/M-50/activities", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (field, r.json())
        assert (await app.get("/v1/members/M-50/history")).status_code == 404


async def test_compensation_is_recorded_and_the_history_filters_by_case(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("support") as support, api.client("auditor") as auditor, api.client("ingest") as ingest:
        r = await ingest.post("/v1/booking-events", json={
            **BOOKING, "event_id": "ev-60", "member_id": "M-60", "booking_id": "BK-60", "occurred_at": AT})
        assert r.status_code == 201, r.text
        for n, (case_id, points) in enumerate((("CASE-1", 300), ("CASE-2", 100), ("CASE-1", 200))):
            r = await support.post("/v1/members/M-60/adjustments", headers={"Idempotency-Key": f"k{n}"}, json={
                "points": points, "reason": "Flight delayed 5 hours", "case_id": case_id, "category": "delay",
                "booking_id": "BK-60"})
            assert r.status_code == 201, r.text
            assert r.json()["case_id"] == case_id and r.json()["category"] == "delay"
        plain = await support.post("/v1/members/M-60/adjustments", headers={"Idempotency-Key": "k9"},
                                   json={"points": 10, "reason": "goodwill"})
        assert plain.status_code == 201 and plain.json()["case_id"] is None
        page = (await auditor.get("/v1/members/M-60/history", params={"case_id": "CASE-1", "limit": 1})).json()
        assert [e["data"]["points"] for e in page["events"]] == [200] and page["next_cursor"]
        rest = (await auditor.get("/v1/members/M-60/history",
                                  params={"case_id": "CASE-1", "cursor": page["next_cursor"]})).json()
        assert [e["data"]["points"] for e in rest["events"]] == [300] and rest["next_cursor"] is None
        assert rest["events"][0]["data"]["booking_id"] == "BK-60"
        assert (await auditor.get("/v1/members/M-60/history", params={"case_id": "NONE"})).json()["events"] == []
        assert (await auditor.get("/v1/members/M-404/history", params={"case_id": "CASE-1"})).status_code == 404
        bad = await support.post("/v1/members/M-60/adjustments", headers={"Idempotency-Key": "k10"},
                                 json={"points": 10, "reason": "x", "category": "weather"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "category"
        assert len((await auditor.get("/v1/members/M-60/history")).json()["events"]) == 5
