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
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ledger.domain.rules import PRODUCTS
from ledger.ingest.schema import Currency

Product = Literal["flight", "hotel", "package", "rail", "car"]
assert set(Product.__args__) == set(PRODUCTS)  # type: ignore[attr-defined]

def _within(value: str, low: Decimal, high: Decimal, *, low_open: bool = False) -> str:
    d = Decimal(value)
    if d < low or d > high or (low_open and d == low):
        raise ValueError(f"must be {'above' if low_open else 'at least'} {low} and at most {high}")
    return value


VERSIONS_PAGE_MAX = 100
CURRENCIES_MAX = 200
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
# Decimals travel as strings, as amounts do: no binary floating point between a marketing
# team's "1.25" and the multiplication.
_DECIMAL = r"^\d{1,9}(\.\d{1,9})?$"
Rate = Annotated[str, StringConstraints(pattern=_DECIMAL, max_length=19),
                 AfterValidator(lambda v: _within(v, Decimal(0), Decimal(100_000))),
                 Field(description="Points per unit of the currency, a decimal string (0 to 100000).",
                       examples=["5", "0.6"])]
Multiplier = Annotated[str, StringConstraints(pattern=_DECIMAL, max_length=19),
                       AfterValidator(lambda v: _within(v, Decimal(1), Decimal(10))),
                       Field(description="A decimal string from 1 to 10: 2 is double points.", examples=["1.5"])]
FxRate = Annotated[str, StringConstraints(pattern=_DECIMAL, max_length=19),
                   AfterValidator(lambda v: _within(v, Decimal(0), Decimal(1_000_000_000), low_open=True)),
                 AfterValidator(lambda v: _within(v, Decimal(0), Decimal(100_000))),
                   Field(description="Units of the currency per one unit of the programme currency, above 0.",
                         examples=["7.8"])]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierSpec(_Strict):
    name: Name
    threshold: int = Field(ge=0, le=1_000_000_000, description="Tier-qualifying points in the window.")
    multiplier: Multiplier


class PromotionSpec(_Strict):
    name: Name
    starts_on: date = Field(description="First day (UTC, by the booking's occurred_at), inclusive.")
    ends_on: date = Field(description="Last day, inclusive; not before starts_on.")
    multiplier: Multiplier
    products: list[Product] = Field(default_factory=lambda: list(PRODUCTS), min_length=1, max_length=5)

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class TransferSpec(_Strict):
    points_min: int = Field(100, ge=1, le=1_000_000_000)
    sent_points_per_year: int = Field(100_000, ge=0, le=1_000_000_000)
    sent_count_per_year: int = Field(12, ge=0, le=100_000)
    received_points_per_year: int = Field(200_000, ge=0, le=1_000_000_000)
    received_count_per_year: int = Field(24, ge=0, le=100_000)


class SegmentSpec(_Strict):
    currency: Currency = "EUR"
    window_months: int = Field(12, ge=1, le=120)
    value_min: str = Field("2000", pattern=r"^\d{1,12}(\.\d{1,2})?$", max_length=15)
    bookings_min: int = Field(3, ge=0, le=100_000)
    tenure_days_min: int = Field(365, ge=0, le=36_500)
    top_share: str = Field("0.2", pattern=r"^[01](\.\d{1,6})?$", max_length=8)

    _share = field_validator("top_share")(lambda v: _within(v, Decimal(0), Decimal(1), low_open=True))


class RuleSet(_Strict):
    """A whole programme rule set, as published. Every field is checked and every wrong
    one named in the 422."""

    version: Version = Field(description="The version's name, unique; earn events record it.")
    effective_from: AwareDatetime = Field(
        description="RFC 3339 instant from which the version is in force (later than the instant it is published).")
    programme_currency: Currency = Field(
        "EUR", description="What earn rates without a per-currency entry are in, and exchange rates convert to.")
    earn_rates: dict[Product, dict[Currency, Rate]] = Field(
        min_length=1, max_length=5,
        description="Product -> currency -> points per unit. A booking in a currency listed for its product earns"
                    " at that rate; in another, converted to the programme currency at the rate in force.")
    tiers: list[TierSpec] = Field(min_length=1, max_length=20, description="Ascending thresholds, the first at 0.")
    first_booking_bonus: int = Field(0, ge=0, le=1_000_000)
    promotions: list[PromotionSpec] = Field(default_factory=list, max_length=200)
    expiry_months: int = Field(ge=1, le=600)
    tier_window_months: int = Field(12, ge=1, le=120)
    allow_negative_balance: bool = False
    adjustment_points_max: int = Field(1_000_000, ge=1, le=1_000_000_000)
    transfers: TransferSpec = Field(default_factory=TransferSpec)
    return_grace_days: int = Field(0, ge=0, le=3_650)
    household_members_max: int = Field(6, ge=2, le=100)
    segments: SegmentSpec = Field(default_factory=SegmentSpec)

    @field_validator("earn_rates")
    @classmethod
    def _rates(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for product, rates in value.items():
            if not 1 <= len(rates) <= CURRENCIES_MAX:
                raise ValueError(f"{product}: between 1 and {CURRENCIES_MAX} currencies")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, value: list[TierSpec]) -> list[TierSpec]:
        if value[0].threshold != 0:
            raise ValueError("the lowest tier must start at 0")
        thresholds = [t.threshold for t in value]
        if any(a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ValueError("tiers must ascend strictly by threshold")
        if len({t.name for t in value}) != len(value):
            raise ValueError("tier names must be unique")
        return value

    @field_validator("promotions")
    @classmethod
    def _promotions(cls, value: list[PromotionSpec]) -> list[PromotionSpec]:
        if len({p.name for p in value}) != len(value):
            raise ValueError("promotion names must be unique")
        return value

    def document(self) -> dict[str, Any]:
        """The rule set as stored and as `ProgramRules.from_dict` reads it (no effective_from)."""
        return self.model_dump(mode="json", exclude={"effective_from"})


class FxRateSet(_Strict):
    """Exchange rates from `effective_from` until the next set: units of each currency per
    one unit of the programme currency (`base`, the programme currency when omitted)."""

    effective_from: AwareDatetime = Field(description="RFC 3339 instant the rates apply from (later than now).")
    base: Currency | None = Field(None, description="The programme currency the rates are against.")
    rates: dict[Currency, FxRate] = Field(min_length=1, max_length=CURRENCIES_MAX)
