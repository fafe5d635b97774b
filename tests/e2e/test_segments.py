"""Customer value segments over HTTP: the programme's segments and a member's, roles,
an unknown member, bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from .conftest import Api
from .test_walkthrough import BOOKING

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


async def _booking(admin: httpx.AsyncClient, member_id: str, booking_id: str, amount: str, occurred_at: str,
                   currency: str = "EUR") -> int:
    r = await admin.post("/v1/booking-events", json={
        **BOOKING, "event_id": f"{member_id}-{booking_id}", "member_id": member_id, "booking_id": booking_id,
        "type": "booking.completed", "amount": amount, "currency": currency, "occurred_at": occurred_at})
    assert r.status_code == 201, r.text
    return int(r.json()["position"])


async def _programme(api: Api) -> int:
    """Three members: a champion (high spend, three bookings over more than a year), a big
    spender (one large booking) and an occasional one; returns the last position."""
    api.container.clock = lambda: NOW
    async with api.client("admin") as admin:
        await _booking(admin, "M-1", "B1", "100.00", "2025-11-01T10:00:00Z")  # its first event, out of the window
        await _booking(admin, "M-1", "B2", "1500.00", "2026-03-01T10:00:00Z")
        await _booking(admin, "M-1", "B3", "600.00", "2026-09-01T10:00:00+02:00")
        await _booking(admin, "M-1", "B4", "80.00", "2026-12-01T10:00:00Z", currency="GBP")  # loyalty, not value
        await _booking(admin, "M-2", "B1", "5000.00", "2026-12-24T10:00:00Z")
        return await _booking(admin, "M-3", "B1", "50.00", "2026-06-01T10:00:00Z")


async def test_segments_and_a_members_segment(api: Api) -> None:
    position = await _programme(api)
    async with api.client("app") as app, api.client("auditor") as auditor:
        r = await app.get("/v1/members/M-1/segment", params={"min_position": position})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "member_id": "M-1", "as_of": "2027-01-15T12:00:00Z", "window_start": "2026-01-15T12:00:00Z",
            "currency": "EUR", "value": "2100.00", "bookings": 3, "first_event_at": "2025-11-01T10:00:00Z",
            "tenure_days": 440, "segment": "champions", "in_top": False, "top_value_min": "5000.00", "members": 3,
            "position": r.json()["position"]}
        m2 = (await app.get("/v1/members/M-2/segment")).json()
        assert (m2["segment"], m2["in_top"], m2["tenure_days"]) == ("big_spenders", True, 22)
        assert (await app.get("/v1/members/M-3/segment")).json()["segment"] == "occasional"

        r = await auditor.get("/v1/segments")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["as_of"] == "2027-01-15T12:00:00Z" and body["members"] == 3 and body["value"] == "7150.00"
        assert body["thresholds"] == {"currency": "EUR", "window_months": 12, "value_min": "2000",
                                      "bookings_min": 3, "tenure_days_min": 365, "top_share": 0.2}
        assert {s["segment"]: (s["members"], s["value"]) for s in body["segments"]} == {
            "champions": (1, "2100.00"), "big_spenders": (1, "5000.00"), "loyal_regulars": (0, "0"),
            "occasional": (1, "50.00")}
        assert body["top"] == {"members": 1, "value": "5000.00", "value_share": round(5000 / 7150, 6)}


async def test_roles_allowed_and_refused(api: Api) -> None:
    position = await _programme(api)
    allowed = {"/v1/segments": {"auditor", "admin"},
               "/v1/members/M-1/segment": {"app", "support", "auditor", "admin"}}
    for path, roles in allowed.items():
        for role in ("ingest", "app", "support", "auditor", "admin"):
            async with api.client(role) as client:
                r = await client.get(path, params={"min_position": position})  # the reports' group may be behind
            assert r.status_code == (200 if role in roles else 403), (path, role, r.text)
            if role not in roles:
                assert r.headers["content-type"] == "application/problem+json" and r.json()["title"] == "Forbidden"
        async with api.client(None) as anonymous:
            assert (await anonymous.get(path)).status_code == 401


async def test_an_unknown_member_is_a_404_and_bad_input_a_422_naming_the_field(api: Api) -> None:
    await _programme(api)
    async with api.client("admin") as admin:
        r = await admin.get("/v1/members/M-404/segment")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
        for path, params, field in [
            ("/v1/members/M%201/segment", {}, "member_id"),
            ("/v1/members/" + "m" * 65 + "/segment", {}, "member_id"),
            ("/v1/members/M-1/segment", {"min_position": "-1"}, "min_position"),
            ("/v1/members/M-1/segment", {"min_position": "4.0"}, "min_position"),
            ("/v1/members/M-1/segment", [("min_position", "1"), ("min_position", "2")], "min_position"),
        ]:
            r = await admin.get(path, params=params)
            assert r.status_code == 422, (path, params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert field in {e["field"] for e in r.json()["errors"]}, r.json()
        r = await admin.get("/v1/members/M-1/segment", params={"min_position": str(2**40)})
        assert r.status_code == 409 and r.json()["title"] == "Position not written"
