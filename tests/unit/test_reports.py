"""The reports' pure parts: the rules' cost per point, and the days a span counts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ledger.domain import DEFAULT_RULES, CompleteBooking, MemberState, ProgramRules, decide, evolve, tier_status
from ledger.domain.events import from_data, to_data
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.keys import GRANTS, Permission, Role
from projections.report_queries import whole_days


def test_cost_per_point_and_currency_default_and_load_from_a_rules_file() -> None:
    assert (DEFAULT_RULES.cost_per_point, DEFAULT_RULES.programme_currency) == (Decimal("0.01"), "EUR")
    rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "cost_per_point": "0.0125", "programme_currency": "USD"})
    assert (rules.cost_per_point, rules.programme_currency) == (Decimal("0.0125"), "USD")
    assert rules.segments.currency == "USD"  # one programme currency
    for bad in ({"cost_per_point": "-0.01"}, {"cost_per_point": "NaN"}, {"programme_currency": "usd"},
                {"programme_currency": "EURO"}):
        with pytest.raises(ValueError):
            ProgramRules.from_dict({**DEFAULT_RULES_DICT, **bad})


def test_only_auditors_and_admins_read_the_reports() -> None:
    assert {role for role, grants in GRANTS.items() if Permission.reports in grants} == {Role.auditor, Role.admin}


def test_a_span_counts_the_utc_days_whose_midnight_is_in_it() -> None:
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    assert whole_days(midnight, midnight + timedelta(days=2)) == (date(2026, 3, 1), date(2026, 3, 3))
    assert whole_days(midnight + timedelta(seconds=1), midnight + timedelta(days=2, seconds=1)) == (
        date(2026, 3, 2), date(2026, 3, 4))
    # 1 March 00:30 in Paris is 28 February 23:30 UTC: the 1st's midnight follows it.
    paris = timezone(timedelta(hours=1))
    assert whole_days(datetime(2026, 3, 1, 0, 30, tzinfo=paris), datetime(2026, 3, 2, 1, 0, tzinfo=paris)) == (
        date(2026, 3, 1), date(2026, 3, 2))
    first, end = whole_days(midnight + timedelta(hours=1), midnight + timedelta(hours=2))
    assert first == end  # no whole day


def test_an_earn_records_the_tier_it_was_priced_at_and_a_version_1_earn_reads_without_one() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    state, tiers = MemberState("M-1"), []
    for i in range(12):  # enough qualifying points to climb past the first tier
        [earned] = decide(state, CompleteBooking("M-1", at + timedelta(days=i), f"B{i}", "package",
                                                 Decimal("5000"), "EUR"), DEFAULT_RULES)
        assert earned.tier == tier_status(state.qualifying_entries(), earned.occurred_at, DEFAULT_RULES).tier
        assert earned.tier == DEFAULT_RULES.tiers[0].name or f"tier:{earned.tier}" in dict(earned.breakdown)
        tiers.append(earned.tier)
        state = evolve(state, earned)
    assert len(set(tiers)) > 1
    assert from_data("PointsEarned", 2, to_data(earned)) == earned
    version_1 = {k: v for k, v in to_data(earned).items() if k != "tier"}
    assert from_data("PointsEarned", 1, version_1) == dataclasses.replace(earned, tier=None)
