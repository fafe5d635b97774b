"""Request and response bodies: separate from events and tables, bounded everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Strict, Tag, ValidationInfo,
                      field_validator)

from ledger.ingest.schema import BookingId, Identifier, Text

CaseId = Identifier(64)  # P3: a support case's id

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


class CatalogueReward(BaseModel):
    model_config = _examples({"id": "HTL-DISC-50"})
    id: Identifier(64) = Field(  # type: ignore[valid-type]
        description="A reward of the catalogue (`GET /v1/programme/rewards`).")


class CatalogueRedemptionRequest(BaseModel):
    """A catalogue reward, with no `points`: the price for the member's tier now is taken,
    with a unit of the reward's stock. (`points` with a `reward` of `{id, kind}` is a
    free-form redemption, as `RedemptionRequest` says.)"""

    model_config = _examples({"reward": {"id": "HTL-DISC-50"}})
    reward: CatalogueReward


class RewardTerms(BaseModel):
    """What priced a catalogue reward: the member's tier then, its price, and for airline
    miles the miles at the reward's ratio and the partner airline."""

    model_config = _examples({"tier": "gold", "points": 2000, "miles": None, "partner": None})
    tier: str
    points: int
    miles: int | None
    partner: str | None


class AdjustmentRequest(BaseModel):
    model_config = _examples({"points": 750, "reason": "Flight LH400 delayed 5 hours; goodwill credit"})
    points: Points = Field(ge=-1_000_000, le=1_000_000, strict=True, description="Non-zero.",
                           json_schema_extra={"not": {"const": 0}})
    reason: Text(500)  # type: ignore[valid-type]
    # P3, complaint compensation: recorded on the event; the history filters by case_id.
    case_id: CaseId | None = Field(None, description="The support case the adjustment settles.")
    category: Literal["delay", "cancellation", "service", "other"] | None = Field(
        None, description="The complaint's category.")
    booking_id: BookingId | None = Field(None, description="The booking the complaint is about.")

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
    catalogue: RewardTerms | None = Field(None, description="A catalogue reward's terms; null for a free-form one.")


class AdjustmentResult(BaseModel):
    model_config = _examples({
        "adjustment_id": "adj-9a2e", "points": 750, "reason": "Flight delayed", "actor": "support-desk",
        "available_after": 850, "position": 44,
    })
    adjustment_id: str
    points: int
    reason: str
    actor: str
    case_id: str | None = None
    category: str | None = None
    booking_id: str | None = None
    available_after: int
    position: int


