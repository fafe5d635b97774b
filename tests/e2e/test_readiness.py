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
