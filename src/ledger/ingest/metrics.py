"""Prometheus metrics of the Kafka consumer: lag per partition, messages by outcome.

Read from the consumer's own `status()` at scrape time, so there is one source for
/readyz, the lag log line and the metrics. `ledger serve` adds them to its /metrics;
`ledger consume` serves them on LEDGER_CONSUMER_METRICS_PORT when that is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]

OUTCOMES = ("applied", "duplicates", "rejected")
STATES = ("starting", "running", "retrying", "stopping", "stopped")  # BookingConsumer.state


class ConsumerCollector(Collector):
    """Metrics of whichever consumer `find()` returns (None: none runs, no metrics)."""

    def __init__(self, find: Callable[[], StatusFn | None]) -> None:
        self.find = find

    def collect(self) -> Iterator[Metric]:
        status_fn = self.find()
        if status_fn is None:
            return
        try:
            status = status_fn()
        except Exception as exc:  # a scrape must not fail because the consumer is mid-rebalance
            log.warning("consumer metrics unavailable: %s", exc)
            return
        topic, group = status["topic"], status["group"]
        lag = GaugeMetricFamily("ledger_kafka_consumer_lag", "Messages between the stored offset and the high"
                                " watermark, per partition this consumer holds", labels=["topic", "group", "partition"])
        offset = GaugeMetricFamily("ledger_kafka_consumer_next_offset", "Next offset to apply (stored in PostgreSQL)",
                                   labels=["topic", "group", "partition"])
        for partition, p in status["partitions"].items():
            offset.add_metric([topic, group, partition], p["next_offset"])
            if p["lag"] is not None:
                lag.add_metric([topic, group, partition], p["lag"])
        yield lag
        yield offset
        messages = CounterMetricFamily("ledger_kafka_messages", "Messages consumed since the process started,"
                                       " by outcome", labels=["topic", "group", "outcome"])
        for outcome in OUTCOMES:
            messages.add_metric([topic, group, outcome], status[outcome])
        yield messages
        batches = CounterMetricFamily("ledger_kafka_batches", "Batches applied (one transaction each)",
                                      labels=["topic", "group"])
        batches.add_metric([topic, group], status["batches"])
        yield batches
        fenced = CounterMetricFamily("ledger_kafka_fenced_batches", "Batches rolled back because another group"
                                     " member had moved the partition's offset", labels=["topic", "group"])
        fenced.add_metric([topic, group], status["fenced"])
        yield fenced
        state = GaugeMetricFamily("ledger_kafka_consumer_state", "1 for the consumer's current state",
                                  labels=["topic", "group", "state"])
        for name in STATES:
            state.add_metric([topic, group, name], 1 if status["state"] == name else 0)
        yield state


def serve_metrics(find: Callable[[], StatusFn | None], host: str, port: int) -> Callable[[], None]:
    """Serve the metrics of the consumer `find()` returns over HTTP on host:port (any
    path) from a daemon thread; returns the function that stops it."""
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(find))
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("consumer metrics on http://%s:%d/metrics", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
