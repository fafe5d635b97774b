"""/readyz and /metrics report the background tasks: a task that keeps failing makes
the service not ready, and is counted."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from ledger import holds
from ledger.api.app import create_app
from ledger.bootstrap import Container
from ledger.domain import PlaceHold
from ledger.handlers import CommandRequest
from ledger.keys import Role, create_key

from ..integration.helpers import T0, earn


async def failing_task(container: Container, stop: asyncio.Event) -> None:
    raise RuntimeError("this task always fails")


async def test_readiness_lists_the_tasks_and_is_not_ready_while_one_is_down(container: Container) -> None:
    app = create_app(container=container, extra_tasks=[failing_task])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with asyncio.timeout(10):
                while (body := (await client.get("/readyz")).json())["tasks"]["failing"]["failures"] < 1:
                    await asyncio.sleep(0.01)
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "not_ready" and body["database"] == "ok" and body["migrations"] == "current"
            assert body["tasks"]["failing"]["up"] is False
            assert body["tasks"]["failing"]["last_error"] == "RuntimeError: this task always fails"
            assert body["tasks"]["projections"]["up"] and body["tasks"]["expiry"]["up"]
            assert body["tasks"]["hold-expiry"]["up"]
            metrics = (await client.get("/metrics")).text
            assert 'ledger_task_failures_total{task="failing"}' in metrics
            assert 'ledger_task_up{task="projections"} 1.0' in metrics


async def test_readiness_is_ready_with_every_task_up(container: Container) -> None:
    app = create_app(container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            r = await client.get("/readyz")
            assert r.status_code == 200, r.text
            assert set(r.json()["tasks"]) == {"projections", "projections-reports", "expiry", "hold-expiry",
                                                 "rules-refresh", "tier-review",
                                                 "anniversaries", "simulations"}
            assert 'ledger_task_up{task="simulations"} 1.0' in (await client.get("/metrics")).text


async def test_a_page_the_server_keeps_refusing_shows_the_projection_runner_down_until_it_passes(
    container: Container,
) -> None:
    """Not a runner that looks up while its lag grows: a page the database refuses again
    and again (here a constraint the read model breaks, as a projection bug would) goes to
    the supervisor, which shows the runner down, counts it, and starts it again until the
    page passes."""
    from ledger.ingest.schema import BookingEvent

    async with container.pool.acquire() as conn:
        await conn.execute("ALTER TABLE balances ADD CONSTRAINT refuse_every_row CHECK (member_id = '') NOT VALID")
    app = create_app(container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            await container.ledger.handle(BookingEvent.model_validate({
                "event_id": "e-1", "type": "booking.completed", "member_id": "M-1", "booking_id": "B-1",
                "product": "hotel", "amount": "100.00", "currency": "EUR", "occurred_at": "2026-01-05T10:00:00Z",
            }).to_request("test"))
            async with asyncio.timeout(10):
                while (r := await client.get("/readyz")).json()["tasks"]["projections"]["failures"] < 1:
                    await asyncio.sleep(0.01)
            assert r.status_code == 503
            assert "CheckViolationError" in r.json()["tasks"]["projections"]["last_error"]
            assert 'ledger_task_failures_total{task="projections"}' in (await client.get("/metrics")).text
            async with container.pool.acquire() as conn:
                await conn.execute("ALTER TABLE balances DROP CONSTRAINT refuse_every_row")
            async with asyncio.timeout(10):
                while (r := await client.get("/readyz")).status_code != 200 or r.json()["projection_lag_events"]:
                    await asyncio.sleep(0.05)
            assert r.json()["tasks"]["projections"]["up"] is True


async def test_health_and_readiness_answer_head_as_load_balancers_probe(container: Container) -> None:
    app = create_app(container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for path in ("/healthz", "/readyz"):
                r = await client.head(path)
                assert r.status_code == 200 and r.content == b"", (path, r.status_code)


async def test_the_hold_scheduler_is_a_supervised_task_down_when_it_fails_and_started_again(
    container: Container, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ledger serve` releases holds past their time in a task of its own, which shows in
    /readyz and /metrics: a pass that fails is logged, counted and shows it down until
    the supervisor starts it again; the next pass brings the held points back."""
    real, calls = holds.expire_holds_due, []

    async def failing_once(*args: object, **kwargs: object) -> int:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("the pass failed")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(holds, "expire_holds_due", failing_once)
    await container.ledger.handle(earn("M-1", "B1", at=T0))  # 1,000 points
    await container.ledger.handle(CommandRequest(
        PlaceHold("M-1", T0, "H-1", 300, "reward", "hotel", T0 + timedelta(minutes=15))))
    await container.project()
    assert await container.pool.fetchval("SELECT held FROM balances WHERE member_id = 'M-1'") == 300
    container.clock = lambda: T0 + timedelta(hours=1)
    _, token = await create_key(container.pool, "app", Role.app)
    app = create_app(container.settings.model_copy(update={"hold_expiry_interval_s": 0.05}), container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            async with asyncio.timeout(10):
                while (task := (await client.get("/readyz")).json()["tasks"]["hold-expiry"])["failures"] < 1:
                    await asyncio.sleep(0.005)
            assert task["last_error"] == "RuntimeError: the pass failed"
            assert 'ledger_task_failures_total{task="hold-expiry"} 1.0' in (await client.get("/metrics")).text
            async with asyncio.timeout(10):
                while (balance := (await client.get("/v1/members/M-1/balance")).json())["held"]:
                    await asyncio.sleep(0.02)
            assert (balance["available"], balance["held"]) == (1000, 0)
            r = await client.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json()["tasks"]["hold-expiry"] | {"since": None} == {
                "up": True, "restarts": 1, "failures": 1, "last_error": "RuntimeError: the pass failed", "since": None}
            assert 'ledger_task_up{task="hold-expiry"} 1.0' in (await client.get("/metrics")).text
