"""Request and response bodies of the reward catalogue (/v1/programme/rewards)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag,
                      WithJsonSchema)

from ledger.ingest.schema import Identifier, OccurredAt, Text, id_pattern

from .schemas import POINTS_MAX, RewardKind, _whole

TIERS_MAX = 20  # prices per reward: far above any programme's number of tiers
STOCK_MAX = 1_000_000_000
MILES_RATIO_MAX = 1_000
MILES_KIND = "airline_miles"
Partner = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,3}$")]
Stock = Annotated[int, BeforeValidator(_whole), Field(ge=0, le=STOCK_MAX, strict=True),
                  WithJsonSchema({"type": "integer", "minimum": 0, "maximum": STOCK_MAX})]
Price = Annotated[int, BeforeValidator(_whole), Field(ge=1, le=POINTS_MAX, strict=True),
                  WithJsonSchema({"type": "integer", "minimum": 1, "maximum": POINTS_MAX})]

_DEFINITION = {
    "kind": "hotel_discount", "names": {"en": "50% off a hotel night", "zh-CN": "酒店住宿五折"},
    "points_by_tier": {"member": 3000, "gold": 2000}, "stock": 100,
}
_MILES = {"kind": "airline_miles", "names": {"en": "1,000 Air China miles"}, "points_by_tier": {"member": 2000},
          "stock": None, "miles_ratio": 0.5, "partner": "CA"}


class RewardNames(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "examples": [{"en": "50% off a hotel night", "zh-CN": "酒店住宿五折"}]})
    en: Text(200)  # type: ignore[valid-type]
    zh_cn: Text(200) | None = Field(None, alias="zh-CN")  # type: ignore[valid-type]


class _Definition(BaseModel):
    kind: RewardKind
    names: RewardNames
    points_by_tier: Annotated[dict[Identifier(32), Price], WithJsonSchema({  # type: ignore[valid-type]
        "type": "object", "minProperties": 1, "maxProperties": TIERS_MAX,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": id_pattern(32)},
        "additionalProperties": {"type": "integer", "minimum": 1, "maximum": POINTS_MAX},
    })] = Field(
        min_length=1, max_length=TIERS_MAX,
        description="The price in points per tier; a tier left out pays the price of the nearest lower tier listed,"
                    " and a member below every tier listed cannot have the reward.")
    stock: Stock | None = Field(None,
                              description="Units in all, those taken by open holds and redemptions included (at least"
                                          " that many); null: unlimited.")
    available_from: OccurredAt | None = None  # type: ignore[valid-type]
    available_to: OccurredAt | None = Field(  # type: ignore[valid-type]
        None, description="Exclusive; after `available_from`, else 409 (JSON Schema cannot compare two fields, and"
                          " a request the published schema allows is never refused as malformed).")


class RewardDefinitionRequest(_Definition):
    """A catalogue reward other than airline miles, created or replaced as a whole."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_DEFINITION]})
    kind: Literal["travel_product", "hotel_discount", "upgrade", "voucher", "other"]


class MilesRewardDefinitionRequest(_Definition):
    """An airline miles reward: the miles per point and the partner airline."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_MILES]})
    kind: Literal["airline_miles"]
    miles_ratio: float = Field(gt=0, le=MILES_RATIO_MAX, description="Airline miles per point.")
    partner: Partner = Field(description="The partner airline's IATA code.")


def _by_kind(body: Any) -> str:
    kind = body.get("kind") if isinstance(body, dict) else getattr(body, "kind", None)
    return "miles_reward" if kind == MILES_KIND else "other_reward"


RewardDefinitionBody = Annotated[
    Annotated[RewardDefinitionRequest, Tag("other_reward")] | Annotated[MilesRewardDefinitionRequest,
                                                                        Tag("miles_reward")],
    Discriminator(_by_kind),
]


class RewardView(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        **_DEFINITION, "reward_id": "HTL-DISC-50", "taken": 12, "remaining": 88, "miles_ratio": None,
        "partner": None, "price": 2000, "miles": None, "unavailable": None,
    }]})
    reward_id: str
    kind: str
    names: RewardNames
    points_by_tier: dict[str, int]
    stock: int | None
    taken: int = Field(description="Units taken by open holds and by redemptions not reversed in full.")
    remaining: int | None = Field(description="stock - taken; null: unlimited.")
    available_from: datetime | None
    available_to: datetime | None
    miles_ratio: str | None = Field(description="Airline miles per point, a decimal string.")
    partner: str | None
    price: int | None = Field(None, description="With `member_id`: the price for the member's tier now.")
    miles: int | None = Field(None, description="With `member_id`, for airline miles: the miles at that price.")
    unavailable: str | None = Field(
        None, description="Why the reward cannot be had now (with `member_id`, for the member): not_yet_available,"
                          " no_longer_available, out_of_stock or not_offered_to_tier; null: it can.")


class RewardDefinitionResult(RewardView):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        **_DEFINITION, "reward_id": "HTL-DISC-50", "taken": 0, "remaining": 100, "miles_ratio": None,
        "partner": None, "price": None, "miles": None, "unavailable": None, "position": 51,
    }]})
    position: int | None = Field(description="Of the definition's event; null when nothing changed.")


class RewardPage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "rewards": [RewardView.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
        "next_after": None, "member_id": "M-1001", "tier": "gold", "position": 51,
    }]})
    rewards: list[RewardView]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: the last page.")
    member_id: str | None
    tier: str | None = Field(description="With `member_id`: the member's tier now, which priced the page.")
    position: int = Field(description="The read models' position the page was read at.")
