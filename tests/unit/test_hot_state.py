"""What a command costs must not grow with the member's history: structural checks
(what is kept where, which lots a decision reads), not timings, so they cannot be
flaky. And the persistent sorted keys the state is built on, against a plain list."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    DEFAULT_RULES,
    CompleteBooking,
    EarnReversed,
    MemberState,
    PointsEarned,
    PointsRedeemed,
    RedeemPoints,
    RefundBooking,
    SortedKeys,
    decide,
    evolve,
    fold,
)
from ledger.domain import sorted_keys

from . import test_properties
from .test_properties import _snapshot, indexes_agree

M = "m"
T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
CLOSED_LOTS = 10_000


@contextlib.contextmanager
def tiny_chunks(keys_max: int = 2) -> Iterator[None]:
    """Chunks of a few keys, so that a short history splits, empties and shares them."""
    saved = sorted_keys.CHUNK_KEYS_MAX
    sorted_keys.CHUNK_KEYS_MAX = keys_max
    try:
        yield
    finally:
        sorted_keys.CHUNK_KEYS_MAX = saved


class CountingMap(Mapping):
    """A read-only view of a state's lots that counts the lots read through it."""

    def __init__(self, inner: Mapping) -> None:
        self.inner, self.reads = inner, 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return self.inner[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return self.inner.get(key, default)

    def __iter__(self) -> Iterator[str]:
        self.reads += len(self.inner)
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def _spent_history() -> tuple[MemberState, list]:
    """CLOSED_LOTS bookings, each spent whole by a redemption, then three open ones."""
    events: list = []
    for i in range(CLOSED_LOTS):
        at = T0 + timedelta(minutes=i)
        events.append(PointsEarned(at, f"booking:B{i}", f"B{i}", "hotel", "10.00", "EUR", 10, 10, "active",
                                   at + timedelta(days=730), "v1", (("base", 10),)))
        events.append(PointsRedeemed(at, f"R{i}", 10, "rw", "miles", ((f"booking:B{i}", 10),)))
    at = T0 + timedelta(minutes=CLOSED_LOTS)
    for i in range(3):
        events.append(PointsEarned(at, f"booking:open{i}", f"open{i}", "hotel", "10.00", "EUR", 100, 100, "active",
                                   at + timedelta(days=730 + i), "v1", (("base", 100),)))
    return fold(M, events), events


def test_closed_lots_leave_the_hot_lots_and_a_late_refund_still_finds_them() -> None:
    state, _ = _spent_history()
    assert sorted(state.lots) == ["booking:open0", "booking:open1", "booking:open2"]
    assert len(state.closed) == CLOSED_LOTS and len(state.expiry) == 3
    assert state.active == 300 and state.available(T0 + timedelta(days=30)) == 300
    # A refund of a booking whose points were spent long ago: its lot is closed, still found.
    at = T0 + timedelta(days=30)
    (reversal,) = decide(state, RefundBooking(M, at, "B0"), DEFAULT_RULES)
    assert reversal == EarnReversed(at, "B0", "refunded", 0, (), 0, 10, 10, False)
    before = _snapshot(state)
    after = evolve(state, reversal)
    assert _snapshot(state) == before  # the state evolved from is left as it was
    assert after.lot("booking:B0").status == "reversed" and after.lots == state.lots
    assert after.closed is not state.closed and len(after.closed) == CLOSED_LOTS


def test_a_redemption_and_an_earn_read_only_the_lots_they_take() -> None:
    """With 10,000 closed lots and 3 open ones, deciding a redemption reads the lot it
    takes from; an earn (and the balance after either) reads none."""
    state, _ = _spent_history()
    lots, closed = CountingMap(state.lots), CountingMap(state.closed)
    counted = dataclasses.replace(state, lots=lots, closed=closed)  # type: ignore[arg-type]
    at = T0 + timedelta(days=30)
    (redeemed,) = decide(counted, RedeemPoints(M, at, "R-new", 50, "rw", "miles"), DEFAULT_RULES)
    assert redeemed.lots == (("booking:open0", 50),)
    assert (lots.reads, closed.reads) == (1, 0)
    # The earn, and the tier the history qualifies for recorded after it (this state has
    # no tier change yet): neither reads a lot.
    earned, *recorded = decide(counted, CompleteBooking(M, at, "B-new", "hotel", 120, "EUR"), DEFAULT_RULES)
    assert [e.type for e in recorded] in ([], ["TierChanged"])
    assert counted.available_and_pending(at) == (300, 0)
    assert (lots.reads, closed.reads) == (1, 0)
    # What the redemption leaves: the lot it took from stays open, nothing else moved.
    after = evolve(state, redeemed)
    assert after.closed == state.closed and after.lot("booking:open0").remaining == 50
    indexes_agree(evolve(after, earned))


def test_the_tier_counts_only_the_window_of_a_long_history() -> None:
    state, _ = _spent_history()
    # Every booking qualified 10 points, a minute apart: a window reaching back into
    # the history counts the entries after its start only.
    entries = state.qualifying
    assert len(entries) == CLOSED_LOTS + 3
    end = T0 + timedelta(minutes=CLOSED_LOTS)
    assert state.qualifying_in_window(end - timedelta(minutes=100), end) == 99 * 10 + 300
    assert state.qualifying_in_window(T0 - timedelta(days=1), end) == CLOSED_LOTS * 10 + 300


# --- SortedKeys against a sorted list -----------------------------------------------------

_keys = st.tuples(st.integers(0, 30), st.sampled_from("abc"), st.integers(-5, 50))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _keys, st.booleans()), max_size=60), st.integers(2, 5),
       st.integers(-1, 31), st.integers(-1, 31))
