"""The expiry schedule through HTTP: every lot, a page at a time, and the points expiring
within the window over all of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.domain import PointsEarned
from ledger.store import StreamAppend
from ledger.store.events import GENESIS_HASH

from .conftest import Api

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
