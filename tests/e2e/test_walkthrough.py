"""The README's walk-through, through HTTP, plus idempotency and read-your-writes."""

from __future__ import annotations

import asyncio
from datetime import datetime

from .conftest import Api

BOOKING = {
    "event_id": "bk-000123-confirmed",
    "type": "booking.confirmed",
    "member_id": "M-1001",
    "booking_id": "BK-000123",
    "product": "flight",
    "amount": "420.00",
    "currency": "EUR",
    "occurred_at": "2026-11-20T09:30:00+01:00",
}


async def test_readme_walkthrough(api: Api) -> None:
    async with api.client("ingest") as ingest, api.client("app") as app, api.client("support") as support:
        r = await ingest.post("/v1/booking-events", json=BOOKING)
        assert r.status_code == 201, r.text
        assert r.json()["points"] == 2600 and r.json()["pending_points"] == 2600
        completed = {**BOOKING, "event_id": "bk-000123-completed", "type": "booking.completed",
                     "occurred_at": "2026-11-24T18:00:00+01:00"}
        r = await ingest.post("/v1/booking-events", json=completed)
        assert r.status_code == 201, r.text
        position = r.json()["position"]

        r = await app.get("/v1/members/M-1001/balance", params={"min_position": position})
        assert r.status_code == 200, r.text
        balance = r.json()
        assert (balance["available"], balance["pending"], balance["tier"]) == (2600, 0, "member")

        r = await app.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "order-77"},
                           json={"points": 2000, "reward": {"id": "HTL-DISC-20", "kind": "hotel_discount"}})
        assert r.status_code == 201, r.text
        redemption = r.json()
        assert redemption["available_after"] == 600
        assert redemption["lots"] == [{"lot_id": "booking:BK-000123", "points": 2000}]

        r = await support.post("/v1/members/M-1001/adjustments", headers={"Idempotency-Key": "case-9"},
                               json={"points": 300, "reason": "Seat not as booked"})
        assert r.status_code == 201 and r.json()["actor"] == "support-key"

        params = {"min_position": r.json()["position"], "within_days": 800}
        r = await app.get("/v1/members/M-1001/expiry-schedule", params=params)
        assert r.status_code == 200
        lots = r.json()["lots"]
        assert [lot["remaining"] for lot in lots] == [600, 300]
        assert r.json()["expiring_points"] == 900

        r = await app.get("/v1/members/M-1001/tier")
        assert r.json()["qualifying_points"] == 2100 and r.json()["next_tier"] == "silver"

        r = await app.get("/v1/members/M-1001/history", params={"limit": 2})
        page = r.json()
        assert [e["type"] for e in page["events"]] == ["PointsAdjusted", "PointsRedeemed"]
        # One shape for the lots a redemption took: the response's, in the history too.
        assert page["events"][1]["data"]["lots"] == redemption["lots"]
        assert page["events"][0]["data"]["lots"] == []
        r = await app.get("/v1/members/M-1001/history", params={"limit": 2, "cursor": page["next_cursor"]})
        assert [e["type"] for e in r.json()["events"]] == ["PendingPointsActivated", "PointsEarned"]
        assert r.json()["next_cursor"] is None

        # As of 22 November the flight's points were pending; a statement from 1 November to
        # now; the member's hash chain recomputed.
        r = await app.get("/v1/members/M-1001/balance", params={"as_of": "2026-11-22T00:00:00Z"})
        assert (r.json()["available"], r.json()["pending"]) == (0, 2600), r.text
        r = await app.get("/v1/members/M-1001/statement", params={
            "from": "2026-11-01T00:00:00Z", "to": datetime.now().astimezone().isoformat()})
        s = r.json()
        assert (s["opening_balance"], s["closing_balance"]) == (0, 900), r.text
        assert (s["credits"]["earned"], s["credits"]["adjusted"], s["debits"]["redeemed"]) == (2600, 300, 2000)
        async with api.client("auditor") as auditor:
            r = await auditor.get("/v1/members/M-1001/verification")
        assert (r.json()["events"], r.json()["ok"]) == (4, True), r.text

        # A hold at checkout, captured in part: the rest goes back at once.
        r = await app.post("/v1/members/M-1001/holds", headers={"Idempotency-Key": "checkout-31"},
                           json={"points": 500, "reward": {"id": "CAR-UPG-1", "kind": "upgrade"}, "ttl_s": 900})
        assert r.status_code == 201, r.text
        hold = r.json()
        assert hold["lots"] == [{"lot_id": "booking:BK-000123", "points": 500}] and hold["available_after"] == 400
        r = await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/capture",
                           headers={"Idempotency-Key": "checkout-31-paid"}, json={"points": 400})
        assert r.status_code == 201, r.text
        assert (r.json()["points"], r.json()["released"], r.json()["available_after"]) == (400, 100, 500)
        r = await app.post(f"/v1/members/M-1001/holds/{hold['hold_id']}/release",
                           headers={"Idempotency-Key": "checkout-31-undo"})
        assert r.status_code == 409 and r.json()["hold_status"] == "captured"

        # Support reverses part of order-77 back onto its lot.
        r = await support.post(f"/v1/members/M-1001/redemptions/{redemption['redemption_id']}/reversals",
                               headers={"Idempotency-Key": "case-12"},
                               json={"points": 800, "reason": "Hotel closed for renovation"})
        assert r.status_code == 201, r.text
        reversal = r.json()
        assert reversal["restored"] == [{"lot_id": "booking:BK-000123", "points": 800}]
        assert (reversal["expired"], reversal["forfeited"], reversal["available_after"]) == ([], [], 1300)

        # A transfer to a travel companion who is a member too.
        r = await ingest.post("/v1/booking-events", json={
            "event_id": "bk-000200-completed", "type": "booking.completed", "member_id": "M-1002",
            "booking_id": "BK-000200", "product": "rail", "amount": "60.00", "currency": "EUR",
            "occurred_at": "2026-11-26T08:00:00+01:00"})
        assert r.status_code == 201, r.text
        r = await app.post("/v1/transfers", headers={"Idempotency-Key": "gift-5"}, json={
            "from_member_id": "M-1001", "to_member_id": "M-1002", "points": 300, "reason": "For the trip"})
        assert r.status_code == 201, r.text
        assert r.json()["lots"] == [{"lot_id": "booking:BK-000123", "points": 300}]
        assert r.json()["available_after"] == 1000
        received = (await app.get("/v1/members/M-1002/history", params={"limit": 1})).json()["events"][0]
        assert received["type"] == "PointsTransferredIn" and received["data"]["points"] == 300
        lots = (await app.get("/v1/members/M-1001/expiry-schedule", params={"within_days": 800})).json()["lots"]
        assert datetime.fromisoformat(received["data"]["expires_at"]) == datetime.fromisoformat(lots[0]["expires_at"])


