"""The programme reports over HTTP: liability and activity, as JSON and CSV, the roles
that may read them, and bad input (422 naming the field)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

# 420 EUR on a flight, completed on 20 November 2026 (08:30 UTC): 2,100 base points plus
# the first booking bonus of 500, active, expiring 24 months later.
EARNED = 2600
DAY = "2026-11-20"


async def _history(admin: httpx.AsyncClient) -> int:
    """A completed booking, a pending one, and a redemption: returns the last position."""
    r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/booking-events", json={
        **BOOKING, "event_id": "bk-2", "booking_id": "BK-2", "product": "hotel", "amount": "100.00",
        "occurred_at": "2026-11-21T12:00:00Z"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "r-1"},
                         json={"points": 600, "reward": {"id": "HTL-DISC-20", "kind": "hotel_discount"}})
    assert r.status_code == 201, r.text
    return int(r.json()["position"])


async def test_liability_as_json_and_csv_and_as_of_a_past_instant(api: Api) -> None:
    async with api.client("auditor") as auditor, api.client("admin") as admin:
        position = await _history(admin)
        r = await auditor.get("/v1/reports/liability", params={"min_position": position})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["position"] >= position
        assert report["currency"] == "EUR" and report["cost_per_point"] == "0.01"
        pending = 2000  # 100 EUR of hotel, not yet completed: 10 points per EUR, doubled by the autumn promotion
        assert report["totals"] == {"active": EARNED - 600, "pending": pending, "points": EARNED - 600 + pending,
                                    "value": "40.00"}
        assert report["by_expiry_month"] == [
            {"status": "active", "expiry_month": "2028-11", "points": EARNED - 600, "value": "20.00"},
            {"status": "pending", "expiry_month": None, "points": pending, "value": "20.00"}]
        # The member was in the first tier at each event.
        assert report["by_tier"][0] == {"tier": "member", "active": EARNED - 600, "pending": pending,
                                        "points": EARNED - 600 + pending, "value": "40.00"}
        assert {t["tier"] for t in report["by_tier"]} == {"member", "silver", "gold", "platinum"}

        # Before the pending booking (the day after the first), and before anything.
        r = await auditor.get("/v1/reports/liability", params={"as_of": "2026-11-21T11:59:59Z"})
        assert r.json()["totals"]["points"] == EARNED
        r = await auditor.get("/v1/reports/liability", params={"as_of": "2026-11-20T08:29:59+00:00"})
        assert r.json()["totals"] == {"active": 0, "pending": 0, "points": 0, "value": "0.00"}

        r = await auditor.get("/v1/reports/liability", headers={"Accept": "text/csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows == [["status", "expiry_month", "tier", "points", "value", "currency"],
                        ["active", "2028-11", "member", str(EARNED - 600), "20.00", "EUR"],
                        ["pending", "", "member", str(pending), "20.00", "EUR"]]


async def test_activity_by_day_and_by_month_as_json_and_csv(api: Api) -> None:
    # The redemption on a clock of November's, in the report's span whatever the day the
    # test runs (on the machine's clock it fell out of the span from 1 December 2026).
    api.container.clock = lambda: datetime(2026, 11, 25, 12, tzinfo=UTC)  # type: ignore[method-assign]
    async with api.client("auditor") as auditor, api.client("admin") as admin:
        position = await _history(admin)
        params = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00+00:00", "min_position": position}
        r = await auditor.get("/v1/reports/activity", params=params)
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["first_day"], report["last_day"], report["granularity"]) == ("2026-11-01", "2026-11-30", "day")
        earned = [line for line in report["lines"] if line["kind"] == "earned"]
        assert {(line["period"], line["product"], line["source"], line["points"]) for line in earned} == {
            (DAY, "flight", "base:flight:EUR", 2100), (DAY, "flight", "first_booking_bonus", 500),
            ("2026-11-21", "hotel", "base:hotel:EUR", 1000),
            ("2026-11-21", "hotel", "promotion:off-season-autumn-2026", 1000)}
        assert report["totals"]["earned"] == EARNED + 2000 and report["totals"]["expired"] == 0
        redeemed = [line for line in report["lines"] if line["kind"] == "redeemed"]
        assert [(line["product"], line["source"], line["points"]) for line in redeemed] == [
            ("hotel_discount", "redemption", 600)]

        r = await auditor.get("/v1/reports/activity", params={**params, "granularity": "month"},
                              headers={"Accept": "text/csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == ["period", "kind", "product", "source", "points"]
        assert ["2026-11", "earned", "hotel", "base:hotel:EUR", "1000"] in rows[1:]
        assert all(row[0] == "2026-11" for row in rows[1:])

        # Only whole UTC days whose midnight is in the span: none here.
        r = await auditor.get("/v1/reports/activity", params={"from": "2026-11-20T00:00:01Z",
                                                               "to": "2026-11-21T00:00:00Z"})
        assert r.status_code == 200 and r.json()["lines"] == [] and r.json()["first_day"] is None


async def test_auditor_and_admin_read_the_reports_and_no_other_role_does(api: Api) -> None:
    routes = [("/v1/reports/liability", {}),
              ("/v1/reports/activity", {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"})]
    for role in ("auditor", "admin", "app", "ingest", "support"):
        async with api.client(role) as client:
            for path, params in routes:
                for accept in ("application/json", "text/csv"):
                    r = await client.get(path, params=params, headers={"Accept": accept})
                    if role in ("auditor", "admin"):
                        assert r.status_code == 200, (role, path, r.text)
                    else:
                        assert r.status_code == 403, (role, path, r.text)
                        assert r.headers["content-type"] == "application/problem+json"
                        assert "read the programme reports" in r.json()["detail"]
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/v1/reports/liability")).status_code == 401


async def test_bad_input_is_a_422_naming_the_field(api: Api) -> None:
    cases = [
        ("/v1/reports/liability", {"as_of": "2026-11-20T08:30:00"}, "as_of"),  # no offset
        ("/v1/reports/liability", {"as_of": "20 November 2026"}, "as_of"),
        ("/v1/reports/liability", {"as_of": "1700000000"}, "as_of"),
        ("/v1/reports/liability", {"as_of": "2999-01-01T00:00:00Z"}, "as_of"),  # later than now
        ("/v1/reports/activity", {"from": "2026-11-01T00:00:00", "to": "2026-11-02T00:00:00Z"}, "from"),
        ("/v1/reports/activity", {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, "to"),
        ("/v1/reports/activity", {"from": "2026-11-03T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, "to"),
        ("/v1/reports/activity", {"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:01Z"}, "to"),
        ("/v1/reports/activity", {"from": "2015-12-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                                  "granularity": "month"}, "to"),
        ("/v1/reports/activity", {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z",
                                  "granularity": "week"}, "granularity"),
        ("/v1/reports/activity", {"to": "2026-11-02T00:00:00Z"}, "from"),
    ]
    async with api.client("auditor") as auditor:
        for path, params, field in cases:
            r = await auditor.get(path, params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert field in {e["field"] for e in r.json()["errors"]}, (params, r.json())
        # A year of days, and ten years of months, are within bounds.
        r = await auditor.get("/v1/reports/activity", params={"from": "2025-01-01T00:00:00Z",
                                                               "to": "2026-01-02T00:00:00Z"})
        assert r.status_code == 200, r.text
        r = await auditor.get("/v1/reports/activity", params={"from": "2016-01-03T00:00:00Z",
                                                               "to": "2026-01-01T00:00:00Z", "granularity": "month"})
        assert r.status_code == 200, r.text
        r = await auditor.get("/v1/reports/liability", params={"as_of": "2026-11-20T08:30:00Z", "limit": "x"})
        assert r.status_code == 200  # unknown parameters are ignored, as on every route


async def test_the_liability_as_of_an_instant_is_valued_at_the_rules_in_force_then(api: Api) -> None:
    # It was valued at the rules in force now: a version with another cost per point,
    # once in force, changed every past liability an auditor had read.
    from datetime import timedelta

    async with api.client("auditor") as auditor, api.client("admin") as admin:
        position = await _history(admin)
        before = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)  # after the redemption
        rules = (await admin.get("/v1/programme/rules")).json()
        later = before + timedelta(hours=1)
        r = await admin.post("/v1/programme/rules", json={**rules, "version": "2026.2", "cost_per_point": "0.02",
                                                          "effective_from": later.isoformat()})
        assert r.status_code == 201, r.text
        api.container.clock = lambda: later + timedelta(hours=1)  # type: ignore[method-assign]
        then = await auditor.get("/v1/reports/liability", params={"as_of": before.isoformat(),
                                                                   "min_position": position})
        assert then.status_code == 200, then.text
        assert (then.json()["cost_per_point"], then.json()["totals"]["value"]) == ("0.01", "40.00"), then.json()
        now = (await auditor.get("/v1/reports/liability")).json()
        assert (now["cost_per_point"], now["totals"]["value"]) == ("0.02", "80.00"), now
