"""The consumer's garbage collection pacing: survivors frozen, cycles freed by the periodic full collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ledger.bootstrap import GcPacer


class Node:
    other: Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_batch_survivors_are_frozen_and_its_cycles_freed_at_the_interval() -> None:
    pacer = GcPacer(full_every_s=3_600)
    garbage = _cycle()
    kept = Node()
    pacer.after_batch()
    assert not any(o is kept for o in gc.get_objects())  # frozen: no automatic collection walks it
    assert garbage() is not None  # frozen too, not collected after each batch
    pacer._next_full = 0.0
    pacer.after_batch()
    assert garbage() is None
    assert not any(o is kept for o in gc.get_objects())  # still alive, frozen again


def test_cycles_among_frozen_objects_are_freed_by_the_periodic_full_collection() -> None:
    pacer = GcPacer(full_every_s=3_600)
    a, b = Node(), Node()
    a.other = b
    pacer.after_batch()  # both frozen while alive
    b.other = a
    ref = weakref.ref(a)
    del a, b  # now a garbage cycle of frozen objects
    pacer.after_batch()
    assert ref() is not None  # not before the interval is up
    pacer._next_full = 0.0
    pacer.after_batch()
    assert ref() is None


def test_no_automatic_collection_runs_while_a_batch_is_applied_however_many_objects_it_makes() -> None:
    pacer = GcPacer(full_every_s=3_600)
    threshold = gc.get_threshold()
    gc.set_threshold(100, 10, 10)  # a batch of any size would meet it many times over
    try:
        with pacer.paused():
            collections = [s["collections"] for s in gc.get_stats()]
            batch = [Node() for _ in range(20_000)]
            assert [s["collections"] for s in gc.get_stats()] == collections
        assert gc.isenabled()  # on again after the batch
        with pytest.raises(RuntimeError), pacer.paused():
            raise RuntimeError("a failed batch")
        assert gc.isenabled()
    finally:
        gc.set_threshold(*threshold)
    assert len(batch) == 20_000


def test_a_batch_survivors_are_frozen_before_the_collector_is_enabled_again() -> None:
    """The first allocation after a batch would otherwise collect over everything the
    batch left alive: a cold consumer's batches leave thousands of member states."""
    pacer = GcPacer(full_every_s=3_600)
    before = gc.get_freeze_count()
    with pacer.paused():
        kept = [[i] for i in range(10_000)]
    assert gc.get_freeze_count() >= before + len(kept)
