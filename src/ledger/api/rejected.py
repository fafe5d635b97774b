"""GET /v1/rejected-messages: what the consumer could not take, for auditors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ledger.ingest.rejected import list_rejected
from ledger.keys import ApiKey, Permission

from .deps import ContainerDep, QueryBool, QueryInt, SingleQueryValues, require
from .schemas import Problem, _examples

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues])
LIMIT_MAX = 200
VALUE_CHARS_MAX = 4_096


class RejectedMessage(BaseModel):
    model_config = _examples({
        "id": 17, "source": "kafka", "topic": "travel.booking-events", "partition": 2, "offset": 40211,
        "key": "M-1001", "value": '{"event_id": "bk-1", "type": "booking.shipped"}', "value_bytes": 47,
        "reason": "schema: type: Input should be 'booking.confirmed', 'booking.completed', 'booking.cancelled'"
                  " or 'booking.refunded'; member_id: Field required",
        "rejected_at": "2026-11-25T09:30:02Z", "retried_at": None, "dlq_published_at": "2026-11-25T09:30:02Z",
    })
    id: int
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    key: str | None
    value: str = Field(description=f"The message as UTF-8 text (invalid bytes replaced), cut at {VALUE_CHARS_MAX}.")
    value_bytes: int = Field(description="The message's size as received.")
    reason: str
    rejected_at: datetime
    retried_at: datetime | None = Field(description="When a retry applied it; null while pending.")
    dlq_published_at: datetime | None = Field(description="When it was published to the dead-letter topic.")


class RejectedMessagePage(BaseModel):
    model_config = _examples({"messages": [RejectedMessage.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
                              "next_cursor": "17"})
    messages: list[RejectedMessage]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last.")


@router.get("/rejected-messages", operation_id="listRejectedMessages", response_model=RejectedMessagePage,
            responses={code: {"model": Problem, "content": {"application/problem+json": {}}} for code in (401, 403, 422)},
            tags=["audit"])
async def list_rejected_messages(
    container: ContainerDep, _: Annotated[ApiKey, require(Permission.audit)],
    limit: Annotated[QueryInt(1, LIMIT_MAX), Query()] = 50,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^[0-9]+$")] = None,
    pending: Annotated[QueryBool, Query(description="Only messages not yet applied by a retry.")] = False,
) -> RejectedMessagePage:
    """Messages the Kafka consumer rejected (also in the dead-letter topic), newest first, with the reason."""
    before = min(int(cursor), 2**63 - 1) if cursor else None
    rows = await list_rejected(container.pool, limit=limit + 1, before_id=before, pending_only=pending)
    page = rows[:limit]
    return RejectedMessagePage(
        messages=[RejectedMessage(
            id=r.id, source=r.source, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
            value=r.value[: VALUE_CHARS_MAX * 4].decode(errors="replace")[:VALUE_CHARS_MAX], value_bytes=len(r.value),
            reason=r.reason, rejected_at=r.rejected_at, retried_at=r.retried_at, dlq_published_at=r.dlq_published_at,
        ) for r in page],
        next_cursor=str(page[-1].id) if len(rows) > limit else None,
    )
