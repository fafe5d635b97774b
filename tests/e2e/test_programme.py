"""The programme's rules versions and exchange rates over HTTP: publishing, reading at any
instant, roles, bad input (every wrong field named, nothing changed), and earns under
the version in force at each booking's time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
NEXT = "2027-02-01T00:00:00Z"


async def _earn(client: httpx.AsyncClient, booking_id: str, occurred_at: str, *, currency: str = "EUR",
                amount: str = "100.00") -> httpx.Response:
    return await client.post("/v1/booking-events", json={
        **BOOKING, "event_id": f"ev-{booking_id}", "member_id": "M-7", "booking_id": booking_id,
        "type": "booking.completed", "amount": amount, "currency": currency, "occurred_at": occurred_at})


def _events(r: httpx.Response) -> list[dict]:
    return r.json()["events"]


async def test_publish_read_and_earn_under_the_version_in_force(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("auditor") as auditor, api.client("support") as support:
        first = (await admin.get("/v1/programme/rules")).json()
        assert first["version"] == "2026.1" and first["effective_from"].startswith("2000-01-01")
        draft = {**first, "version": "2027.1", "effective_from": NEXT,
                 "earn_rates": {**first["earn_rates"], "flight": {"EUR": "50"}}, "first_booking_bonus": 0}
        r = await admin.post("/v1/programme/rules", json=draft)
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/v1/programme/rules/2027.1"
        assert r.json()["published_by"] == "admin-key"
        assert (await admin.post("/v1/programme/rules", json=draft)).status_code == 409
        assert (await admin.post("/v1/programme/rules", json={**draft, "version": "2027.9"})).status_code == 409

        # GET returns what POST takes: the same body, and a round trip under another name is accepted.
        got = (await auditor.get("/v1/programme/rules/2027.1")).json()
        assert got == {**draft, "effective_from": got["effective_from"]} and got["effective_from"] in (
            NEXT, "2027-02-01T00:00:00+00:00")
        assert (await support.get("/v1/programme/rules", params={"at": "2027-01-31T23:59:59Z"})).json() == first
        assert (await support.get("/v1/programme/rules", params={"at": NEXT})).json()["version"] == "2027.1"
        r = await admin.post("/v1/programme/rules", json={**got, "version": "2027.2",
                                                          "effective_from": "2027-03-01T00:00:00Z"})
        assert r.status_code == 201, r.text

        page = (await auditor.get("/v1/programme/rules/versions", params={"limit": 2})).json()
        assert [v["version"] for v in page["versions"]] == ["2027.2", "2027.1"]
        rest = (await auditor.get("/v1/programme/rules/versions", params={"before": page["next_before"]})).json()
        assert [v["version"] for v in rest["versions"]] == ["2026.1"] and rest["next_before"] is None
        assert (await auditor.get("/v1/programme/rules/2099.1")).status_code == 404

        # Each booking earns under the version in force at its occurred_at, whenever it arrives.
        before = await _earn(admin, "B-1", "2027-01-31T10:00:00Z")
        after = await _earn(admin, "B-2", "2027-02-10T10:00:00Z")
        late = await _earn(admin, "B-3", "2027-01-20T10:00:00Z")  # back-dated: sent after B-2
        assert [r.status_code for r in (before, after, late)] == [201, 201, 201]
        earned = [_events(r)[0]["data"] for r in (before, after, late)]
        assert [e["rules_version"] for e in earned] == ["2026.1", "2027.1", "2026.1"]
        # The breakdown names each rule of the version: its base rate, and the promotion it carries over.
        assert earned[1]["breakdown"] == [["base:flight:EUR", 5000], ["promotion:off-season-winter-2027", 5000]]
        assert earned[0]["breakdown"][0] == ["base:flight:EUR", 500]


async def test_roles(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin:
        body = {**(await admin.get("/v1/programme/rules")).json(), "version": "2027.5", "effective_from": NEXT}
    for role in ("app", "ingest", "auditor", "support"):
        async with api.client(role) as client:
            assert (await client.post("/v1/programme/rules", json=body)).status_code == 403, role
            assert (await client.put("/v1/programme/fx-rates", json={
                "effective_from": NEXT, "rates": {"CNY": "7.9"}})).status_code == 403, role
    for role, status in (("app", 403), ("ingest", 403), ("auditor", 200), ("support", 200), ("admin", 200)):
        async with api.client(role) as client:
            for path in ("/v1/programme/rules", "/v1/programme/rules/2026.1", "/v1/programme/rules/versions",
                         "/v1/programme/fx-rates"):
                assert (await client.get(path)).status_code == status, (role, path)
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/v1/programme/rules")).status_code == 401


async def test_bad_rules_name_every_field_and_change_nothing(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin:
        good = {**(await admin.get("/v1/programme/rules")).json(), "version": "2027.1", "effective_from": NEXT}
        bad = {
            **good,
            "earn_rates": {"flight": {"EUR": "-5"}, "bus": {"EUR": "1"}, "hotel": {"EUR": "1", "XYZ": "2"}},
            "tiers": [{"name": "member", "threshold": 0, "multiplier": "1"},
                      {"name": "gold", "threshold": 100, "multiplier": "1.5"}],
            "expiry_months": 0,
            "promotions": [{"name": "p", "starts_on": "2027-03-01", "ends_on": "2027-02-01", "multiplier": "2"}],
            "household_members_max": 1,
            "colour": "blue",
        }
        bad["tiers"].append({"name": "silver", "threshold": 50, "multiplier": "1.25"})  # not ascending
        r = await admin.post("/v1/programme/rules", json=bad)
        assert r.status_code == 422, r.text
        fields = {e["field"] for e in r.json()["errors"]}
        assert {"earn_rates.flight.EUR", "earn_rates.bus.[key]", "earn_rates.hotel.XYZ.[key]", "expiry_months",
                "household_members_max", "colour"} <= fields, fields
        # A rule set the schema takes but that does not hold together: 409 naming every such field.
        r = await admin.post("/v1/programme/rules", json={**good, "tiers": bad["tiers"], "promotions": bad["promotions"]})
        assert r.status_code == 409, r.text
        assert {e["field"] for e in r.json()["errors"]} == {"tiers.2.threshold", "promotions.0.ends_on"}
        for wrong in ({**good, "effective_from": "soon"}, {**good, "version": "a b"},
                      {**good, "expiry_months": True}, {**good, "effective_from": 1_800_000_000}):
            r = await admin.post("/v1/programme/rules", json=wrong)
            assert r.status_code == 422, r.text
        past = await admin.post("/v1/programme/rules", json={**good, "effective_from": "2027-01-15T12:00:00Z"})
        assert past.status_code == 409 and past.json()["field"] == "effective_from", past.text
        r = await admin.put("/v1/programme/fx-rates", json={"effective_from": NEXT, "rates": {"CNY": "0", "ABC": "1"}})
        assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"rates.CNY", "rates.ABC.[key]"}, r.text
        versions = (await admin.get("/v1/programme/rules/versions")).json()["versions"]
        assert [v["version"] for v in versions] == ["2026.1"]
        assert (await admin.get("/v1/programme/fx-rates", params={"at": "2028-01-01T00:00:00Z"})).json()[
            "effective_from"].startswith("2000-01-01")


async def test_exchange_rates_published_and_read_at_any_instant(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("auditor") as auditor:
        first = (await auditor.get("/v1/programme/fx-rates")).json()
        assert first["base"] == "EUR" and first["effective_from"].startswith("2000-01-01")
        assert {"CNY", "HKD", "TWD", "JPY", "KRW", "SGD", "THB", "MYR", "IDR", "INR", "AUD", "NZD", "USD", "CAD",
                "GBP", "CHF"} <= first["rates"].keys()
        body = {"effective_from": NEXT, "rates": {"CNY": "7.9", "USD": "1.1"}}
        r = await admin.put("/v1/programme/fx-rates", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["rates"] == body["rates"] and r.json()["base"] == "EUR"
        assert (await admin.put("/v1/programme/fx-rates", json=body)).status_code == 409
        r = await admin.put("/v1/programme/fx-rates", json={**body, "base": "USD",
                                                            "effective_from": "2027-03-01T00:00:00Z"})
        assert r.status_code == 409 and r.json()["field"] == "base"
        past = await admin.put("/v1/programme/fx-rates", json={**body, "effective_from": "2027-01-01T00:00:00Z"})
        assert past.status_code == 409 and past.json()["field"] == "effective_from"
        assert (await auditor.get("/v1/programme/fx-rates", params={"at": NEXT})).json()["rates"] == body["rates"]
        assert (await auditor.get("/v1/programme/fx-rates", params={"at": "2027-01-31T00:00:00Z"})).json() == first
        # This process's book holds the new set at once; others within LEDGER_RULES_REFRESH_S.
        assert api.container.book.fx_at(datetime(2027, 2, 2, tzinfo=UTC)).rates["CNY"] == Decimal("7.9")
        assert api.container.book.at(datetime(2027, 2, 2, tzinfo=UTC)).fx.rates["CNY"] == Decimal("7.9")


async def test_a_cny_booking_earns_converted_and_a_currency_without_a_rate_is_refused(api: Api) -> None:
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin, api.client("ingest") as ingest, api.client("app") as app:
        r = await _earn(ingest, "B-CNY", "2026-04-01T10:00:00Z", currency="CNY", amount="780.00")
        assert r.status_code == 201, r.text
        data = _events(r)[0]["data"]
        assert (data["currency"], data["amount"], data["fx_rate"], data["converted_amount"]) == (
            "CNY", "780.00", "7.8", "100.00")
        assert data["breakdown"] == [["base:flight:EUR", 500], ["first_booking_bonus", 500]]
        position = r.json()["position"]
        balance = (await app.get("/v1/members/M-7/balance", params={"min_position": position})).json()

        # A new set without HKD: from its start an HKD booking is refused, naming the currency; nothing changes.
        assert (await admin.put("/v1/programme/fx-rates", json={"effective_from": NEXT,
                                                                "rates": {"CNY": "7.5"}})).status_code == 201
        assert (await _earn(ingest, "B-HKD-1", "2027-01-20T10:00:00Z", currency="HKD")).status_code == 201
        r = await _earn(ingest, "B-HKD-2", "2027-02-02T10:00:00Z", currency="HKD")
        assert r.status_code == 409, r.text
        assert (r.json()["title"], r.json()["currency"], r.json()["field"]) == ("Currency not earned", "HKD",
                                                                               "currency")
        assert "HKD" in r.json()["detail"]
        after = (await app.get("/v1/members/M-7/history")).json()
        assert not any(e["data"].get("booking_id") == "B-HKD-2" for e in after["events"])
        assert balance["available"] == 1000
