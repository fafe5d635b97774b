"""`ledger serve` anchors the hash chains on a schedule when it has a key: a supervised
task, shown in /readyz and /metrics, whose anchors verify."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ledger.anchor import ANCHOR_GLOB, create_key, verify_all
from ledger.api.app import create_app
from ledger.bootstrap import Container

from ..integration.helpers import earn


async def test_serve_anchors_on_a_schedule_and_reports_it(container: Container, tmp_path: Path) -> None:
    key, anchors = tmp_path / "anchor.pem", tmp_path / "anchors"
    create_key(key)
    await container.ledger.handle(earn("M-1", "B1"))
    container.settings = container.settings.model_copy(update={
        "anchor_key_file": key, "anchor_dir": anchors, "anchor_interval_s": 0.2, "anchor_files_max": 2})
    app = create_app(container=container)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            async with asyncio.timeout(10):
                while not list(anchors.glob(ANCHOR_GLOB)):
                    await asyncio.sleep(0.05)
                for b in range(2, 5):  # each new event is anchored at the next interval
                    await container.ledger.handle(earn("M-1", f"B{b}"))
                    while f"ledger_anchor_position {b}.0" not in (await client.get("/metrics")).text:
                        await asyncio.sleep(0.05)
            body = (await client.get("/readyz")).json()
            assert body["status"] == "ready" and body["tasks"]["anchor"] == {**body["tasks"]["anchor"], "up": True,
                                                                           "failures": 0}
            metrics = (await client.get("/metrics")).text
            assert 'ledger_task_up{task="anchor"} 1.0' in metrics and "ledger_anchor_position 4.0" in metrics
    kept = sorted(anchors.glob(ANCHOR_GLOB))
    assert len(kept) == 2  # the newest, as anchor_files_max says
    result = await verify_all(container.pool, kept[-1], None)
    assert result.breaks == [] and result.anchor is not None and result.anchor.position == 4