def test_sorted_keys_are_a_sorted_list_and_never_change_once_made(ops: list, keys_max: int, low: int,
                                                                  high: int) -> None:
    with tiny_chunks(keys_max):
        current, reference = SortedKeys(sums=()), []
        editor = SortedKeys(sums=()).edit()
        versions: list[tuple[SortedKeys, list]] = []
        for insert, key, through_editor in ops:
            if not insert and key not in reference:
                continue
            if insert:
                reference = sorted([*reference, key])
            else:
                reference = list(reference)
                reference.remove(key)
            # The same change persistently and through an editor: the same keys.
            current = current.insert(key) if insert else current.remove(key)
            editor = editor.insert(key) if insert else editor.remove(key)
            if through_editor:  # an editor finished and a new one started on its result
                editor = editor.finish().edit()
            versions.append((current, reference))
            assert list(current) == reference and len(current) == len(reference)
            assert all(0 < len(chunk) <= keys_max for chunk in current.chunks)
            assert list(current.maxes) == [chunk[-1] for chunk in current.chunks]
            assert list(current.sums) == [sum(k[-1] for k in chunk) for chunk in current.chunks]  # type: ignore[arg-type]
        finished = editor.finish()
        assert finished == current and list(finished) == list(current)
        assert all(0 < len(chunk) <= keys_max for chunk in finished.chunks)
        assert finished.sums == tuple(sum(k[-1] for k in chunk) for chunk in finished.chunks)
        for version, keys in versions:  # every version made is still what it was
            assert list(version) == keys
        assert current.weight_between(low, high) == sum(k[-1] for k in reference if low < k[0] <= high)
        assert SortedKeys.of(reversed(reference), weighted=True) == current


def test_the_state_properties_hold_with_chunks_of_two_keys() -> None:
    """The property tests' short histories, with chunks small enough to split, empty and
    share: the orders' chunk handling under every kind of event."""
    with tiny_chunks(2):
        test_properties.test_fold_gives_the_state_evolve_gives_one_event_at_a_time()
        test_properties.test_a_snapshot_gives_back_the_state_it_was_taken_of()
        test_properties.test_available_under_expiry_with_a_negative_balance_is_what_the_events_give()
