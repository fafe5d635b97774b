"""The reports' pure parts: the rules' cost per point, and the days a span counts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ledger.domain import DEFAULT_RULES, ProgramRules
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
