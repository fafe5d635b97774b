"""A real Apache Kafka broker for the Kafka tier, one per test session (or the one at
LEDGER_TEST_KAFKA_BOOTSTRAP). Each test uses topics and a consumer group of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from tests.kafka_broker import KafkaBroker, free_port_pair
except ImportError:  # repo root not on sys.path (plain `pytest` run)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kafka_broker import KafkaBroker, free_port_pair


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(free_port_pair(), tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap
