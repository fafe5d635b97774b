"""The activities route (P3): a member's share, review, survey or completed referral,
earning per the rules in force at its `occurred_at` (see `ledger.domain.earn`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict

from ledger.handlers import Duplicate
from ledger.ingest.activities import ActivityBody
from ledger.keys import ApiKey, Permission

from .deps import ContainerDep, MemberPath, SingleQueryValues, require
from .routes import _errors, presented

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues], tags=["ingest"])
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]


class ActivityResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "member_id": "M-1001", "activity_id": "share-000123", "type": "social.shared", "points": 50,
        "events": [{"position": 42, "stream_version": 3, "type": "ActivityPointsEarned", "data": {"points": 50}}],
        "position": 42}]})
    member_id: str
    activity_id: str
    type: str
    points: int  # what the member earned (a referral earns the referred member too: see `events`)
    events: list[dict[str, Any]]
    position: int | None


@router.post("/members/{member_id}/activities", status_code=201, operation_id="postActivity",
             response_model=ActivityResult,
             responses={200: {"model": ActivityResult, "description": "Already applied: the original result."},
                        **_errors(404, 409)})
async def post_activity(
    member_id: Member, body: ActivityBody, response: Response, container: ContainerDep,
    key: Annotated[ApiKey, require(Permission.post_bookings)],
) -> ActivityResult:
    """Record an activity; `activity_id` is the idempotency key (per member): the same body
    again answers 200 with the original result, another body under the same id 409. A
    referral earns both members once, when the referred member's first booking has
    completed (409 before, and for a member referred already)."""
    result = await container.ledger.handle(body.to_request(member_id, "http", actor=key.name))
    response.status_code = 200 if isinstance(result, Duplicate) else 201
    applied = result.applied
    own = [e for e in applied.events if e.stream_id == member_id]
    return ActivityResult(
        member_id=member_id, activity_id=body.activity_id, type=body.type,
        points=sum(getattr(e.event, "points", 0) for e in own),
        events=[{**v, "data": presented(v["data"])} for v in applied.event_views()], position=applied.position,
    )
