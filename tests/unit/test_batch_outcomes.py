"""`BatchOutcomes`: the outcomes of a batch, counted without being built, each built once
when read (the Kafka consumer reads only the counts)."""

from __future__ import annotations

from collections import Counter

import pytest

from ledger.domain import MemberNotFound
from ledger.outcomes import Applied, BatchOutcomes, Duplicate, Outcome, Rejected, Summary


def _applied(member_id: str) -> Applied:
    return Applied(member_id, (), None, Summary(0, 0, 0))


def test_outcomes_are_counted_unbuilt_and_built_once_each_when_read() -> None:
    built: list[int] = []
    first = _applied("m1")

    def build(outcomes: BatchOutcomes, i: int) -> Outcome:
        built.append(i)
        return first if i == 1 else Duplicate(outcomes[1])  # type: ignore[arg-type]

    refused = Rejected(MemberNotFound("nobody"))
    noop = _applied("m2")
    outcomes = BatchOutcomes([refused, None, noop, None], build, applied=1)

    assert outcomes.counts() == Counter({"applied": 2, "duplicate": 1, "rejected": 1})
    assert built == [] and len(outcomes) == 4
    assert outcomes[-1] == Duplicate(first) and built == [3, 1]  # a repeat reads its original
    assert outcomes[1] is first and outcomes[3] is outcomes[3] and built == [3, 1]
    assert outcomes[0] is refused and outcomes[2] is noop
    assert outcomes[1:] == [first, noop, outcomes[3]] and list(outcomes) == [refused, first, noop, outcomes[3]]
    assert Counter(o.status for o in outcomes) == outcomes.counts()
    with pytest.raises(IndexError):
        outcomes[4]
