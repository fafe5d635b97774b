"""The published shape of a programme rule set and of an exchange-rate set, with a bound
on every field: what `POST /v1/programme/rules` and `PUT /v1/programme/fx-rates` accept,
what their GETs return, and what the built-in default (or LEDGER_RULES_FILE) is checked
against before it becomes the first version.

A rule set that passes is handed to `ProgramRules.from_dict` as it is dumped here
(`RuleSet.document`): the same dictionary is stored, so an auditor reads back exactly
what was published, and GET returns what POST takes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints, WithJsonSchema

from ledger.domain.rules import PRODUCTS
from ledger.ingest.schema import Currency, OccurredAt

Product = Literal["flight", "hotel", "package", "rail", "car"]
assert set(Product.__args__) == set(PRODUCTS)  # type: ignore[attr-defined]

VERSIONS_PAGE_MAX = 100
CURRENCIES_MAX = 200
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
# Decimals travel as strings, as amounts do: no binary floating point between a marketing
# team's "1.25" and the multiplication. Each pattern is the whole of what is accepted, so
# the published contract and the validation are one; ASCII digits only.
Rate = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}(\.[0-9]{1,9})?$"),
                 Field(description="Points per unit of the currency, a decimal string from 0 to 999999.999999999.",
                       examples=["5", "0.6"])]
Multiplier = Annotated[str, StringConstraints(pattern=r"^([1-9](\.[0-9]{1,9})?|10(\.0{1,9})?)$"),
                       Field(description="A decimal string from 1 to 10: 2 is double points.", examples=["1.5"])]
FxRate = Annotated[str, StringConstraints(pattern=r"^([1-9][0-9]{0,8}(\.[0-9]{1,9})?|0\.[0-9]{0,8}[1-9])$"),
                   Field(description="Units of the currency per one unit of the programme currency: a decimal"
                                     " string above 0 (written without trailing zeros below 1).", examples=["7.8"])]

def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a date written as YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_text)]


def _not_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_boolean)]  # JSON Schema's integer: 5000 or 5000.0, never true  # a date as JSON carries it: text, not a number
# RFC 3339 with seconds and an offset, years 2000 to 2099: the booking events' own format.
Instant = OccurredAt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class _Bounded:
    """`Bounded[n]`: an `Int` from 0 to n, with its bounds in the published schema (they
    go before the validator: after it, the schema carries them under names JSON Schema
    does not read)."""

    def __class_getitem__(cls, most: int) -> Any:
        return Annotated[int, Field(ge=0, le=most), BeforeValidator(_not_boolean)]


Bounded = _Bounded


class QualifySpec(_Strict):
    """P4: what qualifies for a tier, any one criterion enough, counted over the tier
    policy's window: completed bookings only."""

    model_config = _examples({"points": 15000, "spend": "5000", "nights": 30, "segments": 20})

    # The bounds go on the integer (or string) itself, not on the optional: the published
    # schema then carries them where JSON Schema reads them.
    points: Bounded[1_000_000_000] | None = Field(None, description="Tier-qualifying points.")
    spend: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}(\.[0-9]{1,2})?$")] | None = Field(
        None, description="Spend in the programme currency (bookings in another converted at the rate in force when"
                          " they earned), a decimal string.")
    nights: Bounded[10_000] | None = Field(None, description="Hotel nights the bookings carried.")
    segments: Bounded[10_000] | None = Field(
        None, description="Flight or rail segments the bookings carried.")
    bookings: Bounded[10_000] | None = Field(None, description="Completed bookings.")


class TierSpec(_Strict):
    model_config = _examples({"name": "member", "threshold": 0, "multiplier": "1"},
                             {"name": "gold", "multiplier": "1.5", "qualify": {"points": 15000, "nights": 30}})

    name: Name
    threshold: Bounded[1_000_000_000] | None = Field(
        None, description="Tier-qualifying points in the window: the `points` criterion, as"
                                              " rule sets before `qualify` had it.")
    multiplier: Multiplier
    # P4, tier policies.
    qualify: QualifySpec | None = Field(None, description="What qualifies for the tier: any one criterion. The lowest"
                                                          " tier has none (everyone has it).")