async def test_the_lots_a_reversal_took_have_one_shape_in_every_response(api: Api) -> None:
    async with api.client("admin") as admin:
        await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        refund = {**BOOKING, "event_id": "bk-000123-refunded", "type": "booking.refunded"}
        r = await admin.post("/v1/booking-events", json=refund)
        assert r.status_code == 201, r.text
        (reversed_,) = r.json()["events"]
        assert reversed_["type"] == "EarnReversed"
        assert reversed_["data"]["lots"] == [{"lot_id": "booking:BK-000123", "points": 2600}]
        assert (await admin.post("/v1/booking-events", json=refund)).json() == r.json()  # the stored result, too
        history = (await admin.get("/v1/members/M-1001/history", params={"limit": 1})).json()
        assert history["events"][0]["data"] == reversed_["data"]
        # The audit feed keeps the stored form, which the hash covers.
        audit = (await admin.get("/v1/events")).json()["events"][-1]
        assert audit["data"]["lots"] == [["booking:BK-000123", 2600]]


async def test_reposting_a_booking_event_returns_the_original_and_appends_nothing(api: Api) -> None:
    async with api.client("ingest") as ingest:
        first = await ingest.post("/v1/booking-events", json=BOOKING)
        again = await ingest.post("/v1/booking-events", json=BOOKING)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        changed = await ingest.post("/v1/booking-events", json={**BOOKING, "amount": "999.00"})
        assert changed.status_code == 409
        assert changed.headers["content-type"] == "application/problem+json"
    assert await api.container.pool.fetchval("SELECT count(*) FROM events") == 1


async def test_redemption_replay_and_insufficient_points(api: Api) -> None:
    async with api.client("admin") as admin:
        await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        body = {"points": 1000, "reward": {"id": "MILES-1000", "kind": "airline_miles"}}
        first = await admin.post("/v1/members/M-1001/redemptions", json=body, headers={"Idempotency-Key": "k1"})
        again = await admin.post("/v1/members/M-1001/redemptions", json=body, headers={"Idempotency-Key": "k1"})
        assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json()
        short = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": "k2"},
                                 json={**body, "points": 5000})
        assert short.status_code == 409
        assert short.json()["available"] == 1600 and short.json()["title"] == "Insufficient points"
        missing = await admin.post("/v1/members/nobody/redemptions", json=body, headers={"Idempotency-Key": "k3"})
        assert missing.status_code == 404


