"""Member reads as of an instant, statements and chain verification, over HTTP: what each
answers at points of a member's history, that `as_of` now answers what the read models
do, the as-of clock rule for a back-dated booking, roles, and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from .conftest import Api
from .test_walkthrough import BOOKING

MEMBER = "M-1001"
EARNED_AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)  # completed: 2,600 points, active until 2028-01-05
REDEEMED_AT = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
ADJUSTED_AT = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
READS = ("balance", "tier", "expiry-schedule", "history")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _history(api: Api) -> int:
    """A member with a booking completed, a redemption and a goodwill credit, each at its
    own time on a clock the test moves; the position of the last event."""
    clock = {"now": REDEEMED_AT}
    api.container.clock = lambda: clock["now"]
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={
            **BOOKING, "event_id": "completed", "type": "booking.completed", "occurred_at": _iso(EARNED_AT)})
        assert r.status_code == 201, r.text
        r = await admin.post(f"/v1/members/{MEMBER}/redemptions", headers={"Idempotency-Key": "r-1"},
                             json={"points": 1000, "reward": {"id": "HTL-DISC-10", "kind": "hotel_discount"}})
        assert r.status_code == 201, r.text
        clock["now"] = ADJUSTED_AT
        r = await admin.post(f"/v1/members/{MEMBER}/adjustments", headers={"Idempotency-Key": "a-1"},
                             json={"points": 750, "reason": "Flight delayed"})
        assert r.status_code == 201, r.text
        clock["now"] = NOW
        return int(r.json()["position"])


async def _get(client: httpx.AsyncClient, read: str, member: str = MEMBER, **params: Any) -> httpx.Response:
    return await client.get(f"/v1/members/{member}/{read}", params=params)


async def test_each_read_answers_as_of_an_instant(api: Api) -> None:
    position = await _history(api)
    async with api.client("auditor") as auditor:
        for read in READS:  # before the member's first event: it did not exist
            r = await _get(auditor, read, as_of=_iso(EARNED_AT - timedelta(seconds=1)))
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", (read, r.text)

        r = await _get(auditor, "balance", as_of=_iso(EARNED_AT))
        assert r.status_code == 200, r.text
        b = r.json()
        assert (b["available"], b["lifetime_earned"], b["lifetime_redeemed"], b["lifetime_adjusted"]) == (2600, 2600,
                                                                                                           0, 0)
        b = (await _get(auditor, "balance", as_of=_iso(REDEEMED_AT + timedelta(days=1)))).json()
        assert (b["available"], b["lifetime_redeemed"], b["last_activity"]) == (1600, 1000, "2026-01-10T12:00:00Z")
        history = (await _get(auditor, "history", as_of=_iso(REDEEMED_AT))).json()
        assert [e["type"] for e in history["events"]] == ["PointsRedeemed", "PointsEarned"]
        expiry = (await _get(auditor, "expiry-schedule", as_of=_iso(REDEEMED_AT), within_days=3650)).json()
        assert expiry["expiring_points"] == 1600
        assert expiry["lots"] == [{"lot_id": "booking:BK-000123", "remaining": 1600,
                                   "expires_at": "2028-01-05T09:30:00Z"}]

        # As of now, each read answers what the read models answer (but for the position:
        # the read models' checkpoint, or the last event the as-of answer includes).
        for read in READS:
            live = await _get(auditor, read, min_position=position)
            as_of = await _get(auditor, read, as_of=_iso(NOW))
            assert live.status_code == as_of.status_code == 200, (read, live.text, as_of.text)
            live_body, as_of_body = live.json(), as_of.json()
            live_body.pop("position", None), as_of_body.pop("position", None)
            assert as_of_body == live_body, read

        # Lots past their date are not available as of a later instant, though no expiry
        # job has run: 2,350 of the booking's lot, the goodwill credit's 750 still on.
        api.container.clock = lambda: datetime(2028, 6, 1, tzinfo=UTC)
        b = (await _get(auditor, "balance", as_of="2028-01-05T09:30:01Z")).json()
        assert b["available"] == 750 and b["lifetime_expired"] == 0
        expiry = (await _get(auditor, "expiry-schedule", as_of="2028-01-05T09:30:01Z")).json()
        assert [lot["remaining"] for lot in expiry["lots"]] == [750]
        tier = (await _get(auditor, "tier", as_of="2028-01-05T09:30:01Z")).json()
        assert (tier["tier"], tier["qualifying_points"]) == ("member", 0)


async def test_a_back_dated_booking_counts_from_the_latest_time_already_on_record(api: Api) -> None:
    await _history(api)
    async with api.client("admin") as admin:
        # Dated 7 January, posted after the 10 January redemption and the 1 February credit.
        r = await admin.post("/v1/booking-events", json={
            **BOOKING, "event_id": "late", "type": "booking.completed", "booking_id": "BK-LATE",
            "occurred_at": "2026-01-07T10:00:00Z"})
        assert r.status_code == 201, r.text
        late, position = r.json()["points"], r.json()["position"]
        r = await _get(admin, "balance", min_position=position)
        assert r.json()["available"] == 1600 + 750 + late
        r = await _get(admin, "balance", as_of="2026-01-08T00:00:00Z", min_position=position)
        assert r.json()["available"] == 2600  # not in: the record then held the earn only
        # It counts from the latest time on the member's record when it was posted: the
        # goodwill credit's, 1 February.
        r = await _get(admin, "balance", as_of="2026-01-31T23:59:59Z")
        assert r.json()["available"] == 1600
        r = await _get(admin, "balance", as_of=_iso(ADJUSTED_AT))
        assert r.json()["available"] == 1600 + 750 + late
        r = await _get(admin, "balance", as_of=_iso(NOW))
        assert r.json()["available"] == 1600 + 750 + late


async def test_a_statement_runs_from_one_as_of_balance_to_the_other(api: Api) -> None:
    await _history(api)
    async with api.client("auditor") as auditor:
        start, end = datetime(2026, 1, 8, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC)
        r = await _get(auditor, "statement", **{"from": _iso(start), "to": _iso(end)})
        assert r.status_code == 200, r.text
        s = r.json()
        assert (s["opening_balance"], s["closing_balance"], s["events"]) == (2600, 2350, 2)
        assert s["credits"]["adjusted"] == 750 and s["debits"]["redeemed"] == 1000
        assert s["opening_balance"] + s["total_credits"] - s["total_debits"] == s["closing_balance"]
        for edge, key in ((start, "opening_balance"), (end, "closing_balance")):
            assert (await _get(auditor, "balance", as_of=_iso(edge))).json()["available"] == s[key]

        later = await _get(auditor, "statement", **{"from": "2025-12-31T00:00:00Z", "to": "2028-01-20T00:00:00Z"})
        assert later.status_code == 422  # later than now
        api.container.clock = lambda: datetime(2028, 6, 1, tzinfo=UTC)
        # To a day between the booking's lot's date and the goodwill credit's.
        w = (await _get(auditor, "statement", **{"from": "2025-12-31T00:00:00Z",
                                                 "to": "2028-01-20T00:00:00+02:00"})).json()
        assert (w["opening_balance"], w["closing_balance"]) == (0, 750)
        assert w["earned_by_source"] == {"base:flight:EUR": 2100, "first_booking_bonus": 500}
        assert (w["credits"]["earned"], w["debits"]["expired"]) == (2600, 1600)


async def test_verification_checks_the_chain_and_names_the_first_event_that_breaks_it(api: Api) -> None:
    await _history(api)
    async with api.client("auditor") as auditor:
        r = await _get(auditor, "verification")
        assert r.status_code == 200, r.text
        v = r.json()
        events = (await auditor.get("/v1/events", params={"limit": 1000})).json()["events"]
        assert v == {"member_id": MEMBER, "events": 3, "ok": True, "broken_at_version": None,
                     "head_hash": events[-1]["hash"]}
    # A row written past the event store, with a hash that is not the chain's.
    data = {"occurred_at": "2026-03-01T00:00:00+00:00", "adjustment_id": "forged", "points": 100_000, "reason": "x", "actor": "x", "lot_id": "adj:forged",
            "expires_at": "2027-01-01T00:00:00+00:00", "lots": []}
    await api.container.pool.execute(
        "INSERT INTO events (stream_id, stream_version, type, schema_version, data, metadata, occurred_at, hash)"
        " VALUES ($1, 4, 'PointsAdjusted', 1, $2, '{}', $3, $4)",
        MEMBER, orjson.dumps(data).decode(), NOW, bytes(32))
    async with api.client("admin") as admin:
        v = (await _get(admin, "verification")).json()
        assert (v["ok"], v["broken_at_version"], v["events"], v["head_hash"]) == (False, 4, 4, "00" * 32)


async def test_roles_and_bad_input(api: Api) -> None:
    await _history(api)
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    as_of = {"as_of": "2026-01-20T00:00:00Z"}
    for role, allowed in {"admin": {"reads", "statement", "verification"}, "auditor": {"reads", "statement",
                                                                                        "verification"},
                          "support": {"reads", "statement"}, "app": {"reads", "statement"}, "ingest": set()}.items():
        async with api.client(role) as client:
            answers = {"reads": [await _get(client, read, **as_of) for read in READS],
                       "statement": [await _get(client, "statement", **window)],
                       "verification": [await _get(client, "verification")]}
            for name, responses in answers.items():
                for r in responses:
                    assert r.status_code == (200 if name in allowed else 403), (role, name, r.text)

    bad = [
        ("balance", {"as_of": "2026-01-20T00:00:00"}, "as_of"),  # no offset
        ("tier", {"as_of": "2026-01-20"}, "as_of"),
        ("expiry-schedule", {"as_of": "1768867200"}, "as_of"),
        ("history", {"as_of": "2026-01-20T00:00:00Z", "limit": 0}, "limit"),
        ("balance", {"as_of": "2099-01-01T00:00:00Z"}, "as_of"),  # later than now
        ("balance", {"as_of": "1999-12-31T23:59:59Z"}, "as_of"),
        ("statement", {"from": "2026-02-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "to"),
        ("statement", {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ("statement", {"from": "2010-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),  # past ten years
        ("statement", {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00Z"}, "from"),
        ("statement", {"to": "2026-02-01T00:00:00Z"}, "from"),
        ("statement", {"from": "2026-01-01T00:00:00Z"}, "to"),
        ("statement", {"from": "2026-01-01T00:00:00Z", "to": "2099-02-01T00:00:00Z"}, "to"),
    ]
    async with api.client("auditor") as auditor:
        before = (await auditor.get("/v1/events", params={"limit": 1000})).json()
        for read, params, field in bad:
            r = await _get(auditor, read, **params)
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (read, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (read, params, r.json())
        for read in (*READS, "statement", "verification"):
            params = window if read == "statement" else as_of if read in READS else {}
            r = await _get(auditor, read, member="M-404", **params)
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", (read, r.text)
        r = await auditor.get("/v1/members/M-1001/balance", params=[("as_of", as_of["as_of"])] * 2)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "as_of"
        assert (await auditor.get("/v1/events", params={"limit": 1000})).json() == before
