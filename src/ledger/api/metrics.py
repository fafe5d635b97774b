"""Prometheus metrics: request counts and latencies per route, projection lag, the
background tasks' state and failures, and the Kafka consumer's when it runs in this
process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.ingest.metrics import ConsumerCollector
from ledger.store.database import UNAVAILABLE
from ledger.supervisor import TaskCollector


class WriteCollector(Collector):
    """The write path's counters, read from the ledger at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        container = getattr(self.app.state, "container", None)
        if container is None:
            return
        ledger = container.ledger
        yield CounterMetricFamily("ledger_command_conflicts", "Command attempts that lost a race for a member's"
                                  " stream to another writer and were decided again", value=ledger.conflicts)
        stats = ledger.group.stats
        yield CounterMetricFamily("ledger_group_commit_batches", "Transactions of grouped single commands",
                                  value=stats.batches)
        yield CounterMetricFamily("ledger_group_commit_commands", "Single commands committed in groups",
                                  value=stats.commands)
        yield GaugeMetricFamily("ledger_group_commit_batch_commands_max", "Largest group committed so far",
                                value=stats.batch_commands_max_seen)


class AnchorCollector(Collector):
    """The last anchor `ledger serve` signed (when it anchors: LEDGER_ANCHOR_KEY_FILE)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        container = getattr(self.app.state, "container", None)
        status = container.extras.get("anchor_status") if container is not None else None
        if not status:
            return
        yield GaugeMetricFamily("ledger_anchor_position", "Position the last anchor signed", value=status["position"])
        yield GaugeMetricFamily("ledger_anchor_signed_timestamp_seconds", "When the last anchor was signed",
                                value=status["signed_at"].timestamp())


class Metrics:
    def __init__(self) -> None:
        # A registry per app, so several apps in one process (tests) do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter("ledger_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("ledger_http_request_duration_seconds", "HTTP request latency", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=self.registry)
        self.head = Gauge("ledger_events_head_position", "Last position in the event store", registry=self.registry)
        self.projected = Gauge("ledger_projection_position", "Position the member read models include",
                               registry=self.registry)
        self.reported = Gauge("ledger_reports_projection_position",
                              "Position the reports' and segments' read models include (they may run behind"
                              " under load)", registry=self.registry)
        # The labelled children, found once per (method, route, status): `labels()` takes a
        # lock and builds a key on every call, which the access log's layer paid per request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (called by the access log's middleware, which sees every
        answer, the other middleware's refusals included)."""
        children = self._children.get((method, route, status))
        if children is None:
            children = self._children[(method, route, status)] = (
                self.requests.labels(method, route, str(status)), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)


def install(app: FastAPI, process: str | None = None) -> Metrics:
    """The /metrics route; the caller hands `Metrics.observe` to the access log's middleware.
    With several `ledger serve` processes on one port, a scrape reaches one of them and
    every figure is that process's: `ledger_process_info{process}` says which."""
    metrics = Metrics()
    if process is not None:
        Gauge("ledger_process_info", "Which of ledger serve's processes answered this scrape", ["process"],
              registry=metrics.registry).labels(process).set(1)

    def kafka_status() -> Any:
        container = getattr(app.state, "container", None)  # set when the app starts
        return container.extras.get("kafka_status") if container is not None else None

    metrics.registry.register(ConsumerCollector(kafka_status))
    metrics.registry.register(TaskCollector(lambda: getattr(app.state, "supervisor", None)))
    metrics.registry.register(WriteCollector(app))
    metrics.registry.register(AnchorCollector(app))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        container = app.state.container
        try:
            row = await container.pool.fetchrow(
                "SELECT (SELECT coalesce(max(position), 0) FROM events) AS head,"
                " (SELECT position FROM projection_checkpoints WHERE name = 'read_models') AS projected,"
                " (SELECT position FROM projection_checkpoints WHERE name = 'reports') AS reported",
                timeout=2)
        except UNAVAILABLE:
            row = None  # the rest (task failures, requests) matters most while the database is away
        if row is not None:
            metrics.head.set(row["head"])
            metrics.projected.set(row["projected"])
            metrics.reported.set(row["reported"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
