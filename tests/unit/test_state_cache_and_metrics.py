"""The state cache's record of which states moved since they were saved, and the
consumer's metrics collector."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from ledger.domain import MemberState
from ledger.handlers import StateCache
from ledger.ingest.metrics import ConsumerCollector


def _state(member: str, version: int) -> MemberState:
    return MemberState(member, version=version)


def test_the_cache_hands_out_each_moved_state_once_and_forgets_evicted_ones() -> None:
    cache = StateCache(2)
    cache.put(_state("a", 1), b"")
    cache.put(_state("b", 1), b"", saved=True)  # loaded from its snapshot: nothing to save
    assert [s.member_id for s, _ in cache.take_unsaved()] == ["a"]
    assert cache.take_unsaved() == []
    cache.put(_state("b", 2), b"")
    cache.put(_state("c", 1), b"")  # evicts "a", the least recently used
    assert cache.unsaved() == 2
    taken = cache.take_unsaved(1)
    assert len(taken) == 1 and cache.unsaved() == 1
    cache.mark_unsaved([s.member_id for s, _ in taken])  # a failed save puts them back
    assert sorted(s.member_id for s, _ in cache.take_unsaved()) == ["b", "c"]
    cache.put(_state("b", 1), b"")  # older than the cached state: ignored
    assert cache.unsaved() == 0


STATUS = {"state": "running", "topic": "bookings", "group": "ledger", "partitions": {
    "0": {"next_offset": 10, "highwater": 12, "lag": 2}, "1": {"next_offset": 5, "highwater": None, "lag": None}},
    "lag_total": 2, "messages": 9, "applied": 7, "duplicates": 1, "rejected": 1, "batches": 3, "fenced": 1}


def _scrape(find) -> str:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(find))
    return generate_latest(registry).decode()


def test_consumer_metrics_come_from_its_status() -> None:
    text = _scrape(lambda: lambda: STATUS)
    for line in [
        'ledger_kafka_consumer_lag{group="ledger",partition="0",topic="bookings"} 2.0',
        'ledger_kafka_consumer_next_offset{group="ledger",partition="1",topic="bookings"} 5.0',
        'ledger_kafka_messages_total{group="ledger",outcome="applied",topic="bookings"} 7.0',
        'ledger_kafka_messages_total{group="ledger",outcome="rejected",topic="bookings"} 1.0',
        'ledger_kafka_batches_total{group="ledger",topic="bookings"} 3.0',
        'ledger_kafka_fenced_batches_total{group="ledger",topic="bookings"} 1.0',
        'ledger_kafka_consumer_state{group="ledger",state="running",topic="bookings"} 1.0',
        'ledger_kafka_consumer_state{group="ledger",state="stopped",topic="bookings"} 0.0',
    ]:
        assert line in text.splitlines(), line
    assert 'partition="1"' not in "".join(x for x in text.splitlines() if x.startswith("ledger_kafka_consumer_lag"))


def test_no_consumer_or_a_failing_status_gives_no_consumer_metrics_rather_than_a_failed_scrape() -> None:
    def failing() -> dict:
        raise RuntimeError("dictionary changed size during iteration")

    assert "ledger_kafka" not in _scrape(lambda: None)
    assert "ledger_kafka" not in _scrape(lambda: failing)