class TierPolicySpec(_Strict):
    """P4: how tiers are kept (see the README's tier policy section)."""

    model_config = _examples({"window": "rolling_12m", "evaluation": "monthly", "grace_days": 0, "warning_days": 30})

    window: Literal["rolling_12m", "calendar_year"] = Field(
        "rolling_12m", description="Criteria counted over the rolling `tier_window_months` (12 by default) or the"
                                   " calendar year (UTC) so far.")
    evaluation: Literal["monthly", "anniversary", "calendar_year_end"] = Field(
        "monthly", description="When a member below the tier in force loses one tier: the first of each month, each"
                               " anniversary of its last tier change, or the first of January.")
    grace_days: Int = Field(0, ge=0, le=366, description="Days after the evaluation date the downgrade waits.")
    warning_days: Int = Field(30, ge=0, le=366, description="Days before the downgrade a TierWarning goes out; 0: none.")


class PromotionSpec(_Strict):
    model_config = _examples({"name": "off-season-winter-2027", "starts_on": "2027-01-07", "ends_on": "2027-03-15",
                              "multiplier": "2", "products": ["hotel", "package"]})

    name: Name
    starts_on: Day = Field(description="First day (UTC, by the booking's occurred_at), inclusive.")
    ends_on: Day = Field(description="Last day, inclusive; not before starts_on.")
    multiplier: Multiplier
    products: list[Product] = Field(default_factory=lambda: list(PRODUCTS), min_length=1, max_length=5)



class TransferSpec(_Strict):
    model_config = _examples({"points_min": 100, "sent_points_per_year": 100000, "sent_count_per_year": 12,
                              "received_points_per_year": 200000, "received_count_per_year": 24})

    points_min: Int = Field(100, ge=1, le=1_000_000_000)
    sent_points_per_year: Int = Field(100_000, ge=0, le=1_000_000_000)
    sent_count_per_year: Int = Field(12, ge=0, le=100_000)
    received_points_per_year: Int = Field(200_000, ge=0, le=1_000_000_000)
    received_count_per_year: Int = Field(24, ge=0, le=100_000)


class SegmentSpec(_Strict):
    model_config = _examples({"window_months": 12, "value_min": "2000", "bookings_min": 3,
                              "tenure_days_min": 365, "top_share": "0.2"})

    window_months: Int = Field(12, ge=1, le=120)
    value_min: str = Field("2000", pattern=r"^[0-9]{1,12}(\.[0-9]{1,2})?$")
    bookings_min: Int = Field(3, ge=0, le=100_000)
    tenure_days_min: Int = Field(365, ge=0, le=36_500)
    top_share: str = Field("0.2", pattern=r"^(0\.[0-9]{0,5}[1-9]|1(\.0{1,6})?)$",
                           description="Above 0, at most 1 (written without trailing zeros below 1).")


# P3: earn beyond bookings (activities, anniversaries, caps).
ActivityType = Literal["social.shared", "referral.completed", "review.submitted", "survey.completed"]
CapSource = Literal["base", "tier", "promotion", "first_booking_bonus", "social.shared", "referral.completed",
                    "review.submitted", "survey.completed", "anniversary"]


class ActivitySpec(_Strict):
    model_config = _examples({"points": 50, "per_booking_once": True})

    points: Int = Field(0, ge=0, le=1_000_000, description="What one activity of the type earns.")
    per_booking_once: StrictBool = Field(False, description="An activity naming a booking that earned one of this"
                                                            " type already earns nothing more.")
    referred_points: Int = Field(0, ge=0, le=1_000_000,
                                 description="referral.completed: what the referred member earns.")


