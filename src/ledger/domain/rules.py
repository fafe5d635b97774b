"""Programme rules as data: versioned, loaded from a JSON file, with a travel default.

Every earn event records `rules.version` and a per-rule breakdown, so an auditor can
reproduce each number from the event and the rule set of that version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from math import floor
from pathlib import Path
from typing import Any

from .earn_rules import BOOKING_SOURCES, ActivityRule, AnniversaryRule, Cap, activities_from, anniversary_from, caps_from
from .errors import CurrencyNotEarned, InvalidCommand

PRODUCTS = ("flight", "hotel", "package", "rail", "car")
PROMOTION_DAYS_MAX = 1_000
CENT = Decimal("0.01")


# P4, tier policies: what a tier may qualify on, any one of them enough.
TIER_CRITERIA = ("points", "spend", "nights", "segments", "bookings")
# The `threshold` of a tier that does not qualify on points: no points total reaches it.
NO_POINTS = 10 ** 15


@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int  # tier-qualifying points needed in the window; NO_POINTS: not a criterion of this tier
    multiplier: Decimal
    # P4: (criterion, threshold) of each criterion the tier qualifies on (any one is
    # enough), in `TIER_CRITERIA` order; the points one is `threshold`. Empty: the lowest tier.
    criteria: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class TierPolicy:
    """P4: how tiers are kept. `window`: what the criteria are counted over, the rolling
    `tier_window_months` before the instant (`rolling_12m`, 12 months by default) or the
    calendar year (UTC) so far. `evaluation`: when a member below the qualification of
    the tier in force loses it (one tier at a time), `grace_days` after the evaluation
    date: the first of each month (`monthly`), each anniversary of the member's last
    tier change (`anniversary`), or the first of January (`calendar_year_end`). A
    `TierWarning` goes out `warning_days` before the downgrade would happen."""

    window: str = "rolling_12m"
    evaluation: str = "monthly"
    grace_days: int = 0
    warning_days: int = 30

    def __post_init__(self) -> None:
        for broken, why in (
            (self.window not in ("rolling_12m", "calendar_year"), "tier_policy.window must be rolling_12m or calendar_year"),
            (self.evaluation not in ("monthly", "anniversary", "calendar_year_end"),
             "tier_policy.evaluation must be monthly, anniversary or calendar_year_end"),
            (not 0 <= self.grace_days <= 366, "tier_policy.grace_days must be 0 to 366"),
            (not 0 <= self.warning_days <= 366, "tier_policy.warning_days must be 0 to 366"),
        ):
            if broken:
                raise ValueError(f"Rules: {why}.")


def _tier_from_dict(n: int, raw: dict[str, Any]) -> Tier:
    """A tier as published: `threshold` (the points criterion, as rule sets before tier
    policies had it) and/or `qualify` {points?, spend?, nights?, segments?, bookings?}."""
    qualify = raw.get("qualify") or {}
    unknown = set(qualify) - set(TIER_CRITERIA)
    if unknown:
        raise ValueError(f"Rules: unknown tier criteria: {', '.join(sorted(unknown))}.")
    points = qualify.get("points")
    if points is None:
        points = raw.get("threshold")
    if points is None and n == 0 and not any(qualify.get(c) is not None for c in TIER_CRITERIA):
        points = 0  # the lowest tier: everyone has it
    criteria = tuple((c, Decimal(str(points if c == "points" else qualify[c]))) for c in TIER_CRITERIA
                     if (points if c == "points" else qualify.get(c)) is not None)
    return Tier(str(raw["name"]), NO_POINTS if points is None else int(points), Decimal(str(raw["multiplier"])),
                criteria)


@dataclass(frozen=True)
class Promotion:
    name: str
    starts_on: date  # inclusive, by the booking's occurred_at date (UTC)
    ends_on: date  # inclusive
    multiplier: Decimal  # 2 means double points: one extra base amount as a bonus
    products: tuple[str, ...] = PRODUCTS

    def applies(self, product: str, on: date) -> bool:
        return product in self.products and self.starts_on <= on <= self.ends_on


@dataclass(frozen=True)
class TransferLimits:
    """What one member may send and receive by transfers, per calendar year (UTC)."""

    points_min: int = 100  # the smallest transfer
    sent_points_per_year: int = 100_000
    sent_count_per_year: int = 12
    received_points_per_year: int = 200_000
    received_count_per_year: int = 24

    def refusal(self, sent: tuple[int, int], received: tuple[int, int], points: int) -> str | None:
        """The name of the limit a transfer of `points` would break, given the sender's
        (points, count) sent and the receiver's received this year; None if it fits."""
        for broken, name in (
            (points < self.points_min, "points_min"),
            (sent[0] + points > self.sent_points_per_year, "sent_points_per_year"),
            (sent[1] + 1 > self.sent_count_per_year, "sent_count_per_year"),
            (received[0] + points > self.received_points_per_year, "received_points_per_year"),
            (received[1] + 1 > self.received_count_per_year, "received_count_per_year"),
        ):
            if broken:
                return name
        return None


