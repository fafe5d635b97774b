"""The /v1 routes of the points movements: holds at checkout (placed, captured in part
or whole, released), redemption reversals and transfers between members. Each turns a
request into one command and reads its answer from the typed events of the outcome."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Path, Response

from ledger.domain import (
    CaptureHold,
    Event,
    HoldCaptured,
    HoldReleased,
    PlaceHold,
    PointsHeld,
    PointsTransferredOut,
    RedemptionReversed,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
    reward_stream_id,
)
from ledger.domain.events import LotTake
from ledger.bootstrap import Container
from ledger.ingest.schema import Identifier
from ledger.keys import ApiKey, Permission
from ledger.outcomes import Applied

from .deps import ContainerDep, IdempotencyKey, MemberPath, SingleQueryValues, require
from .routes import _command_id, _errors, keyed_write
from .schemas import (
    CaptureRequest,
    CaptureResult,
    CatalogueHoldRequest,
    MemberHoldBody,
    HoldResult,
    LotTaken,
    ReleaseRequest,
    ReleaseResult,
    ReversalRequest,
    ReversalResult,
    TransferRequest,
    TransferResult,
)

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues])
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
HoldId = Annotated[Identifier(64), Path(description="The `hold_id` the hold's placement answered.")]
RedemptionId = Annotated[Identifier(64), Path(
    description="The `redemption_id` of a redemption, or of a hold's capture.")]
_HOLD = require(Permission.hold)

E = TypeVar("E", bound=Event)


def _event(applied: Applied, kind: type[E]) -> E | None:
    """The outcome's event of type `kind` (the first, if several), or None."""
    return next((a.event for a in applied.events if isinstance(a.event, kind)), None)


def _one(applied: Applied, kind: type[E]) -> E:
    event = _event(applied, kind)
    assert event is not None, f"an applied {kind.__name__} command appends a {kind.__name__}"
    return event


def _lots(takes: tuple[LotTake, ...]) -> list[LotTaken]:
    return [LotTaken(lot_id=lot_id, points=points) for lot_id, points in takes]


# A release or reversal names the stream of the catalogue reward its hold or redemption
# took a unit of, read from the member's state: a retry after it applied reads none (the
# unit is back), so it is no part of what makes two requests the same one.
_NOT_ASKED = ("occurred_at", "reward_streams")


async def _reward_streams(container: Container, member_id: str, movement: str, movement_id: str) -> tuple[str, ...]:
    """The stream of the catalogue reward of the member's open hold or redemption, if it is one."""
    reward_id = (await container.ledger.member_state(member_id)).catalogue.get((movement, movement_id))
    return () if reward_id is None else (reward_stream_id(reward_id),)


def _position(applied: Applied) -> int:
    assert applied.position is not None, "every movement appends at least one event"
    return applied.position


@router.post("/members/{member_id}/holds", status_code=201, operation_id="placeHold", response_model=HoldResult,
             responses={200: {"model": HoldResult}, **_errors(404, 409)}, tags=["holds"])
async def place_hold(
    member_id: Member, body: MemberHoldBody, idempotency_key: IdempotencyKey, response: Response,
    container: ContainerDep, key: Annotated[ApiKey, _HOLD],
) -> HoldResult:
    """Set points aside at checkout, soonest expiry first: they leave `available` until
    the hold is captured, released, or ends by itself after `ttl_s`. 409 with `available`
    when short.

    Free-form, `{points, reward: {id, kind}}`; or a catalogue reward, `{reward: {id}}` and
    no points: its price for the member's tier now is held with a unit of its stock,
    which comes back when the hold is released or ends (a catalogue hold is captured
    whole)."""
    if isinstance(body, CatalogueHoldRequest):
        from .rewards import hold_catalogue  # imports this module: bound at the first catalogue hold

        return await hold_catalogue(member_id, body, idempotency_key, response, container, key)
    now = container.clock()
    command = PlaceHold(member_id, now, _command_id("hold", member_id, idempotency_key), body.points,
                        body.reward.id, body.reward.kind, now + timedelta(seconds=body.ttl_s))
    # The hold's end follows the clock; a replay is the same request when it asks for the same ttl_s.
    applied = await keyed_write(container, response, command, "hold", idempotency_key, key,
                                timed=("occurred_at", "expires_at"), request={"ttl_s": body.ttl_s})
    held = _one(applied, PointsHeld)
    return HoldResult(hold_id=held.hold_id, points=held.points, lots=_lots(held.lots), expires_at=held.expires_at,
                      available_after=applied.summary.available_after, position=_position(applied))


@router.post("/members/{member_id}/holds/{hold_id}/capture", status_code=201, operation_id="captureHold",
             response_model=CaptureResult, responses={200: {"model": CaptureResult}, **_errors(404, 409)},
             tags=["holds"])
