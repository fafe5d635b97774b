"""Many writes to one member at once: the service absorbs the contention itself, so a
client never sees a conflict it did not cause."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from ledger.domain import ConfirmBooking
from ledger.handlers import CommandRequest

from .conftest import Api

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def booking(member_id: str, i: int) -> dict[str, str]:
    return {
        "event_id": f"{member_id}-evt-{i}", "type": "booking.confirmed", "member_id": member_id,
        "booking_id": f"{member_id}-BK-{i}", "product": "hotel", "amount": "120.00", "currency": "EUR",
        "occurred_at": "2026-11-20T09:30:00+01:00",
    }


async def _post_all(api: Api, member_id: str, count: int) -> list[httpx.Response]:
    # One connection per request, all in flight at once: the contention a fleet of
    # booking systems makes.
    async with api.client("ingest") as client:
        client._transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=count))  # noqa: SLF001
        return list(await asyncio.gather(
            *(client.post("/v1/booking-events", json=booking(member_id, i)) for i in range(count))))


async def _assert_every_one_applied_once(api: Api, member_id: str, responses: list[httpx.Response],
                                         events_before: int) -> None:
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [201], [(r.status_code, r.text) for r in responses if r.status_code != 201][:3]
    async with api.container.pool.acquire() as conn:
        keys = await conn.fetch(
            "SELECT idempotency_key FROM events WHERE stream_id = $1 AND idempotency_key IS NOT NULL"
            " AND idempotency_key LIKE 'booking-event:%-evt-%'", member_id)
        versions = await conn.fetch("SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY 1", member_id)
    assert sorted(k[0] for k in keys) == sorted(f"booking-event:{member_id}-evt-{i}" for i in range(len(responses)))
    assert [v[0] for v in versions] == list(range(1, events_before + len(responses) + 1))


async def test_64_concurrent_bookings_of_a_new_member_are_all_applied(api: Api) -> None:
    responses = await _post_all(api, "M-NEW", 64)
    await _assert_every_one_applied_once(api, "M-NEW", responses, 0)
    # Inside one process nothing raced: the writes were decided one after the other in
    # shared transactions (before, each lost race cost an attempt, and 64 writers took
    # over a thousand of them, a few running out).
    assert api.container.ledger.conflicts == 0
    async with api.client("admin") as admin:
        metrics = (await admin.get("/metrics")).text
    assert "ledger_command_conflicts_total 0.0" in metrics
    assert "ledger_group_commit_commands_total 64.0" in metrics


async def test_32_concurrent_bookings_of_a_member_with_10000_events_are_all_applied(api: Api) -> None:
    ledger = api.container.ledger
    seed = [CommandRequest(ConfirmBooking("M-LONG", T0 + timedelta(minutes=i), f"H{i}", "hotel",
                                          __import__("decimal").Decimal("80.00"), "EUR"))
            for i in range(10_000)]
    started = time.monotonic()
    for start in range(0, len(seed), 2_000):
        results = await ledger.handle_batch(seed[start:start + 2_000])
        assert {r.status for r in results} == {"applied"}
    seeded_s = time.monotonic() - started
    # Another process's view: the member's state is not in this process's cache, so the
    # writes below start by folding 10,000 events, as after a restart.
    ledger.cache.forget(["M-LONG"])
    responses = await _post_all(api, "M-LONG", 32)
    await _assert_every_one_applied_once(api, "M-LONG", responses, 10_000)
    assert api.container.ledger.conflicts == 0
    assert seeded_s < 60, seeded_s


async def test_a_write_that_loses_every_race_is_a_retryable_503_and_changes_nothing(api: Api) -> None:
    """Another process wrote for the member meanwhile, and this one has a single attempt:
    the client is told to retry (503 with Retry-After), not that its request conflicts
    (a 409 is final: same id with another body, or not enough points)."""
    from ledger.handlers import Ledger

    async with api.client("ingest") as client:
        assert (await client.post("/v1/booking-events", json=booking("M-R", 0))).status_code == 201
        there = Ledger(api.container.store, api.container.rules)  # another process, its own cache
        await there.handle(booking_request("M-R", 1))
        api.container.ledger.attempts_max = 1  # this process's cached state is behind: its only try loses
        r = await client.post("/v1/booking-events", json=booking("M-R", 2))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "/problems/concurrent-update"
        assert await api.container.store.read_stream("M-R", 2) == []  # nothing applied
        api.container.ledger.attempts_max = 100
        r = await client.post("/v1/booking-events", json=booking("M-R", 2))  # the same request again
        assert r.status_code == 201, r.text
        assert r.json()["position"] is not None
    assert [e.stream_version for e in await api.container.store.read_stream("M-R")] == [1, 2, 3]


def booking_request(member_id: str, i: int) -> CommandRequest:
    from ledger.ingest.schema import BookingEvent

    return BookingEvent.model_validate(booking(member_id, i)).to_request("test")
