"""Tier policies (P4) over HTTP: a rule set whose tiers qualify on nights and segments
in a calendar year, an upgrade in the answer of the booking that qualifies, the tier
route's needs (to keep the tier, to reach the next: have, need, by), as of any instant,
roles, and bad tier rules refused naming the field, with nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime

from .conftest import Api
from .test_walkthrough import BOOKING

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
LATER = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
TIERS = [
    {"name": "member", "multiplier": "1"},
    {"name": "silver", "multiplier": "1.25", "qualify": {"points": 5000, "nights": 10}},
    {"name": "gold", "multiplier": "1.5", "qualify": {"points": 15000, "segments": 20}},
]
POLICY = {"window": "calendar_year", "evaluation": "calendar_year_end", "grace_days": 30, "warning_days": 14}


async def test_tier_route_says_what_keeps_the_tier_and_what_reaches_the_next(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("ingest") as ingest, api.client("app") as app:
        first = (await admin.get("/v1/programme/rules")).json()
        assert first["tier_policy"] == {"window": "rolling_12m", "evaluation": "monthly", "grace_days": 0,
                                        "warning_days": 30}
        r = await admin.post("/v1/programme/rules", json={
            **first, "version": "2027.1", "effective_from": "2027-02-01T00:00:00Z", "promotions": [],
            "first_booking_bonus": 0, "tiers": TIERS, "tier_policy": POLICY})
        assert r.status_code == 201, r.text
        r = await ingest.post("/v1/booking-events", json={  # 500 qualifying points under the first version
            **BOOKING, "event_id": "ev-F1", "member_id": "M-7", "booking_id": "F1", "type": "booking.completed",
            "occurred_at": "2027-01-10T10:00:00Z", "amount": "100.00"})
        assert [e["type"] for e in r.json()["events"]] == ["PointsEarned"]
        api.container.clock = lambda: LATER
        r = await ingest.post("/v1/booking-events", json={
            **BOOKING, "event_id": "ev-H1", "member_id": "M-7", "booking_id": "H1", "type": "booking.completed",
            "product": "hotel", "amount": "100.00", "nights": 12, "occurred_at": "2027-02-10T10:00:00Z"})
        assert r.status_code == 201, r.text
        earned, changed = r.json()["events"]
        assert earned["data"]["nights"] == 12 and earned["data"]["rules_version"] == "2027.1"
        assert changed["type"] == "TierChanged" and changed["data"] | {"occurred_at": None} == {
            "occurred_at": None, "from_tier": "member", "to_tier": "silver", "direction": "upgrade",
            "criterion": "nights", "value": "12", "threshold": "10", "rules_version": "2027.1",
            "evaluation_at": None}

        r = await app.get("/v1/members/M-7/tier", params={"min_position": r.json()["position"]})
        assert r.status_code == 200, r.text
        view = r.json()
        assert (view["tier"], view["qualifies_for"], view["qualifying_points"]) == ("silver", "silver", 1500)
        assert view["tier_since"].startswith("2027-02-10T10:00:00")
        assert view["window_start"].startswith("2026-12-31T23:59:59.999999")
        # To keep silver: one criterion met by the next downgrade date, 1 January 2028 plus 30 days.
        keep = view["keep"]
        assert (keep["tier"], keep["met"], keep["by"][:10]) == ("silver", True, "2028-01-31")
        assert [(c["criterion"], c["have"], c["threshold"], c["need"]) for c in keep["criteria"]] == [
            ("points", "1500", "5000", "3500"), ("nights", "12", "10", "0")]
        # To reach gold: by the end of the calendar year the window counts.
        nxt = view["next"]
        assert (nxt["tier"], nxt["met"], nxt["by"][:10]) == ("gold", False, "2028-01-01")
        assert [(c["criterion"], c["have"], c["need"]) for c in nxt["criteria"]] == [
            ("points", "1500", "13500"), ("segments", "0", "20")]
        assert view["next_tier"] == "gold" and view["points_to_next_tier"] == 13500

        # As of before the stay: member, nothing to keep, silver to reach.
        before = (await app.get("/v1/members/M-7/tier", params={"as_of": "2027-02-05T00:00:00Z"})).json()
        assert (before["tier"], before["keep"], before["next"]["tier"], before["tier_since"]) == (
            "member", None, "silver", None)
        assert (await app.get("/v1/members/M-7/balance")).json()["tier"] == "silver"
        assert (await app.get("/v1/members/NOBODY/tier")).status_code == 404


async def test_tier_route_roles(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("ingest") as ingest:
        r = await ingest.post("/v1/booking-events", json={**BOOKING, "member_id": "M-8", "type": "booking.completed",
                                                          "occurred_at": "2027-01-10T10:00:00Z"})
        assert r.status_code == 201, r.text
        assert (await ingest.get("/v1/members/M-8/tier")).status_code == 403
    for role in ("app", "support", "auditor", "admin"):
        async with api.client(role) as client:
            r = await client.get("/v1/members/M-8/tier")
            assert r.status_code == 200, role
            assert (r.json()["tier"], r.json()["keep"], r.json()["next"]["tier"]) == ("member", None, "silver"), role
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/v1/members/M-8/tier")).status_code == 401


async def test_bad_tier_rules_are_refused_naming_the_field_and_nothing_changes(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin:
        good = {**(await admin.get("/v1/programme/rules")).json(), "version": "2027.2",
                "effective_from": "2027-02-01T00:00:00Z"}
        for wrong, field in (
            ({"tier_policy": {**POLICY, "window": "weekly"}}, "tier_policy.window"),
            ({"tier_policy": {**POLICY, "grace_days": -1}}, "tier_policy.grace_days"),
            ({"tier_policy": {**POLICY, "every": "day"}}, "tier_policy.every"),
            ({"tiers": [TIERS[0], {**TIERS[1], "qualify": {"nights": -3}}]}, "tiers.1.qualify.nights"),
            ({"tiers": [TIERS[0], {**TIERS[1], "qualify": {"miles": 3}}]}, "tiers.1.qualify.miles"),
            ({"tiers": [TIERS[0], {**TIERS[1], "qualify": {"spend": "1e5"}}]}, "tiers.1.qualify.spend"),
        ):
            r = await admin.post("/v1/programme/rules", json={**good, **wrong})
            assert r.status_code == 422, r.text
            assert field in {e["field"] for e in r.json()["errors"]}, r.text
        # What the schema takes but does not hold together: 409, each field named.
        for wrong, fields in (
            ([TIERS[0], TIERS[1], {**TIERS[2], "qualify": {"points": 15000, "nights": 5}}], {"tiers.2.qualify.nights"}),
            ([TIERS[0], {"name": "silver", "multiplier": "1.25"}], {"tiers.1.qualify"}),
            ([TIERS[0], {**TIERS[1], "threshold": 4000}], {"tiers.1.qualify.points"}),
        ):
            r = await admin.post("/v1/programme/rules", json={**good, "tiers": wrong})
            assert r.status_code == 409, r.text
            assert {e["field"] for e in r.json()["errors"]} == fields, r.text
        versions = (await admin.get("/v1/programme/rules/versions")).json()["versions"]
        assert [v["version"] for v in versions] == ["2026.1"]