_YEAR = r"^([1-9][0-9]?|100)$"


class AnniversarySpec(_Strict):
    model_config = _examples({"points_by_year": {"1": 100, "2": 200}, "per_year": 100, "points_max": 1000})

    # The schema spelt out: pydantic publishes a constrained key as `patternProperties`,
    # which lets any other key through, and the value's bounds under names JSON Schema
    # does not know.
    points_by_year: Annotated[
        dict[Annotated[str, StringConstraints(pattern=_YEAR)], Annotated[Int, Field(ge=0, le=1_000_000)]],
        WithJsonSchema({"type": "object", "maxProperties": 100, "propertyNames": {"pattern": _YEAR},
                        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                        "description": "Anniversary year (1 to 100) -> points."}),
    ] = Field(default_factory=dict, max_length=100)
    per_year: Int = Field(0, ge=0, le=1_000_000, description="A year not listed: per_year times the year ...")
    points_max: Int = Field(0, ge=0, le=1_000_000, description="... at most this (0: no most).")


class CapSpec(_Strict):
    model_config = _examples({"source": "social.shared", "period": "month", "max_points": 500})

    source: CapSource
    period: Literal["month", "year"] = Field(description="Calendar month or year, in UTC.")
    max_points: Int = Field(ge=0, le=1_000_000_000)