@dataclass(frozen=True)
class SegmentRules:
    """Where the customer value segments (`ledger.domain.segments`) draw their lines.

    Value is the spend of the last `window_months` months in `currency` (the programme's
    `programme_currency`, which a rules file sets once for the rules: bookings in others count towards loyalty, not value, until amounts are
    converted); loyalty is `bookings_min` bookings in that window and `tenure_days_min`
    days since the member's first event, both; the top `top_share` of members by value
    is the 80/20 view."""

    currency: str = "EUR"
    window_months: int = 12
    value_min: Decimal = Decimal("2000")  # high value from this spend up, in `currency`
    bookings_min: int = 3  # high loyalty from this many bookings in the window up ...
    tenure_days_min: int = 365  # ... and this many days since the first event
    top_share: Decimal = Decimal("0.2")

    def __post_init__(self) -> None:
        for broken, why in (
            (not (len(self.currency) == 3 and self.currency.isascii() and self.currency.isupper()),
             "segments.currency must be a 3-letter ISO 4217 code"),
            (not 1 <= self.window_months <= 120, "segments.window_months must be 1 to 120"),
            (not Decimal(0) <= self.value_min <= Decimal(10) ** 12, "segments.value_min must be 0 to 10^12"),
            (not 0 <= self.bookings_min <= 100_000, "segments.bookings_min must be 0 to 100000"),
            (not 0 <= self.tenure_days_min <= 36_500, "segments.tenure_days_min must be 0 to 36500"),
            (not Decimal(0) < self.top_share <= Decimal(1), "segments.top_share must be above 0, at most 1"),
        ):
            if broken:
                raise ValueError(f"Rules: {why}.")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], currency: str = "EUR") -> SegmentRules:
        """From a rules file's `segments`, in the programme's `currency` (the rules' one
        `programme_currency`, which a `segments` of the file does not set again)."""
        if raw.get("currency", currency) != currency:
            raise ValueError("Rules: segments.currency is the rules' programme_currency: set that instead.")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Rules: unknown segments field(s): {', '.join(sorted(unknown))}.")
        default = cls()
        return cls(
            currency=currency,
            window_months=int(raw.get("window_months", default.window_months)),
            value_min=Decimal(str(raw.get("value_min", default.value_min))),
            bookings_min=int(raw.get("bookings_min", default.bookings_min)),
            tenure_days_min=int(raw.get("tenure_days_min", default.tenure_days_min)),
            top_share=Decimal(str(raw.get("top_share", default.top_share))),
        )


@dataclass(frozen=True)
class FxRates:
    """A published set of exchange rates: units of each currency per one unit of `base`
    (the programme currency), in force from `effective_from` until the next set."""

    effective_from: datetime
    base: str
    rates: Mapping[str, Decimal]

    def rate(self, currency: str) -> Decimal | None:
        if currency == self.base:
            return Decimal(1)
        return self.rates.get(currency)


