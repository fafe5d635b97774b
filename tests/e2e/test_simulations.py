"""What-if simulations over HTTP: every route, the roles allowed and refused, bad input
(422 naming the field, no simulation row), an unknown id 404, idempotency by key, and a
simulation that runs from queued to done beside what was issued, appending nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

FROM, TO = "2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"


async def _rules(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/v1/programme/rules", params={"at": "2026-06-01T00:00:00Z"})).json()


async def _count(api: Api, table: str) -> int:
    return await api.container.pool.fetchval(f"SELECT count(*) FROM {table}")


async def _done(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while (body := (await client.get(location)).json())["status"] in ("queued", "running"):
            await asyncio.sleep(0.05)
    return body


async def test_a_simulation_over_http_from_queued_to_done_beside_what_was_issued(api: Api) -> None:
    async with api.client("admin") as admin, api.client("auditor") as auditor:
        for i, product in enumerate(["hotel", "flight", "hotel"]):
            r = await admin.post("/v1/booking-events", json={
                **BOOKING, "event_id": f"ev-{i}", "booking_id": f"B-{i}", "member_id": f"M-{i}", "product": product,
                "type": "booking.completed", "amount": "200.00", "occurred_at": f"2026-0{i + 4}-10T10:00:00Z"})
            assert r.status_code in (200, 201), r.text
        events = await _count(api, "events")
        rules = await _rules(admin)
        draft = {**rules, "version": "draft-1", "earn_rates": {**rules["earn_rates"], "hotel": {"EUR": "20"}}}
        body = {"rules": draft, "from": FROM, "to": TO}
        r = await admin.post("/v1/programme/simulations", json=body, headers={"Idempotency-Key": "sim-1"})
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["status"] == "queued" and started["rules_version"] == "draft-1"
        assert started["rules"]["earn_rates"]["hotel"] == {"EUR": "20"} and started["requested_by"] == "admin-key"
        location = r.headers["location"]
        assert location == f"/v1/programme/simulations/{started['simulation_id']}"
        again = await admin.post("/v1/programme/simulations", json=body, headers={"Idempotency-Key": "sim-1"})
        assert again.status_code == 200 and again.json()["simulation_id"] == started["simulation_id"]
        reused = await admin.post("/v1/programme/simulations", json={**body, "to": "2026-12-30T00:00:00Z"},
                                  headers={"Idempotency-Key": "sim-1"})
        assert reused.status_code == 409 and reused.headers["content-type"] == "application/problem+json"

        done = await _done(auditor, location)  # auditors read simulations
        assert done["status"] == "done" and done["progress"]["fraction"] == 1.0 and done["error"] is None
        result = done["result"]
        assert result["earns"] == 3
        by_product = {row["product"]: row for row in result["by_product"]}
        assert by_product["flight"]["difference"] == 0 and by_product["hotel"]["difference"] > 0
        assert by_product["hotel"]["simulated"] - by_product["hotel"]["actual"] == result["earned"]["difference"]
        by_rule = {row["rule"]: row for row in result["by_rule"]}
        assert by_rule["base:hotel:EUR"]["simulated"] == 2 * by_rule["base:hotel:EUR"]["actual"] == 8000
        assert result["liability"]["difference"] == result["net"]["difference"] > 0
        assert result["liability"]["currency"] == "EUR" and result["liability"]["difference_value"] == format(
            result["liability"]["difference"] / 100, ".2f")
        assert await _count(api, "events") == events  # nothing appended

        page = (await auditor.get("/v1/programme/simulations", params={"limit": 1})).json()
        assert [s["simulation_id"] for s in page["simulations"]] == [started["simulation_id"]]
        assert page["next_before"] is None and "rules" not in page["simulations"][0]


async def test_roles_bad_input_and_unknown_ids(api: Api) -> None:
    async with api.client("admin") as admin:
        rules = await _rules(admin)
        body = {"rules": rules, "from": FROM, "to": TO}
        for role in ("auditor", "support", "app", "ingest"):
            async with api.client(role) as other:
                r = await other.post("/v1/programme/simulations", json=body, headers={"Idempotency-Key": role})
                assert r.status_code == 403, (role, r.text)
        for role, status in (("auditor", 200), ("support", 403), ("app", 403), ("ingest", 403), (None, 401)):
            async with api.client(role) as other:
                assert (await other.get("/v1/programme/simulations")).status_code == status, role

        for wrong, field in (
            ({**body, "to": FROM}, "to"),
            ({**body, "to": "2027-01-03T00:00:00Z"}, "to"),  # 367 days
            ({**body, "from": "yesterday"}, "from"),
            ({**body, "rules": {**rules, "expiry_months": 0}}, "rules.expiry_months"),
            ({**body, "rules": {**rules, "earn_rates": {"boat": {"EUR": "1"}}}}, "rules.earn_rates.boat.[key]"),
            ({**body, "surprise": 1}, "surprise"),
        ):
            r = await admin.post("/v1/programme/simulations", json=wrong, headers={"Idempotency-Key": "bad"})
            assert r.status_code == 422, r.text
            assert field in {e["field"] for e in r.json()["errors"]}, (field, r.json())
        r = await admin.post("/v1/programme/simulations", json=body)  # no Idempotency-Key
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
        tiers = [{"name": "member", "threshold": 0, "multiplier": "1"}, {"name": "gold", "threshold": 0,
                                                                            "multiplier": "2"}]
        r = await admin.post("/v1/programme/simulations", json={**body, "rules": {**rules, "tiers": tiers}},
                             headers={"Idempotency-Key": "inconsistent"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "rules.tiers.1.threshold", r.text
        assert await _count(api, "simulations") == 0  # nothing was asked for

        r = await admin.get("/v1/programme/simulations/sim-00000000-0000-0000-0000-000000000000")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert (await admin.get("/v1/programme/simulations/nope")).status_code == 422


async def test_a_draft_in_another_programme_currency_is_refused(api: Api) -> None:
    # The liability values the actual points at the cost per point of the rules in force
    # at `to` (EUR) and the simulated ones at the draft's: a draft in CNY labelled both
    # CNY and subtracted euros from yuan.
    async with api.client("admin") as admin:
        rules = await _rules(admin)
        body = {"rules": {**rules, "programme_currency": "CNY"}, "from": FROM, "to": TO}
        r = await admin.post("/v1/programme/simulations", json=body, headers={"Idempotency-Key": "cny"})
        assert r.status_code == 409, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["rules.programme_currency"], r.json()
        assert await _count(api, "simulations") == 0