class Balance(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "available": 850, "pending": 0, "held": 400, "lifetime_earned": 2600,
        "lifetime_redeemed": 2100, "lifetime_expired": 0, "lifetime_adjusted": 750, "lifetime_transferred_in": 0,
        "lifetime_transferred_out": 0, "lifetime_merged_in": 0, "lifetime_merged_out": 0, "tier": "member",
        "last_activity": "2026-11-25T09:30:00Z", "position": 44,
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
    lifetime_merged_in: int = Field(description="Active points a merge moved here from a duplicate member.")
    lifetime_merged_out: int = Field(description="Active points a merge moved from this member to the survivor.")
    tier: str
    last_activity: datetime
    position: int = Field(description="The read models include every event up to this position.")


class TierNeed(BaseModel):
    """P4: one criterion of a tier: what the member has in the window now, the tier's
    threshold, what is still missing (0: met), and by when."""

    model_config = _examples({"criterion": "nights", "have": "12", "threshold": "30", "need": "18",
                              "by": "2027-01-01T00:00:00Z"})
    criterion: str
    have: str  # a decimal string: spend has cents
    threshold: str
    need: str
    by: datetime | None


class TierGoal(BaseModel):
    """P4: a tier to keep or to reach, and its criteria: any one met is enough."""

    model_config = _examples({"tier": "gold", "met": False, "by": "2027-01-01T00:00:00Z", "criteria": [
        {"criterion": "points", "have": "6200", "threshold": "15000", "need": "8800", "by": "2027-01-01T00:00:00Z"}]})
    tier: str
    met: bool
    by: datetime | None = Field(description="To keep: the next date a downgrade can happen (an evaluation date plus"
                                            " the grace days). To reach: the end of a calendar-year window; null for"
                                            " a rolling one (an upgrade is at once, whenever a criterion is met).")
    criteria: list[TierNeed]


class TierView(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "tier": "silver", "qualifying_points": 6200, "window_start": "2025-11-25T10:00:00Z",
        "next_tier": "gold", "points_to_next_tier": 8800, "reevaluation_date": "2027-03-02T10:00:00Z",
        "position": 44, "tier_since": "2026-03-02T10:00:00Z", "qualifies_for": "silver",
        "keep": {"tier": "silver", "met": True, "by": "2026-12-01T00:00:00Z", "criteria": [
            {"criterion": "points", "have": "6200", "threshold": "5000", "need": "0", "by": "2026-12-01T00:00:00Z"}]},
        "next": {"tier": "gold", "met": False, "by": None, "criteria": [
            {"criterion": "points", "have": "6200", "threshold": "15000", "need": "8800", "by": None}]},
    })
    member_id: str
    tier: str = Field(description="The tier in force (what sets the multiplier): the higher of the one the member's"
                                  " tier changes put in force and the one it qualifies for.")
    qualifying_points: int
    window_start: datetime
    next_tier: str | None
    points_to_next_tier: int | None
    reevaluation_date: datetime | None
    position: int
    # P4, tier policies.
    tier_since: datetime | None = Field(None, description="When the tier in force was put in force by a tier change;"
                                                          " null when it never changed.")
    qualifies_for: str = Field(description="The tier the member's criteria in the window reach now.")
    keep: TierGoal | None = Field(description="What keeps the tier in force, by when; null at the lowest tier.")
    next: TierGoal | None = Field(description="What reaches the tier above; null at the top.")


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
        "projection_position": 44, "projection_lag_events": 0, "reports_position": 44, "reports_lag_events": 0,
        "kafka": None,
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
    reports_position: int | None = Field(
        None, description="Where the reports' and segments' read models stand: they may run behind under load,"
                          " which does not make the service unready.")
    reports_lag_events: int | None = None
    kafka: dict[str, Any] | None = None
    tasks: dict[str, TaskState] = Field(default_factory=dict, description="The background tasks by name.")
    process: str | None = Field(
        None, max_length=64, description="Which of `ledger serve --workers`'s processes answered (`primary`,"
                                         " `http-2`, ...); the tasks are that process's. Null: a single process.")


class Problem(BaseModel):
    model_config = _examples({
        "type": "/problems/insufficient-points", "title": "Insufficient points", "status": 409,
        "detail": "The member has 100 points available and 2500 were requested.", "available": 100,
    })
    type: str
    title: str
    status: int
    detail: str


# The movements: holds at checkout, their capture and release, redemption reversals and
# transfers (routes in movements.py).

HOLD_TTL_S_DEFAULT = 900
HOLD_TTL_S_MAX = 86_400
MOVEMENT_REASON_CHARS_MAX = 500
MemberId = Identifier(64)
_LOTS_BACK = "Points back on these lots, spendable again."


class HoldRequest(BaseModel):
    model_config = _examples({"points": 2500, "reward": {"id": "HTL-DISC-50", "kind": "hotel_discount"}, "ttl_s": 900})
    points: Points = Field(ge=1, le=POINTS_MAX, strict=True)
    reward: Reward
    ttl_s: Points = Field(HOLD_TTL_S_DEFAULT, ge=1, le=HOLD_TTL_S_MAX, strict=True,
                          description="Seconds until the hold ends by itself if it is neither captured nor released.")


class CatalogueHoldRequest(BaseModel):
    """A catalogue reward, with no `points`: its price for the member's tier now is held,
    with a unit of its stock, which comes back if the hold is released or ends."""

    model_config = _examples({"reward": {"id": "HTL-DISC-50"}, "ttl_s": 900})
    reward: CatalogueReward
    ttl_s: Points = Field(HOLD_TTL_S_DEFAULT, ge=1, le=HOLD_TTL_S_MAX, strict=True,
                          description="Seconds until the hold ends by itself if it is neither captured nor released.")


def _with_points(body: Any) -> str:
    # A body with `points` is free-form; any other, a catalogue reward's: each shape's own
    # errors then name its fields (the published schema says oneOf the two).
    return "free_form" if isinstance(body, dict) and "points" in body else "catalogue"