@dataclass(frozen=True)
class ProgramRules:
    version: str
    earn_rates: dict[str, dict[str, Decimal]]  # product -> currency -> points per unit
    tiers: tuple[Tier, ...]  # ascending thresholds, the first at 0
    first_booking_bonus: int
    promotions: tuple[Promotion, ...]
    expiry_months: int
    tier_window_months: int
    allow_negative_balance: bool
    adjustment_points_max: int = 1_000_000
    transfers: TransferLimits = field(default_factory=TransferLimits)
    # Points a reversal returns to a lot past its date come back on a new lot valid for
    # this many days; 0: they come back expired.
    return_grace_days: int = 0
    household_members_max: int = 6
    # What closing a member does with its available points: forfeit them (a debit
    # adjustment in the same command) or keep them (back in use if it is reopened).
    on_close: str = "keep"
    # False: a booking for a member with no events (never enrolled) is refused
    # (`MemberNotEnrolled`); True: the first booking enrols the member, as it always did.
    enrol_on_first_booking: bool = True
    # What the programme books per outstanding point (its liability, deferred revenue) in
    # `programme_currency`: the liability report values the points at it.
    cost_per_point: Decimal = Decimal("0.01")
    # The programme's one currency: earn rates without a per-currency entry are in it,
    # exchange rates convert to it (see `conversion`), the liability and the segments'
    # value are in it (`segments.currency` is this one, set from it by `from_dict`).
    programme_currency: str = "EUR"
    segments: SegmentRules = field(default_factory=SegmentRules)
    # The exchange rates in force, attached by the rule book.
    fx: FxRates | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # P3, earn beyond bookings (see `ledger.domain.earn_rules`): points per activity type,
    # the anniversary bonus (None: none), and earn caps per member, period and source.
    activities: Mapping[str, ActivityRule] = field(default_factory=dict)
    anniversary: AnniversaryRule | None = None
    caps: tuple[Cap, ...] = ()
    booking_caps: tuple[Cap, ...] = field(init=False, repr=False, compare=False, default=())
    # Derived once, for compute_earn (every earn): the rate and label of each base rule,
    # the label and factor of each tier's bonus (None at a multiplier of 1), and the
    # promotion bonuses that apply to a product on a day, as they are asked for.
    _bases: dict[tuple[str, str], tuple[Decimal, str]] = field(init=False, repr=False, compare=False, default_factory=dict)
    _tier_bonuses: dict[str, tuple[str, Decimal] | None] = field(init=False, repr=False, compare=False,
                                                                 default_factory=dict)
    _promotions_on: dict[tuple[str, date], tuple[tuple[str, Decimal], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    # P4, tier policies: how tiers are kept (`ledger.domain.tierpolicy` applies it).
    tier_policy: TierPolicy = field(default_factory=TierPolicy)
    # Derived: the criteria any tier qualifies on (every earn asks whether it is points only).
    tier_criteria: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    tier_points_only: bool = field(init=False, repr=False, compare=False, default=True)

    def __post_init__(self) -> None:
        # A rules file that breaks these is refused when loaded, whatever the interpreter's flags.
        thresholds = [t.threshold for t in self.tiers if t.threshold != NO_POINTS]
        for broken, why in (
            (not self.tiers or self.tiers[0].threshold != 0, "the lowest tier must start at 0"),
            (any(not t.criteria for t in self.tiers[1:]), "every tier above the lowest needs a criterion"),
            (thresholds != sorted(thresholds), "tiers must ascend by threshold"),
            (len({t.name for t in self.tiers}) != len(self.tiers), "tier names must be unique"),
            (self.expiry_months <= 0 or self.tier_window_months <= 0, "expiry and tier window must be positive"),
            (self.return_grace_days < 0 or self.household_members_max < 2, "grace days and household size are too small"),
            (not self.cost_per_point.is_finite() or self.cost_per_point < 0, "cost_per_point must be a decimal >= 0"),
            (len(self.programme_currency) != 3 or not self.programme_currency.isalpha()
             or not self.programme_currency.isupper(), "programme_currency must be a three-letter code"),
            (self.segments.currency != self.programme_currency,
             "segments count value in programme_currency: segments.currency must be the same"),
            (self.on_close not in ("forfeit", "keep"), "on_close must be forfeit or keep"),
        ):
            if broken:
                raise ValueError(f"Rules {self.version}: {why}.")
        self._bases.update({(product, currency): (rate, f"base:{product}:{currency}")
                            for product, rates in self.earn_rates.items() for currency, rate in rates.items()})
        object.__setattr__(self, "tier_criteria", frozenset(c for t in self.tiers for c, _ in t.criteria))
        object.__setattr__(self, "tier_points_only", self.tier_criteria <= {"points"})
        # P3: the caps on the parts of a booking's earn, which only then needs counting.
        object.__setattr__(self, "booking_caps", tuple(c for c in self.caps if c.source in BOOKING_SOURCES))
        self._tier_bonuses.update({t.name: (f"tier:{t.name}", t.multiplier - 1) if t.multiplier != 1 else None
                                   for t in self.tiers})

    def rate(self, product: str, currency: str) -> Decimal:
        rates = self.earn_rates.get(product)
        if rates is None:
            raise InvalidCommand(f"Product {product!r} earns no points in rules {self.version}.")
        rate = rates.get(currency)
        if rate is None:
            raise InvalidCommand(
                f"Currency {currency} is not supported for {product} in rules {self.version}; "
                f"supported: {', '.join(sorted(rates))}."
            )
        return rate

    def conversion(self, product: str, amount: Decimal, currency: str) -> tuple[Decimal, Decimal] | None:
        """How a booking in `currency` earns: None at the rate its product has for that
        currency (a per-currency rate wins); else (the amount in the programme currency,
        the exchange rate used), converted at the rate set in force (attached by the rule
        book) and rounded half-even to cents, to earn at the programme currency's rate.
        CurrencyNotEarned when neither applies."""
        rates = self.earn_rates.get(product)
        if rates is None or currency in rates:
            return None  # an unknown product: `rate` says so
        fx = self.fx
        rate = fx.rate(currency) if fx is not None and fx.base == self.programme_currency else None
        if rate is None or self.programme_currency not in rates:
            raise CurrencyNotEarned(
                f"Currency {currency} earns no points for {product} in rules {self.version}: no rate of its own"
                f" ({', '.join(sorted(rates))}) and no exchange rate to {self.programme_currency} in force.",
                currency)
        return (amount / rate).quantize(CENT, rounding=ROUND_HALF_EVEN), rate

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def compute_earn(
        self, *, product: str, amount: Decimal, currency: str, tier: str, first_booking: bool, at: datetime
    ) -> tuple[int, int, tuple[tuple[str, int], ...]]:
        """Points for one booking: (total, tier-qualifying points, breakdown by rule).

        Each bonus is computed on the base points and rounded down on its own, so the
        breakdown adds up exactly and does not depend on the order rules are listed in.
        """
        # floor(d) is int(d.to_integral_value(ROUND_FLOOR)) in one C call instead of two:
        # the same value, and the same error for an infinite or NaN product (they differ
        # only on a signalling NaN, which a multiplication never returns).
        base_rule = self._bases.get((product, currency))
        # Not found: `rate` raises what is wrong (the product or the currency).
        rate, label = base_rule or (self.rate(product, currency), f"base:{product}:{currency}")
        base = floor(amount * rate)
        breakdown: list[tuple[str, int]] = [(label, base)]
        total = base
        tier_bonus = self._tier_bonuses[tier]  # an unknown tier raises KeyError(tier), as `tier` does
        if tier_bonus is not None:
            label, factor = tier_bonus
            bonus = floor(base * factor)
            breakdown.append((label, bonus))
            total += bonus
        for label, factor in self._promotion_bonuses(product, at.date()):
            bonus = floor(base * factor)
            breakdown.append((label, bonus))
            total += bonus
        if first_booking and self.first_booking_bonus:
            breakdown.append(("first_booking_bonus", self.first_booking_bonus))
            total += self.first_booking_bonus
        return total, base, tuple(breakdown)

    def _promotion_bonuses(self, product: str, on: date) -> tuple[tuple[str, Decimal], ...]:
        """(label, multiplier - 1) of each promotion that applies to `product` on `on`, in
        the order they are listed; remembered for the last `PROMOTION_DAYS_MAX` days'
        worth of products asked about."""
        key = (product, on)
        bonuses = self._promotions_on.get(key)
        if bonuses is None:
            if len(self._promotions_on) >= PROMOTION_DAYS_MAX * len(PRODUCTS):
                self._promotions_on.clear()
            bonuses = tuple((f"promotion:{p.name}", p.multiplier - 1) for p in self.promotions if p.applies(product, on))
            self._promotions_on[key] = bonuses
        return bonuses

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProgramRules:
        currency = str(raw.get("programme_currency", "EUR"))
        return cls(
            version=str(raw["version"]),
            earn_rates={
                product: {cur: Decimal(str(rate)) for cur, rate in rates.items()}
                for product, rates in raw["earn_rates"].items()
            },
            tiers=tuple(_tier_from_dict(n, t) for n, t in enumerate(raw["tiers"])),
            first_booking_bonus=int(raw.get("first_booking_bonus", 0)),
            promotions=tuple(
                Promotion(
                    name=p["name"],
                    starts_on=date.fromisoformat(p["starts_on"]),
                    ends_on=date.fromisoformat(p["ends_on"]),
                    multiplier=Decimal(str(p["multiplier"])),
                    products=tuple(p.get("products", PRODUCTS)),
                )
                for p in raw.get("promotions", ())
            ),
            expiry_months=int(raw["expiry_months"]),
            tier_window_months=int(raw.get("tier_window_months", 12)),
            allow_negative_balance=bool(raw.get("allow_negative_balance", False)),
            adjustment_points_max=int(raw.get("adjustment_points_max", 1_000_000)),
            transfers=TransferLimits(**{k: int(v) for k, v in raw.get("transfers", {}).items()}),
            return_grace_days=int(raw.get("return_grace_days", 0)),
            household_members_max=int(raw.get("household_members_max", 6)),
            cost_per_point=Decimal(str(raw.get("cost_per_point", "0.01"))),
            programme_currency=currency,
            segments=SegmentRules.from_dict(raw.get("segments", {}), currency),
            on_close=str(raw.get("on_close", "keep")),
            tier_policy=TierPolicy(**(raw.get("tier_policy") or {})),
            # P3
            activities=activities_from(raw.get("activities") or {}),
            anniversary=anniversary_from(raw.get("anniversary")),
            caps=caps_from(raw.get("caps") or []),
            enrol_on_first_booking=bool(raw.get("enrol_on_first_booking", True)),
        )

    @classmethod
    def load(cls, path: Path) -> ProgramRules:
        return cls.from_dict(json.loads(path.read_text()))


def _rates(per_eur: int) -> dict[str, str]:
    """Points per currency unit, scaled from the EUR rate by rough purchasing value."""
    scale = {"EUR": "1", "USD": "0.92", "GBP": "1.17", "CHF": "1.05", "SEK": "0.088", "NOK": "0.086",
             "DKK": "0.134", "PLN": "0.23", "JPY": "0.0062", "AUD": "0.6", "CAD": "0.68", "SGD": "0.69"}
    return {cur: str(Decimal(per_eur) * Decimal(f)) for cur, f in scale.items()}


DEFAULT_RULES_DICT: dict[str, Any] = {
    "version": "2026.1",
    "earn_rates": {"flight": _rates(5), "hotel": _rates(10), "package": _rates(8), "rail": _rates(3), "car": _rates(2)},
    "tiers": [
        {"name": "member", "threshold": 0, "multiplier": "1"},
        {"name": "silver", "threshold": 5000, "multiplier": "1.25"},
        {"name": "gold", "threshold": 15000, "multiplier": "1.5"},
        {"name": "platinum", "threshold": 40000, "multiplier": "2"},
    ],
    "first_booking_bonus": 500,
    "promotions": [
        {"name": "off-season-winter-2026", "starts_on": "2026-01-07", "ends_on": "2026-03-15", "multiplier": "2"},
        {"name": "off-season-autumn-2026", "starts_on": "2026-11-02", "ends_on": "2026-12-15", "multiplier": "2",
         "products": ["hotel", "package"]},
        {"name": "off-season-winter-2027", "starts_on": "2027-01-07", "ends_on": "2027-03-15", "multiplier": "2"},
    ],
    "expiry_months": 24,
    "tier_window_months": 12,
    "allow_negative_balance": False,
}

DEFAULT_RULES = ProgramRules.from_dict(DEFAULT_RULES_DICT)


# Units of each currency per euro, published as the first rate set on first start (from
# the epoch) so that bookings in the currencies travel companies sell in earn from day
# one: rounded market rates of 2026, for finance to replace with `PUT
# /v1/programme/fx-rates`. A currency with a rate of its own in `earn_rates` (the
# European ones above) earns at that rate and is not converted.
DEFAULT_FX_BASE = "EUR"
DEFAULT_FX_RATES: dict[str, str] = {
    "USD": "1.08", "GBP": "0.85", "CHF": "0.95", "CNY": "7.8", "HKD": "8.45", "TWD": "35", "JPY": "162",
    "KRW": "1480", "SGD": "1.45", "THB": "38", "MYR": "4.9", "IDR": "17500", "INR": "91", "PHP": "62",
    "VND": "27500", "MOP": "8.7", "AUD": "1.65", "NZD": "1.8", "CAD": "1.48", "MXN": "19.5", "BRL": "5.9",
    "SEK": "11.3", "NOK": "11.6", "DKK": "7.46", "PLN": "4.3", "CZK": "25.2", "HUF": "395", "TRY": "36",
    "AED": "3.97", "SAR": "4.05", "QAR": "3.93", "ILS": "4.0", "ZAR": "20", "EGP": "53",
}
