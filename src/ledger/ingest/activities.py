"""The activity message (P3): a member's share, review, survey or completed referral, as
`POST /v1/members/{member_id}/activities` takes it, and on the booking topic as its own
message type (its `type` is an activity type, not `booking.*`; it carries `member_id`,
the message's key). Idempotent by `activity_id`, per member: the same body again is the
original result, a different body under the same id a 409 (or a dead-letter reason)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ledger.domain.earn import RecordActivity
from ledger.domain.earn_rules import ACTIVITY_TYPES, SHARE_CHANNELS
from ledger.handlers import CommandRequest, KafkaSource

from .schema import BookingId, EventId, MemberId, OccurredAt

ActivityType = Literal["social.shared", "referral.completed", "review.submitted", "survey.completed"]
Channel = Literal["wechat", "weibo", "xiaohongshu", "douyin", "facebook", "instagram", "x", "other"]
assert set(ActivityType.__args__) == set(ACTIVITY_TYPES)  # type: ignore[attr-defined]
assert set(Channel.__args__) == set(SHARE_CHANNELS)  # type: ignore[attr-defined]
_NO_OFFSET = timedelta(0)

# Which type needs which field, in the published schema too, so that a client (or a
# fuzzer) following it never sends what the validators refuse.
_CONDITIONS = [
    {"if": {"properties": {"type": {"const": "social.shared"}}},
     "then": {"required": ["channel"], "properties": {"channel": {"type": "string"}}},
     "else": {"not": {"required": ["channel"]}}},
    {"if": {"properties": {"type": {"const": "referral.completed"}}},
     "then": {"required": ["referred_member_id"], "properties": {"referred_member_id": {"type": "string"}}},
     "else": {"not": {"required": ["referred_member_id"]}}},
]


class ActivityBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={
        "examples": [{"type": "social.shared", "activity_id": "share-000123", "occurred_at": "2026-11-25T09:30:00+08:00",
                      "channel": "wechat", "booking_id": "BK-000123"},
                     {"type": "referral.completed", "activity_id": "ref-000042",
                      "occurred_at": "2026-11-26T10:00:00+08:00", "referred_member_id": "M-2002"}],
        "allOf": _CONDITIONS,
    })

    type: ActivityType = Field(description="social.shared, referral.completed, review.submitted or survey.completed.")
    activity_id: EventId = Field(description="Unique per member: the idempotency key.")
    occurred_at: OccurredAt = Field(description="RFC 3339 date-time with seconds and an offset (or Z).")
    channel: Channel | None = Field(None, validate_default=True, description="social.shared only, and required there.")
    booking_id: BookingId | None = Field(None, description="The trip shared or reviewed, if any.")
    referred_member_id: MemberId | None = Field(
        None, validate_default=True, description="referral.completed only, and required there: the member referred,"
                                                 " whose first booking completed.")

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")  # absent when `type` itself was refused: that error names it
        if kind == "social.shared" and value is None:
            raise ValueError("is required for social.shared")
        if kind is not None and kind != "social.shared" and value is not None:
            raise ValueError(f"is for social.shared only, not {kind}")
        return value

    @field_validator("referred_member_id")
    @classmethod
    def _referred(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind == "referral.completed" and value is None:
            raise ValueError("is required for referral.completed")
        if kind is not None and kind != "referral.completed" and value is not None:
            raise ValueError(f"is for referral.completed only, not {kind}")
        return value

    def fingerprint(self) -> str:
        """What makes two messages the same activity: every field but the member (which
        the key scopes), so that HTTP and Kafka deliveries of one activity agree."""
        return hashlib.sha256(self.model_dump_json(exclude={"member_id"}).encode()).hexdigest()

    def to_request(self, member_id: str, source: str, *, message: KafkaSource | None = None,
                   **metadata: Any) -> CommandRequest:
        at: datetime = self.occurred_at
        if at.tzinfo is not UTC and at.utcoffset() == _NO_OFFSET:
            at = at.replace(tzinfo=UTC)
        command = RecordActivity(member_id, at, self.activity_id, self.type, self.channel, self.booking_id,
                                 self.referred_member_id)
        return CommandRequest(command, f"activity:{member_id}:{self.activity_id}", self.fingerprint(),
                              {"source": source, "causation_id": self.activity_id, **metadata}, message)


class ActivityMessage(ActivityBody):
    """On the Kafka topic: the activity with its member (the message's key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    member_id: MemberId