MemberRedemptionBody = Annotated[
    Annotated[RedemptionRequest, Tag("free_form")] | Annotated[CatalogueRedemptionRequest, Tag("catalogue")],
    Discriminator(_with_points),
]
MemberHoldBody = Annotated[
    Annotated[HoldRequest, Tag("free_form")] | Annotated[CatalogueHoldRequest, Tag("catalogue")],
    Discriminator(_with_points),
]


class HoldResult(BaseModel):
    model_config = _examples({
        "hold_id": "hold-0c6f", "points": 2500, "lots": [{"lot_id": "booking:BK-000123", "points": 2500}],
        "expires_at": "2026-11-25T10:15:00Z", "available_after": 100, "position": 45,
    })
    hold_id: str
    points: int
    lots: list[LotTaken] = Field(description="The points held on each lot, soonest expiry first.")
    expires_at: datetime
    available_after: int
    position: int
    catalogue: RewardTerms | None = Field(None, description="A catalogue reward's terms; null for a free-form one.")


class CaptureRequest(BaseModel):
    model_config = _examples({"points": 2500})
    points: Points = Field(ge=1, le=POINTS_MAX, strict=True,
                           description="At most what the hold holds; the rest is released.")


class CaptureResult(BaseModel):
    model_config = _examples({
        "hold_id": "hold-0c6f", "redemption_id": "cap-77d1", "points": 2000, "released": 500,
        "lots": [{"lot_id": "booking:BK-000123", "points": 2000}], "available_after": 600, "position": 46,
    })
    hold_id: str
    redemption_id: str = Field(description="The redemption the capture made: what a reversal names.")
    points: int
    released: int = Field(description="Points of the hold not captured, given back.")
    lots: list[LotTaken] = Field(description="The points spent from each lot.")
    available_after: int
    position: int


class ReleaseRequest(BaseModel):
    model_config = _examples({})


class ReleaseResult(BaseModel):
    model_config = _examples({
        "hold_id": "hold-0c6f", "points": 2500, "restored": [{"lot_id": "booking:BK-000123", "points": 2500}],
        "expired": [], "forfeited": [], "debt_repaid": 0, "available_after": 2600, "position": 46,
    })
    hold_id: str
    points: int
    restored: list[LotTaken] = Field(description=_LOTS_BACK)
    expired: list[LotTaken] = Field(description="Points of lots that reached their date while held: expired.")
    forfeited: list[LotTaken] = Field(description="Points of bookings taken back while held: lost, paying debt first.")
    debt_repaid: int
    available_after: int
    position: int


class ReversalRequest(BaseModel):
    model_config = _examples({"points": 500, "reason": "Hotel cancelled the discounted stay"})
    # The bounds go on the int itself, before the conversion of whole floats: put after it
    # (as a Field's would be inside the union), pydantic publishes them as "ge"/"le",
    # which JSON Schema ignores.
    points: Annotated[int, annotated_types.Interval(ge=1, le=POINTS_MAX), Strict(), BeforeValidator(_whole)] | None \
        = Field(None, description="Omitted or null: all that is not reversed yet.")
    reason: Text(MOVEMENT_REASON_CHARS_MAX)  # type: ignore[valid-type]


class ReversalResult(BaseModel):
    model_config = _examples({
        "reversal_id": "rv-3b9e", "redemption_id": "rd-5f1c", "points": 500,
        "restored": [{"lot_id": "booking:BK-000123", "points": 500}], "expired": [], "forfeited": [],
        "regranted": [], "debt_repaid": 0, "grace_expires_at": None, "available_after": 1100, "position": 47,
    })
    reversal_id: str
    redemption_id: str
    points: int
    restored: list[LotTaken] = Field(description=_LOTS_BACK)
    expired: list[LotTaken] = Field(description="Points of lots past their date: they come back expired.")
    forfeited: list[LotTaken] = Field(description="Points of bookings taken back since: lost, paying debt first.")
    regranted: list[LotTaken] = Field(description="Points of lots past their date, given again on a new lot for the "
                                                  "programme's grace period.")
    debt_repaid: int
    grace_expires_at: datetime | None = Field(description="When the regranted points expire; null if none.")
    available_after: int
    position: int