async def test_concurrent_redemptions_through_http_never_overdraw(api: Api) -> None:
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed", "amount": "100.00"})
        assert r.status_code == 201  # 500 + 500 first-booking bonus = 1000 points

        async def one(i: int) -> tuple[int, int]:
            r = await admin.post("/v1/members/M-1001/redemptions", headers={"Idempotency-Key": f"c{i}"},
                                 json={"points": 100, "reward": {"id": "R", "kind": "voucher"}})
            return r.status_code, r.json().get("position", 0)

        outcomes = await asyncio.gather(*(one(i) for i in range(30)))
        assert sorted(code for code, _ in outcomes) == [201] * 10 + [409] * 20
        # Positions are not dense (a conflicting insert uses one up), so wait for the last one.
        last = max(position for _, position in outcomes)
        r = await admin.get("/v1/members/M-1001/balance", params={"min_position": last})
        assert r.json()["available"] == 0 and r.json()["lifetime_redeemed"] == 1000


async def test_read_your_writes_with_min_position(api: Api) -> None:
    from projections.runner import ADVISORY_LOCK_ID

    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "type": "booking.completed"})
        position = r.json()["position"]
        # Immediately after the write, with min_position, the read sees it.
        r = await admin.get("/v1/members/M-1001/balance", params={"min_position": position})
        assert r.status_code == 200 and r.json()["available"] == 2600 and r.json()["position"] >= position

        # Hold the projections back: a bounded wait, then 503 with Retry-After.
        api.container.settings.read_wait_s_max = 0.3
        async with api.container.pool.acquire() as blocker:
            await blocker.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
            body = {"points": 100, "reward": {"id": "R", "kind": "voucher"}}
            r = await admin.post("/v1/members/M-1001/redemptions", json=body, headers={"Idempotency-Key": "x"})
            later = r.json()["position"]
            r = await admin.get("/v1/members/M-1001/balance", params={"min_position": later})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["position"] == position
            await blocker.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
        api.container.settings.read_wait_s_max = 5
        r = await admin.get("/v1/members/M-1001/balance", params={"min_position": later})
        assert r.status_code == 200 and r.json()["available"] == 2500

        # A position no write has produced yet: well formed, but the ledger has no such position.
        head = await api.container.store.head()
        for route in ("balance", "tier", "expiry-schedule", "history"):
            r = await admin.get(f"/v1/members/M-1001/{route}", params={"min_position": head + 1000})
            assert r.status_code == 409 and r.json()["title"] == "Position not written", (route, r.text)
            assert r.json()["head_position"] == head


async def test_health_and_readiness(api: Api) -> None:
    async with api.client(None) as anyone:
        assert (await anyone.get("/healthz")).json() == {"status": "ok"}
        r = await anyone.get("/readyz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready" and body["migrations"] == "current"
        assert body["projection_lag_events"] == 0
        metrics = (await anyone.get("/metrics")).text
        assert 'ledger_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
        assert "ledger_projection_position" in metrics


async def test_an_auditor_replays_the_history_and_reproduces_every_balance(api: Api) -> None:
    from ledger.domain import from_data
    from ledger.domain.state import fold
    from ledger.store import StoredEvent, verify_chain

    async with api.client("admin") as admin:
        for m in range(5):
            for b in range(3):
                await admin.post("/v1/booking-events", json={
                    **BOOKING, "event_id": f"e{m}-{b}", "member_id": f"M-{m}", "booking_id": f"B{m}-{b}",
                    "type": "booking.completed", "amount": f"{100 + 37 * b}.50"})
        r = await admin.post("/v1/members/M-1/redemptions", headers={"Idempotency-Key": "r"},
                             json={"points": 700, "reward": {"id": "R", "kind": "upgrade"}})
        last = r.json()["position"]
    async with api.client("auditor") as auditor:
        events, after = [], 0
        while True:
            page = (await auditor.get("/v1/events", params={"after": after, "limit": 4})).json()
            events += page["events"]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert [e["position"] for e in events] == list(range(1, last + 1))
        streams: dict[str, list] = {}
        for e in events:
            streams.setdefault(e["stream_id"], []).append(StoredEvent(
                e["position"], e["stream_id"], e["stream_version"], from_data(e["type"], e["schema_version"], e["data"]),
                e["metadata"], e["recorded_at"], bytes.fromhex(e["hash"])))
        for member, stored in streams.items():
            assert verify_chain(stored) is None
            state = fold(member, [s.event for s in stored])
            balance = (await auditor.get(f"/v1/members/{member}/balance", params={"min_position": last})).json()
            assert balance["available"] == state.balance, member