class RuleSet(_Strict):
    """A whole programme rule set, as published. Every field is checked and every wrong
    one named in the 422."""

    model_config = _examples({
        "version": "2027.1", "effective_from": "2027-01-01T00:00:00Z", "programme_currency": "EUR",
        "earn_rates": {"flight": {"EUR": "5"}, "hotel": {"EUR": "10", "USD": "9.2"}},
        "tiers": [{"name": "member", "threshold": 0, "multiplier": "1"},
                  {"name": "gold", "threshold": 15000, "multiplier": "1.5"}],
        "first_booking_bonus": 500, "expiry_months": 24,
    })

    version: Version = Field(description="The version's name, unique; earn events record it.")
    effective_from: Instant = Field(
        description="RFC 3339 instant from which the version is in force (later than the instant it is published).")
    programme_currency: Currency = Field(
        "EUR", description="What earn rates without a per-currency entry are in, and exchange rates convert to.")
    earn_rates: dict[Product, Annotated[dict[Currency, Rate], Field(min_length=1, max_length=CURRENCIES_MAX)]] = Field(
        min_length=1, max_length=5,
        description="Product -> currency -> points per unit. A booking in a currency listed for its product earns"
                    " at that rate; in another, converted to the programme currency at the rate in force.")
    tiers: list[TierSpec] = Field(min_length=1, max_length=20, description="Strictly ascending thresholds, the first at 0,"
                                                                              " unique names (else 409).")
    first_booking_bonus: Int = Field(0, ge=0, le=1_000_000)
    promotions: list[PromotionSpec] = Field(default_factory=list, max_length=200,
                                            description="Each ending on or after it starts (else 409).")
    expiry_months: Int = Field(ge=1, le=600)
    tier_window_months: Int = Field(12, ge=1, le=120)
    allow_negative_balance: StrictBool = False
    adjustment_points_max: Int = Field(1_000_000, ge=1, le=1_000_000_000)
    transfers: TransferSpec = Field(default_factory=TransferSpec)
    return_grace_days: Int = Field(0, ge=0, le=3_650)
    household_members_max: Int = Field(6, ge=2, le=100)
    on_close: Literal["forfeit", "keep"] = Field(
        "keep", description="Closing a member forfeits its available points (a debit adjustment) or keeps them.")
    segments: SegmentSpec = Field(default_factory=SegmentSpec,
                                  description="Customer value segments; their value is in the programme currency.")
    cost_per_point: str = Field("0.01", pattern=r"^[0-9]{1,6}(\.[0-9]{1,8})?$",
                                description="What the programme books per outstanding point, in the programme"
                                            " currency: the liability report values the points at it.")
    # P4, tier policies.
    tier_policy: TierPolicySpec = Field(default_factory=TierPolicySpec)
    # P3: earn beyond bookings.
    activities: dict[ActivityType, ActivitySpec] = Field(default_factory=dict, max_length=4,
                                                         description="Points per activity type.")
    anniversary: AnniversarySpec | None = Field(None, description="The bonus by years since the first activity.")
    caps: list[CapSpec] = Field(default_factory=list, max_length=50,
                                description="Earn caps per member per calendar period (UTC) and source.")
    enrol_on_first_booking: StrictBool = Field(
        True, description="True: a booking for a member the ledger does not know enrols them. False: it is refused"
                          " (409 over HTTP, the dead-letter topic from Kafka) until the member enrols"
                          " (`POST /v1/members`).")

    def inconsistencies(self) -> list[dict[str, str]]:
        """What JSON Schema cannot say of one object's fields together, each wrong field
        named: a 409 (as a request the schema takes and the programme refuses)."""
        wrong = self._tier_inconsistencies()
        names = [t.name for t in self.tiers]
        for n, name in enumerate(names):
            if name in names[:n]:
                wrong.append((f"tiers.{n}.name", f"tier name {name!r} is used twice"))
        for n, p in enumerate(self.promotions):
            if p.ends_on < p.starts_on:
                wrong.append((f"promotions.{n}.ends_on", "ends before it starts"))
        return [{"field": f, "message": m, "type": "inconsistent"} for f, m in wrong]

    def _tier_inconsistencies(self) -> list[tuple[str, str]]:
        """The lowest tier qualifies on nothing (or 0 points); every other on at least one
        criterion; `threshold` and `qualify.points` say the same where both are given;
        and each criterion's thresholds ascend strictly over the tiers that have it."""
        wrong: list[tuple[str, str]] = []
        last: dict[str, Decimal] = {}  # criterion -> its threshold in the last tier that has it
        for n, tier in enumerate(self.tiers):
            criteria = tier.qualify.model_dump(exclude_none=True) if tier.qualify is not None else {}
            if tier.threshold is not None:
                if criteria.get("points", tier.threshold) != tier.threshold:
                    wrong.append((f"tiers.{n}.qualify.points", "differs from the tier's threshold"))
                criteria.setdefault("points", tier.threshold)
            if n == 0 and any(value != 0 for value in (Decimal(v) for v in criteria.values())):
                wrong.append(("tiers.0.threshold", "the lowest tier must start at 0"))
            if n and not criteria:
                wrong.append((f"tiers.{n}.qualify", "a tier above the lowest needs a threshold or a criterion"))
            for criterion, value in criteria.items():
                before = last.get(criterion)
                if before is not None and before >= Decimal(value):
                    field = "threshold" if criterion == "points" and "points" not in (
                        tier.qualify.model_dump(exclude_none=True) if tier.qualify else {}) else f"qualify.{criterion}"
                    wrong.append((f"tiers.{n}.{field}", f"tiers must ascend strictly by {criterion}"))
                last[criterion] = Decimal(value)
        return wrong

    def document(self) -> dict[str, Any]:
        """The rule set as stored and as `ProgramRules.from_dict` reads it (no effective_from)."""
        return self.model_dump(mode="json", exclude={"effective_from"})


class FxRateSet(_Strict):
    """Exchange rates from `effective_from` until the next set: units of each currency per
    one unit of the programme currency (`base`, the programme currency when omitted)."""

    model_config = _examples({"effective_from": "2027-01-01T00:00:00Z", "rates": {"CNY": "7.8", "USD": "1.08"}})

    effective_from: Instant = Field(description="RFC 3339 instant the rates apply from (later than now).")
    base: Currency | None = Field(None, description="The programme currency the rates are against.")
    rates: dict[Currency, FxRate] = Field(min_length=1, max_length=CURRENCIES_MAX)