class TransferRequest(BaseModel):
    model_config = _examples({"from_member_id": "M-1001", "to_member_id": "M-1002", "points": 500,
                              "reason": "Gift to a travel companion"})
    from_member_id: MemberId  # type: ignore[valid-type]
    to_member_id: MemberId = Field(  # type: ignore[valid-type]
        description="Another member than `from_member_id` (422 otherwise).")
    points: Points = Field(ge=1, le=POINTS_MAX, strict=True)
    reason: Text(MOVEMENT_REASON_CHARS_MAX)  # type: ignore[valid-type]

    @field_validator("to_member_id")
    @classmethod
    def _another_member(cls, to_member_id: str, info: ValidationInfo) -> str:
        if info.data.get("from_member_id") == to_member_id:
            raise ValueError("must differ from from_member_id")
        return to_member_id


class TransferResult(BaseModel):
    model_config = _examples({
        "transfer_id": "tr-81aa", "from_member_id": "M-1001", "to_member_id": "M-1002", "points": 500,
        "lots": [{"lot_id": "booking:BK-000123", "points": 500}], "available_after": 100, "position": 49,
    })
    transfer_id: str
    from_member_id: str
    to_member_id: str
    points: int
    lots: list[LotTaken] = Field(description="The sender's points taken from each lot, soonest expiry first; the "
                                             "receiver gets a lot for each, with its date.")
    available_after: int = Field(description="The sender's available points after the transfer.")
    position: int


class HouseholdRequest(BaseModel):
    model_config = _examples({"household_id": "FAM-2001", "head_member_id": "M-1001"})
    household_id: Identifier(64)  # type: ignore[valid-type]
    head_member_id: Identifier(64)  # type: ignore[valid-type]


class HouseholdView(BaseModel):
    model_config = _examples({"household_id": "FAM-2001", "head_member_id": "M-1001",
                              "members": ["M-1001", "M-1002"], "position": 45})
    household_id: str
    head_member_id: str
    members: list[str] = Field(description="Every member, the head first, then in the order they joined.")
    position: int | None = Field(description="Position of the last event this write appended (null when it changed "
                                             "nothing); pass as min_position to read it.")


class HouseholdShare(BaseModel):
    model_config = _examples({"member_id": "M-1002", "points": 500,
                              "lots": [{"lot_id": "booking:BK-000124", "points": 500}]})
    member_id: str
    points: int
    lots: list[LotTaken]


class HouseholdRedemptionResult(BaseModel):
    model_config = _examples({
        "household_id": "FAM-2001", "redemption_id": "hrd-7c1d", "points": 3000,
        "reward": {"id": "HTL-DISC-50", "kind": "hotel_discount"},
        "members": [{"member_id": "M-1001", "points": 2500, "lots": [{"lot_id": "booking:BK-000123", "points": 2500}]},
                    {"member_id": "M-1002", "points": 500, "lots": [{"lot_id": "booking:BK-000124", "points": 500}]}],
        "position": 48,
    })
    household_id: str
    redemption_id: str = Field(description="Also on each paying member's history; a reversal of one member's part "
                                           "names it.")
    points: int
    reward: Reward
    members: list[HouseholdShare] = Field(description="What each member paid (members who paid nothing are left "
                                                      "out), in the household's order.")
    position: int


class HouseholdMemberBalance(BaseModel):
    model_config = _examples({"member_id": "M-1001", "role": "head", "available": 850, "pending": 0, "held": 0})
    member_id: str
    role: Literal["head", "member"]
    available: int
    pending: int
    held: int = Field(description="On the member's open holds.")


class HouseholdBalance(BaseModel):
    model_config = _examples({
        "household_id": "FAM-2001", "available": 1350, "pending": 0, "held": 200,
        "members": [{"member_id": "M-1001", "role": "head", "available": 850, "pending": 0, "held": 200},
                    {"member_id": "M-1002", "role": "member", "available": 500, "pending": 0, "held": 0}],
        "position": 48,
    })
    household_id: str
    available: int = Field(description="What a household redemption can take now: the members' available points "
                                       "(a member in debt counts as none).")
    pending: int
    held: int = Field(description="On the members' open holds.")
    members: list[HouseholdMemberBalance] = Field(description="The head first, then in the order they joined.")
    position: int = Field(description="The read models include every event up to this position.")
