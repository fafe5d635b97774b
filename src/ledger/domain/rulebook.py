"""The programme's published rule sets and exchange rates, as of any instant: pure.

A `RuleBook` holds every published rules version and every published set of exchange
rates, each with the instant it takes effect from. `book.at(t)` is the `ProgramRules`
in force at `t` (the version with the latest `effective_from` at or before `t`), with
the exchange rates in force at `t` attached. The ledger decides each command with
`book.at(command.occurred_at)`, so a booking earns under the version in force when it
happened, and its event records which (`PointsEarned.rules_version`).

Late and back-dated events: a version can only be published to take effect from its
publication onwards (never in the past: see `ledger.store.programme`), so the version
in force at an instant already past never changes once a process knows every version.
A back-dated booking therefore earns under the version in force at its `occurred_at`,
whenever it arrives; the one exception is an event dated after a version's start that a
process decides before it has picked that version up (within LEDGER_RULES_REFRESH_S):
it earns under the version before, and its event says so. Replays read the version from
the event, never from the book, so they reproduce every number either way.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .rules import FxRates, ProgramRules

__all__ = ["EPOCH", "FxRates", "RuleBook", "RuleVersion", "Rules", "as_book", "in_force"]

# The first version's start: every booking the schema accepts (years 2000 to 2099) falls
# after it; `at` of an earlier instant answers the first version too.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
COMBINED_MAX = 1_024  # (rules version, rate set) pairs remembered, each a ProgramRules


@dataclass(frozen=True)
class RuleVersion:
    """One published rule set: the rules, when they take effect, and the set as published
    (the shape `POST /v1/programme/rules` accepts), for an auditor to read back."""

    rules: ProgramRules
    effective_from: datetime
    published_at: datetime | None = None
    published_by: str | None = None
    document: Mapping[str, object] = field(default_factory=dict)


class RuleBook:
    """Rule versions and exchange-rate sets, sorted by `effective_from`; immutable once
    built (a process swaps in a new book when something is published)."""

    def __init__(self, versions: Iterable[RuleVersion], fx: Iterable[FxRates] = ()) -> None:
        self.versions: tuple[RuleVersion, ...] = tuple(sorted(versions, key=lambda v: v.effective_from))
        self.fx: tuple[FxRates, ...] = tuple(sorted(fx, key=lambda f: f.effective_from))
        assert self.versions, "a rule book holds at least one version"
        names = [v.rules.version for v in self.versions]
        assert len(set(names)) == len(names), "version names are unique"
        self._starts = [v.effective_from for v in self.versions]
        self._fx_starts = [f.effective_from for f in self.fx]
        self._by_name = {v.rules.version: v for v in self.versions}
        self._combined: dict[tuple[int, int], ProgramRules] = {}
        # The last answer of `at` and the instants [low, high) it holds for: a batch of
        # commands mostly falls between two starts, and each asks (two bisections and a
        # look-up, about a fifth of a microsecond).
        self._last: tuple[datetime, datetime, ProgramRules] = (_LATEST, _LATEST, self.versions[0].rules)

    @classmethod
    def single(cls, rules: ProgramRules) -> RuleBook:
        """A book of one version in force from the epoch, with no exchange rates."""
        return cls([RuleVersion(rules, EPOCH)])

    def version_at(self, instant: datetime) -> RuleVersion:
        """The version in force at `instant`; the first one before it started."""
        return self.versions[max(bisect_right(self._starts, instant) - 1, 0)]

    def fx_at(self, instant: datetime) -> FxRates | None:
        """The exchange rates in force at `instant`; None before the first set."""
        i = bisect_right(self._fx_starts, instant) - 1
        return self.fx[i] if i >= 0 else None

    def at(self, instant: datetime) -> ProgramRules:
        """The rules in force at `instant`, with the exchange rates in force then."""
        low, high, rules = self._last
        if low <= instant < high:
            return rules
        starts, fx_starts = self._starts, self._fx_starts
        k = bisect_right(starts, instant)
        f = bisect_right(fx_starts, instant)
        i, j = max(k - 1, 0), f - 1
        rules = self._combined.get((i, j))
        if rules is None:
            rules = self.versions[i].rules
            if j >= 0:
                rules = dataclasses.replace(rules, fx=self.fx[j])
            if len(self._combined) >= COMBINED_MAX:
                self._combined.clear()
            self._combined[(i, j)] = rules
        self._last = (max(starts[k - 1] if k else _EARLIEST, fx_starts[f - 1] if f else _EARLIEST),
                      min(starts[k] if k < len(starts) else _LATEST, fx_starts[f] if f < len(fx_starts) else _LATEST),
                      rules)
        return rules

    def version(self, name: str) -> RuleVersion | None:
        return self._by_name.get(name)

    @property
    def latest(self) -> RuleVersion:
        """The version that starts last (which may not be in force yet)."""
        return self.versions[-1]


def as_book(rules: ProgramRules | RuleBook) -> RuleBook:
    """A book from either: code and tests that run under one rule set pass ProgramRules."""
    return rules if isinstance(rules, RuleBook) else RuleBook.single(rules)


def in_force(rules: ProgramRules | RuleBook, instant: datetime) -> ProgramRules:
    """The rules in force at `instant`, from a book or from the one rule set given."""
    return rules.at(instant) if isinstance(rules, RuleBook) else rules


Rules = ProgramRules | RuleBook  # what projections and replays take: a book, or one rule set for all time
