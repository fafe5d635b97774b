"""The expiry schedule through HTTP: every lot, a page at a time, and the points expiring
within the window over all of them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from ledger.domain import PointsEarned
from ledger.store import StreamAppend
from ledger.store.events import GENESIS_HASH

from .conftest import Api
from .test_walkthrough import BOOKING

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
LOTS = 2_500


def _lot(i: int) -> PointsEarned:
    # Dates from 10 days ago to about 500 days ahead, several lots on each (ties broken by lot id).
    expires_at = NOW + timedelta(days=i % 510 - 10, hours=i % 3)
    return PointsEarned(NOW - timedelta(days=400), f"booking:B{i:05}", f"B{i:05}", "hotel", "10.00", "EUR", 1 + i % 97,
                        1, "active", expires_at, "2026.1", (("base:hotel:EUR", 1 + i % 97),))


async def test_the_expiry_schedule_pages_through_every_lot_and_sums_all_that_expire(api: Api) -> None:
    events = [_lot(i) for i in range(LOTS)]
    await api.container.store.append([StreamAppend("M-1", 0, GENESIS_HASH, events)])
    await api.container.project()
    api.container.clock = lambda: NOW
    live = sorted((e.expires_at, e.lot_id, e.points) for e in events if e.expires_at > NOW)  # type: ignore[operator]
    horizon = NOW + timedelta(days=400)
    async with api.client("app") as app:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"within_days": 400, "limit": 700, **({"cursor": cursor} if cursor else {})}
            r = await app.get("/v1/members/M-1/expiry-schedule", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["expiring_points"] == sum(p for at, _, p in live if at <= horizon)
            seen += [(datetime.fromisoformat(lot["expires_at"]), lot["lot_id"], lot["remaining"]) for lot in body["lots"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == live and pages == -(-len(live) // 700)

        r = await app.get("/v1/members/M-1/expiry-schedule")  # the default page
        assert len(r.json()["lots"]) == 100 and r.json()["next_cursor"]
        for bad in ("not-a-cursor", "e30", "W10", "WyJ4IiwgMV0"):  # not base64 JSON; {}; []; ["x", 1]
            r = await app.get("/v1/members/M-1/expiry-schedule", params={"cursor": bad})
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", (bad, r.text)
            assert r.json()["title"] == "Cursor not found"
        r = await app.get("/v1/members/M-1/expiry-schedule", params={"limit": 1001})
        assert r.status_code == 422


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_a_well_formed_cursor_the_database_cannot_take_is_not_found(api: Api) -> None:
    # Cursors that decode to a date and a lot id, but a lot id with a NUL (PostgreSQL
    # refuses it in text) or a date that leaves Python's range once in UTC: both were 500s.
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        assert r.status_code == 201, r.text
        seen = {"min_position": r.json()["position"]}
        for value in (["2026-01-01T00:00:00+00:00", "booking:BK\u0000"], ["0001-01-01T00:00:00+01:00", "x"],
                      ["9999-12-31T23:00:00-05:00", "x"], ["2026-01-01T00:00:00+00:00", "booking:\u0007"]):
            r = await admin.get("/v1/members/M-1001/expiry-schedule", params={"cursor": _cursor(value), **seen})
            assert r.status_code == 404 and r.json()["title"] == "Cursor not found", (value, r.text)
        r = await admin.get("/v1/members/M-1001/expiry-schedule",
                            params={"cursor": _cursor(["2026-01-01T00:00:00+00:00", "booking:A"]), **seen})
        assert r.status_code == 200 and r.json()["lots"][0]["lot_id"] == "booking:BK-000123", r.text
