"""The FastAPI application and its lifespan: the API, the projection runner, the
expiry and hold-expiry schedulers (and the Kafka consumer when configured, and a watchdog of the
embedded database) in one process, the background tasks under one supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.anchor import run_anchor_scheduler
from ledger.bootstrap import Container, build
from ledger.embedded import keep_running
from ledger.supervisor import ReportedTasks, Supervisor
from ledger.settings import Settings
from ledger.store.database import schema_is_current
from ledger.anniversaries import run_anniversary_scheduler
from ledger.expiry import run_expiry_scheduler
from ledger.holds import run_hold_scheduler
from ledger.tier_review import run_tier_scheduler
from ledger.rules_refresh import run_rules_refresh
from ledger.simulations import SimulationRunner

from . import docs, metrics, problems
from .access_log import AccessLog
from .activities import router as activities_router
from .households import router as households_router
from .members import router as members_router
from .movements import router as movements_router
from .programme import router as programme_router
from .rejected import router as rejected_router
from .rewards import router as rewards_router
from .reports import router as reports_router
from .profiles import router as profiles_router
from .routes import router
from .segments import router as segments_router
from .simulations import router as simulations_router
from .schemas import Health, Readiness
from .statements import router as statements_router

log = logging.getLogger(__name__)

Background = Callable[[Container, asyncio.Event], Awaitable[None]]


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, whether or not the client
    sent a Content-Length, before the application reads all of them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = problems.problem(413, "Request too large", f"Request bodies are limited to {self.limit} bytes.")
            return await response(scope, receive, send)
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # An HTTPException passes through FastAPI's body parsing unchanged and
                # reaches the problem+json handler.
                raise StarletteHTTPException(413, f"Request bodies are limited to {self.limit} bytes.")
            return message

        await self.app(scope, limited, send)


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    background: bool = True,
    extra_tasks: list[Background] | None = None,
    close_container: bool | None = None,
    projections: bool = True,
    schedulers: bool = True,
    process: str | None = None,
    reported: ReportedTasks | None = None,
) -> FastAPI:
    """Without `container` the lifespan builds one. The lifespan closes the container
    (and stops an embedded database) if it built it or `close_container` is set: the
    server's shutdown is the last moment the process is sure to reach, since uvicorn
    re-raises the stopping signal once it has shut down.

    `ledger serve` with several processes runs each projection group and each scheduler
    in exactly one of them: a process with `projections` or `schedulers` off leaves those
    to another (its /readyz lists only its own tasks, and names it: `process`). Every
    process with `background` keeps its rules current (`rules-refresh`). `reported`: the
    tasks another process reports (the projection process's), shown and counted with
    this process's own."""
    settings = settings or (container.settings if container else Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None if close_container is None else close_container
        c = container or await build(settings)
        app.state.container = c
        app.state.key_cache = {}
        supervisor = app.state.supervisor = Supervisor(reported=reported)
        if c.embedded is not None:
            supervisor.add("embedded-postgres", functools.partial(keep_running, c.embedded))
        if background and projections:
            supervisor.add("projections", c.runner.run_forever)
            supervisor.add("projections-reports", c.reports_runner.run_forever)
        if background:
            supervisor.add("rules-refresh", functools.partial(run_rules_refresh, c))
        if background and schedulers:
            supervisor.add("expiry", lambda stop: run_expiry_scheduler(
                c.ledger, c.pool, stop, settings.expiry_interval_s, settings.expiry_batch_members_max, c.clock))
            supervisor.add("hold-expiry", lambda stop: run_hold_scheduler(
                c.ledger, c.pool, stop, settings.hold_expiry_interval_s, settings.expiry_batch_members_max, c.clock))
            supervisor.add("tier-review", lambda stop: run_tier_scheduler(
                c.ledger, c.pool, lambda: c.book, stop, settings.tier_review_interval_s,
                settings.expiry_batch_members_max, c.clock))
            supervisor.add("anniversaries", lambda stop: run_anniversary_scheduler(  # P3
                c.ledger, c.pool, stop, settings.anniversary_interval_s, settings.expiry_batch_members_max, c.clock))
            simulations = SimulationRunner(
                c.pool, lambda: c.book, running_max=settings.simulations_running_max,
                page_events=settings.simulation_page_events, poll_s=settings.simulation_poll_s)
            c.extras["simulation_runner"] = simulations  # woken by a POST, not only by its poll
            supervisor.add("simulations", simulations.run_forever)
            if settings.anchor_key_file is not None:
                anchored = c.extras.setdefault("anchor_status", {})
                supervisor.add("anchor", lambda stop: run_anchor_scheduler(c.pool, settings, stop, c.clock, anchored))
        for task in extra_tasks or []:
            supervisor.add(task.__name__.removesuffix("_task"), functools.partial(task, c))
        supervisor.start()
        try:
            yield
        finally:
            # The watchdog stops before the embedded server is let go, or it would
            # start it again.
            await supervisor.stop()
            if owned:
                await c.close(stop_embedded=True)

    app = FastAPI(
        title="Travel points ledger",
        version="1.0.0",
        description="Event-sourced loyalty points for travel programmes: earn from bookings, redeem, hold at checkout,"
                    " reverse, transfer, adjust, audit.",
        lifespan=lifespan,
        docs_url=None,  # served by docs.install, without a CDN
        redoc_url=None,
    )
    docs.install(app)
    problems.install(app)
    observe = metrics.install(app, process).observe
    app.include_router(router)
    app.include_router(movements_router)
    app.include_router(rejected_router)
    app.include_router(households_router)
    app.include_router(reports_router)
    app.include_router(segments_router)
    app.include_router(statements_router)
    app.include_router(programme_router)
    app.include_router(simulations_router)
    app.include_router(rewards_router)
    app.include_router(members_router)
    app.include_router(activities_router)  # P3
    app.include_router(profiles_router)  # Members (M1)

    @app.get("/healthz", operation_id="healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok")

    @app.get("/readyz", operation_id="readyz", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness}})
    async def readyz() -> JSONResponse:
        """Database reachable, migrations applied, every background task up; projection lag,
        Kafka lag and the tasks' state in the body."""
        c: Container = app.state.container
        supervisor: Supervisor = app.state.supervisor
        body: dict[str, Any] = {"status": "not_ready", "database": "unreachable", "migrations": "unknown",
                                "head_position": None, "projection_position": None, "projection_lag_events": None,
                                "kafka": None, "tasks": supervisor.status(), "process": process}
        try:
            async with c.pool.acquire(timeout=2) as conn:
                body["database"] = "ok"
                current = await schema_is_current(conn)
                body["migrations"] = "current" if current else "pending"
                if current:
                    head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
                    positions = dict(await conn.fetch("SELECT name, position FROM projection_checkpoints"))
                    projected, reported = positions["read_models"], positions["reports"]
                    body.update(head_position=head, projection_position=projected,
                                projection_lag_events=head - projected, reports_position=reported,
                                reports_lag_events=head - reported)
        except Exception as exc:  # any failure to reach the database means not ready
            log.warning("readiness: %s", exc)
            if c.embedded is not None and c.embedded.state != "running":
                body["database"] = c.embedded.state
        kafka_status = c.extras.get("kafka_status")
        if callable(kafka_status):
            body["kafka"] = kafka_status()
        ready = body["database"] == "ok" and body["migrations"] == "current" and supervisor.all_up
        body["status"] = "ready" if ready else "not_ready"
        return JSONResponse(Readiness(**body).model_dump(mode="json"), status_code=200 if ready else 503)

    # Load balancers often probe with HEAD: the same status, no body (not in the contract,
    # which lists the GETs).
    @app.head("/healthz", include_in_schema=False)
    async def healthz_head() -> Response:
        return Response(status_code=200)

    @app.head("/readyz", include_in_schema=False)
    async def readyz_head() -> Response:
        return Response(status_code=(await readyz()).status_code)

    app.add_middleware(BodyLimit, limit=settings.request_body_bytes_max)
    app.add_middleware(AccessLog, observe=observe)  # added last: the outermost, it sees every answer
    return app
