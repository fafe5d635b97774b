"""/readyz and /metrics report the background tasks: a task that keeps failing makes
the service not ready, and is counted."""

from __future__ import annotations

import asyncio

import httpx

from ledger.api.app import create_app
from ledger.bootstrap import Container


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
            metrics = (await client.get("/metrics")).text
            assert 'ledger_task_failures_total{task="failing"}' in metrics
            assert 'ledger_task_up{task="projections"} 1.0' in metrics


async def test_readiness_is_ready_with_every_task_up(container: Container) -> None:
    app = create_app(container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            r = await client.get("/readyz")
            assert r.status_code == 200, r.text
            assert set(r.json()["tasks"]) == {"projections", "expiry"}


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
