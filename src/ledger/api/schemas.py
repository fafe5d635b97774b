"""Request and response bodies: separate from events and tables, bounded everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ledger.ingest.schema import Identifier, Text

POINTS_MAX = 10_000_000
RewardKind = Literal["travel_product", "hotel_discount", "airline_miles", "upgrade", "voucher", "other"]


def _whole(value: Any) -> Any:
    # JSON Schema's "integer" is a number with no fractional part, so 2500.0 (and 2.5e3)
    # is one: what the published schema calls an integer, the validation takes as that
    # integer. Any other float, a string or a boolean still fails the strict check.
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Points = Annotated[int, BeforeValidator(_whole)]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class Reward(BaseModel):
    model_config = _examples({"id": "HTL-DISC-50", "kind": "hotel_discount"})
    id: Identifier(64)  # type: ignore[valid-type]
    kind: RewardKind


class RedemptionRequest(BaseModel):
    model_config = _examples({"points": 2500, "reward": {"id": "HTL-DISC-50", "kind": "hotel_discount"}})
    points: Points = Field(ge=1, le=POINTS_MAX, strict=True)
    reward: Reward


class AdjustmentRequest(BaseModel):
    model_config = _examples({"points": 750, "reason": "Flight LH400 delayed 5 hours; goodwill credit"})
    points: Points = Field(ge=-1_000_000, le=1_000_000, strict=True, description="Non-zero.",
                           json_schema_extra={"not": {"const": 0}})
    reason: Text(500)  # type: ignore[valid-type]

    @field_validator("points")
    @classmethod
    def _non_zero(cls, points: int) -> int:
        if points == 0:
            raise ValueError("must not be zero")
        return points


_DATA = "The event's data; the lots it took, if any, as `lots`: [{lot_id, points}], as in a redemption's response."


class AppendedEvent(BaseModel):
    model_config = _examples({"position": 42, "stream_version": 3, "type": "PointsEarned", "data": {"points": 2600}})
    position: int
    stream_version: int
    type: str
    data: dict[str, Any] = Field(description=_DATA)


class BookingEventResult(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "events": [], "points": 2600, "pending_points": 2600, "position": 42,
    })
    member_id: str
    events: list[AppendedEvent]
    points: int = Field(description="Points this booking event earned (+) or took back (-).")
    pending_points: int = Field(description="The member's pending points after it.")
    position: int | None = Field(description="Position of the last appended event; pass as min_position to read it.")


class LotTaken(BaseModel):
    model_config = _examples({"lot_id": "booking:BK-000123", "points": 2500})
    lot_id: str
    points: int


class RedemptionResult(BaseModel):
    model_config = _examples({
        "redemption_id": "rd-5f1c", "points": 2500, "reward": {"id": "HTL-DISC-50", "kind": "hotel_discount"},
        "lots": [{"lot_id": "booking:BK-000123", "points": 2500}], "available_after": 100, "position": 43,
    })
    redemption_id: str
    points: int
    reward: Reward
    lots: list[LotTaken]
    available_after: int
    position: int


class AdjustmentResult(BaseModel):
    model_config = _examples({
        "adjustment_id": "adj-9a2e", "points": 750, "reason": "Flight delayed", "actor": "support-desk",
        "available_after": 850, "position": 44,
    })
    adjustment_id: str
    points: int
    reason: str
    actor: str
    available_after: int
    position: int


class Balance(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "available": 850, "pending": 0, "held": 400, "lifetime_earned": 2600,
        "lifetime_redeemed": 2100, "lifetime_expired": 0, "lifetime_adjusted": 750, "lifetime_transferred_in": 0,
        "lifetime_transferred_out": 0, "tier": "member", "last_activity": "2026-11-25T09:30:00Z", "position": 44,
    })
    member_id: str
    available: int = Field(description="Spendable now: lots past their date and points on open holds are left out.")
    pending: int
    held: int = Field(description="Set aside by open holds until they are captured or released.")
    lifetime_earned: int
    lifetime_redeemed: int = Field(description="Redemptions and captured holds, less what reversals of them returned.")
    lifetime_expired: int
    lifetime_adjusted: int
    lifetime_transferred_in: int = Field(description="Points received from other members.")
    lifetime_transferred_out: int = Field(description="Points sent to other members.")
    tier: str
    last_activity: datetime
    position: int = Field(description="The read models include every event up to this position.")


class TierView(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "tier": "silver", "qualifying_points": 6200, "window_start": "2025-11-25T10:00:00Z",
        "next_tier": "gold", "points_to_next_tier": 8800, "reevaluation_date": "2027-03-02T10:00:00Z",
        "position": 44,
    })
    member_id: str
    tier: str
    qualifying_points: int
    window_start: datetime
    next_tier: str | None
    points_to_next_tier: int | None
    reevaluation_date: datetime | None
    position: int


class ExpiringLot(BaseModel):
    model_config = _examples({"lot_id": "booking:BK-000123", "remaining": 100, "expires_at": "2028-11-25T09:30:00Z"})
    lot_id: str
    remaining: int
    expires_at: datetime


class ExpirySchedule(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "within_days": 90, "expiring_points": 0,
        "lots": [{"lot_id": "booking:BK-000123", "remaining": 100, "expires_at": "2028-11-25T09:30:00Z"}],
        "next_cursor": None, "position": 44,
    })
    member_id: str
    within_days: int
    expiring_points: int = Field(description="Points whose lots expire within `within_days`, over all the lots "
                                             "(not only this page's).")
    lots: list[ExpiringLot] = Field(description="A page of the lots with points left, soonest expiry first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    position: int


class HistoryEntry(BaseModel):
    model_config = _examples({
        "position": 43, "stream_version": 2, "type": "PointsRedeemed", "occurred_at": "2026-11-25T10:00:00Z",
        "recorded_at": "2026-11-25T10:00:00.120Z", "data": {"points": 2500}, "metadata": {"actor": "app"},
    })
    position: int
    stream_version: int
    type: str
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any] = Field(description=_DATA)
    metadata: dict[str, Any]


class HistoryPage(BaseModel):
    model_config = _examples({"member_id": "M-1001", "events": [], "next_cursor": None})
    member_id: str
    events: list[HistoryEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for older events; null on the last page.")


class AuditEvent(BaseModel):
    model_config = _examples({
        "position": 43, "stream_id": "M-1001", "stream_version": 2, "type": "PointsRedeemed", "schema_version": 1,
        "occurred_at": "2026-11-25T10:00:00Z", "recorded_at": "2026-11-25T10:00:00.120Z",
        "data": {"points": 2500}, "metadata": {"actor": "app"}, "hash": "9f2c...",
    })
    position: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any] = Field(description="The event's data as stored (lots as [lot_id, points] pairs): what the"
                                             " hash covers.")
    metadata: dict[str, Any]
    hash: str = Field(description="SHA-256 (hex) over the previous event's hash and this event's content.")


class AuditPage(BaseModel):
    model_config = _examples({"events": [], "next_after": None})
    events: list[AuditEvent]
    next_after: int | None = Field(description="Pass as `after` for the next page; null when caught up.")


class Health(BaseModel):
    model_config = _examples({"status": "ok"})
    status: str


class TaskState(BaseModel):
    model_config = _examples({"up": False, "restarts": 2, "failures": 3,
                              "last_error": "ConnectionRefusedError: [Errno 111] Connect call failed",
                              "since": "2026-11-24T18:00:03+00:00"})
    up: bool = Field(description="False while the task waits to be started again after a failure.")
    restarts: int = Field(ge=0)
    failures: int = Field(ge=0)
    last_error: str | None = Field(None, max_length=500)
    since: datetime = Field(description="When the task last started or failed.")


class Readiness(BaseModel):
    model_config = _examples({
        "status": "ready", "database": "ok", "migrations": "current", "head_position": 44,
        "projection_position": 44, "projection_lag_events": 0, "kafka": None,
        "tasks": {"projections": {"up": True, "restarts": 0, "failures": 0, "last_error": None,
                                  "since": "2026-11-24T18:00:00+00:00"}},
    })
    status: Literal["ready", "not_ready"]
    database: str = Field(description='"ok", "unreachable", or "restarting" while the embedded server is started'
                                      " again.")
    migrations: str
    head_position: int | None
    projection_position: int | None
    projection_lag_events: int | None
    kafka: dict[str, Any] | None = None
    tasks: dict[str, TaskState] = Field(default_factory=dict, description="The background tasks by name.")


class Problem(BaseModel):
    model_config = _examples({
        "type": "/problems/insufficient-points", "title": "Insufficient points", "status": 409,
        "detail": "The member has 100 points available and 2500 were requested.", "available": 100,
    })
    type: str
    title: str
    status: int
    detail: str