async def capture_hold(
    member_id: Member, hold_id: HoldId, body: CaptureRequest, idempotency_key: IdempotencyKey, response: Response,
    container: ContainerDep, key: Annotated[ApiKey, _HOLD],
) -> CaptureResult:
    """Spend part or all of an open hold as a redemption; the rest goes back at once.
    A hold released, expired or captured already: 409; an unknown hold: 404."""
    command = CaptureHold(member_id, container.clock(), hold_id, _command_id("cap", member_id, idempotency_key),
                          body.points)
    applied = await keyed_write(container, response, command, "capture", idempotency_key, key)
    captured = _one(applied, HoldCaptured)
    rest = _event(applied, HoldReleased)
    return CaptureResult(hold_id=captured.hold_id, redemption_id=captured.redemption_id, points=captured.points,
                         released=rest.points if rest is not None else 0, lots=_lots(captured.lots),
                         available_after=applied.summary.available_after, position=_position(applied))


@router.post("/members/{member_id}/holds/{hold_id}/release", status_code=201, operation_id="releaseHold",
             response_model=ReleaseResult, responses={200: {"model": ReleaseResult}, **_errors(404, 409)},
             tags=["holds"])
async def release_hold(
    member_id: Member, hold_id: HoldId, idempotency_key: IdempotencyKey, response: Response,
    container: ContainerDep, key: Annotated[ApiKey, _HOLD],
    body: Annotated[ReleaseRequest | None, Body(description="Nothing, or `{}`.")] = None,
) -> ReleaseResult:
    """Give a hold's points back to their lots (a checkout abandoned). A hold released,
    expired or captured already: 409; an unknown hold: 404."""
    streams = await _reward_streams(container, member_id, "hold", hold_id)
    command = ReleaseHold(member_id, container.clock(), hold_id, streams)
    applied = await keyed_write(container, response, command, "release", idempotency_key, key,
                                timed=_NOT_ASKED)
    released = _one(applied, HoldReleased)
    return ReleaseResult(hold_id=released.hold_id, points=released.points, restored=_lots(released.lots),
                         expired=_lots(released.expired), forfeited=_lots(released.forfeited),
                         debt_repaid=released.debt_repaid, available_after=applied.summary.available_after,
                         position=_position(applied))


@router.post("/members/{member_id}/redemptions/{redemption_id}/reversals", status_code=201,
             operation_id="reverseRedemption", response_model=ReversalResult,
             responses={200: {"model": ReversalResult}, **_errors(404, 409)}, tags=["members"])
async def reverse_redemption(
    member_id: Member, redemption_id: RedemptionId, body: ReversalRequest, idempotency_key: IdempotencyKey,
    response: Response, container: ContainerDep, key: Annotated[ApiKey, require(Permission.reverse)],
) -> ReversalResult:
    """Give back all or part of a redemption to the lots it took, latest expiry first;
    the reason and the key's name stay on record. More than is left to reverse: 409."""
    streams = await _reward_streams(container, member_id, "redemption", redemption_id)
    command = ReverseRedemption(member_id, container.clock(), redemption_id,
                                _command_id("rv", member_id, idempotency_key), body.points, body.reason, key.name,
                                streams)
    applied = await keyed_write(container, response, command, "reversal", idempotency_key, key, timed=_NOT_ASKED)
    reversed_ = _one(applied, RedemptionReversed)
    return ReversalResult(
        reversal_id=reversed_.reversal_id, redemption_id=reversed_.redemption_id, points=reversed_.points,
        restored=_lots(reversed_.lots), expired=_lots(reversed_.expired), forfeited=_lots(reversed_.forfeited),
        regranted=_lots(reversed_.regranted), debt_repaid=reversed_.debt_repaid,
        grace_expires_at=reversed_.expires_at, available_after=applied.summary.available_after,
        position=_position(applied),
    )


@router.post("/transfers", status_code=201, operation_id="transferPoints", response_model=TransferResult,
             responses={200: {"model": TransferResult}, **_errors(404, 409)}, tags=["transfers"])
async def transfer_points(
    body: TransferRequest, idempotency_key: IdempotencyKey, response: Response, container: ContainerDep,
    key: Annotated[ApiKey, require(Permission.transfer)],
) -> TransferResult:
    """Move points from one member to another in one transaction: taken from the sender's
    lots soonest expiry first, credited to the receiver on lots that keep their dates.
    A programme limit (yearly points or count, the smallest transfer): 409 naming it in
    `limit`."""
    sender = body.from_member_id
    command = TransferPoints(sender, container.clock(), _command_id("tr", sender, idempotency_key),
                             body.to_member_id, body.points, body.reason)
    applied = await keyed_write(container, response, command, "transfer", idempotency_key, key)
    sent = _one(applied, PointsTransferredOut)
    return TransferResult(transfer_id=sent.transfer_id, from_member_id=sender, to_member_id=sent.to_member_id,
                          points=sent.points, lots=_lots(sent.lots), available_after=applied.summary.available_after,
                          position=_position(applied))
