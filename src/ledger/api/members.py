"""The members' status and merge routes (M2), and `NotMerged`, the check that turns a
read of a merged member into a 404 naming the member it was merged into.

A status change and a merge are commands on the member's stream (a merge across the
survivor's and the duplicate's, in one transaction: see `ledger.domain.members`). The
status is read from the member's state in the event store, not from a read model, so
it is never behind a change just made. Reasons are codes (`STATUS_REASONS`): no free
text, which could name the member, enters the event store."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from ledger.domain import (
    STATUS_REASONS,
    ChangeMemberStatus,
    MemberMerged,
    MemberMergedIn,
    MemberNotFound,
    MergeMembers,
)
from ledger.handlers import CommandRequest, Duplicate
from ledger.ingest.schema import Identifier
from ledger.keys import ApiKey, Permission

from projections.asof import read_member_as_of

from .deps import ContainerDep, IdempotencyKey, MemberPath, SingleQueryValues, require
from .instants import AsOf, in_the_past
from .shared_path import shared_path_route
from .routes import _errors, _fingerprint

router = APIRouter(prefix="/v1/members", dependencies=[SingleQueryValues], tags=["members"],
                   route_class=shared_path_route(lambda: router.routes))
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
StatusName = Literal["active", "suspended", "closed"]
Reason = Literal[STATUS_REASONS]  # type: ignore[valid-type]
_MANAGE = require(Permission.manage_members)


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class StatusRequest(BaseModel):
    model_config = _examples({"status": "suspended", "reason": "fraud_review"})
    status: StatusName = Field(description="active, suspended (earns, spends nothing) or closed (earns on no new "
                                           "booking, spends nothing; the rules' on_close forfeits or keeps its points).")
    reason: Reason = Field(description="A reason code; no free text is stored.")


class StatusView(BaseModel):
    model_config = _examples({"member_id": "M-1001", "status": "suspended", "position": 52})
    member_id: str
    status: StatusName
    position: int | None = Field(None, description="Position of the last event a change appended (null on a read, "
                                                   "or when nothing changed); pass as min_position to read it.")


class MergeRequest(BaseModel):
    model_config = _examples({"member_id": "M-1002", "reason": "duplicate_account"})
    member_id: Identifier(64) = Field(description="The duplicate, merged into the member of the path.")  # type: ignore[valid-type]
    reason: Reason = Field(description="A reason code; no free text is stored.")


class MergeView(BaseModel):
    model_config = _examples({"member_id": "M-1001", "merged_member_id": "M-1002", "lots": 3, "bookings": 2,
                              "points": 2500, "pending": 400, "debt": 0, "position": 61})
    member_id: str = Field(description="The survivor.")
    merged_member_id: str = Field(description="The duplicate, closed and merged into the survivor.")
    lots: int = Field(description="Lots moved, open and closed.")
    bookings: int = Field(description="Bookings moved: later changes of them apply to the survivor.")
    points: int = Field(description="Active points moved.")
    pending: int = Field(description="Pending points moved.")
    debt: int = Field(description="Debt moved.")
    position: int


@router.post("/{member_id}/status", status_code=201, operation_id="changeMemberStatus", response_model=StatusView,
             responses={200: {"model": StatusView, "description": "Already so, or applied before: nothing changed."},
                        **_errors(404, 409)})
async def change_status(member_id: Member, body: StatusRequest, idempotency_key: IdempotencyKey, response: Response,
                        container: ContainerDep, key: Annotated[ApiKey, _MANAGE]) -> StatusView:
    """Suspend, close or reactivate a member (suspended or closed back to active; a closed
    member cannot be suspended: 409). Closing a member with open holds is a 409."""
    command = ChangeMemberStatus(member_id, container.clock(), body.status, body.reason, key.name)
    result = await container.ledger.handle(CommandRequest(
        command, idempotency_key=f"member-status:{member_id}:{idempotency_key}",
        request_hash=_fingerprint(member_id, body.model_dump()),
        metadata={"source": "http", "actor": key.name, "causation_id": idempotency_key}))
    applied = result.applied
    response.status_code = 200 if isinstance(result, Duplicate) or not applied.events else 201
    state = await container.ledger.member_state(member_id)
    return StatusView(member_id=member_id, status=state.status, position=applied.position)  # type: ignore[arg-type]


@router.get("/{member_id}/status", operation_id="getMemberStatus", response_model=StatusView,
            responses=_errors(404))
async def get_status(member_id: Member, container: ContainerDep,
                     _: Annotated[ApiKey, require(Permission.read_members)], as_of: AsOf = None) -> StatusView:
    """The member's status now, or as of `as_of` (404 with `merged_into` for a member merged by then)."""
    if as_of is not None:
        member = await read_member_as_of(container.pool, member_id, in_the_past(container, "as_of", as_of),
                                         container.ledger.member_state)
        if member is None:
            raise MemberNotFound(member_id)
        state = member.state
    else:
        state = await container.ledger.member_state(member_id)
    if state.merged_into is not None:
        raise MemberMerged(member_id, state.merged_into)
    if not state.exists:
        raise MemberNotFound(member_id)
    return StatusView(member_id=member_id, status=state.status)  # type: ignore[arg-type]


@router.post("/{member_id}/merges", status_code=201, operation_id="mergeMembers", response_model=MergeView,
             responses={200: {"model": MergeView, "description": "Applied before: the original result."},
                        **_errors(404, 409)})
async def merge(member_id: Member, body: MergeRequest, idempotency_key: IdempotencyKey, response: Response,
                container: ContainerDep, key: Annotated[ApiKey, _MANAGE]) -> MergeView:
    """Merge the duplicate (`member_id` of the body) into this member, in one transaction:
    its lots (with their dates and origin), pending points, bookings, debt and
    tier-qualifying history move here, and it is closed with `merged_into`. Later booking
    events for the duplicate's id apply here. 409: a member closed or suspended, open holds
    or a household on the duplicate, or a booking, lot or redemption id on both."""
    command = MergeMembers(member_id, container.clock(), body.member_id, body.reason, key.name)
    result = await container.ledger.handle(CommandRequest(
        command, idempotency_key=f"member-merge:{member_id}:{idempotency_key}",
        request_hash=_fingerprint(member_id, body.model_dump()),
        metadata={"source": "http", "actor": key.name, "causation_id": idempotency_key}))
    applied = result.applied
    response.status_code = 200 if isinstance(result, Duplicate) else 201
    (moved,) = (e.event for e in applied.events if isinstance(e.event, MemberMergedIn))
    assert applied.position is not None
    return MergeView(
        member_id=member_id, merged_member_id=moved.from_member_id, lots=len(moved.moved_lots),
        bookings=len(moved.bookings), points=sum(r[3] for r in moved.moved_lots if r[4] == "active"),
        pending=sum(r[3] for r in moved.moved_lots if r[4] == "pending"), debt=moved.debt, position=applied.position)
