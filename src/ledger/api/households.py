"""The /v1/households routes: household pools, whose members redeem together.

A household is a stream of its own (`household/{household_id}`) holding its roster;
each write is one command across the household's stream and its members' streams,
committed in one transaction (see `ledger.domain.decider`, "Households"). Reads come
from the read models (`projections.queries.household_balance`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from ledger.bootstrap import Container
from ledger.domain import (
    AddHouseholdMember,
    Command,
    CreateHousehold,
    HouseholdChanged,
    HouseholdNotFound,
    HouseholdPointsRedeemed,
    PointsRedeemedForHousehold,
    RedeemForHousehold,
    RemoveHouseholdMember,
    household_stream_id,
)
from ledger.handlers import Applied, CommandRequest, Duplicate
from ledger.keys import ApiKey, Permission
from projections.queries import household_balance

from .deps import ContainerDep, IdempotencyKey, MemberPath, MinPosition, SingleQueryValues, require, wait_for_position
from .routes import _command_id, _errors, _fingerprint
from .schemas import (
    HouseholdBalance,
    HouseholdRedemptionResult,
    HouseholdRequest,
    HouseholdShare,
    HouseholdView,
    RedemptionRequest,
)
from .shared_path import shared_path_route

router = APIRouter(prefix="/v1/households", dependencies=[SingleQueryValues], tags=["households"],
                   route_class=shared_path_route(lambda: router.routes))
Household = Annotated[MemberPath, Path(description="The household's id (the grammar of member ids).")]
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
# A household redemption is sent with the roster read just before: a member joining in
# between refuses it (HouseholdChanged), and it is sent again on the fresh roster. Roster
# changes are rare and human-paced, so a few rounds suffice; the last refusal is a 503.
ROSTER_ROUNDS_MAX = 3


async def _write(container: Container, response: Response, command: Command, kind: str, idempotency_key: str,
                 key: ApiKey, request: dict[str, Any]) -> Applied:
    """A write on a household, keyed by its Idempotency-Key header: 201 when it changed
    something, 200 when it was applied before or there was nothing to do. `request`
    is what makes two requests the same one (not the time, nor the roster read)."""
    result = await container.ledger.handle(CommandRequest(
        command, idempotency_key=f"{kind}:{command.member_id}:{idempotency_key}", request_hash=_fingerprint(request),
        metadata={"source": "http", "actor": key.name, "causation_id": idempotency_key},
    ))
    response.status_code = 200 if isinstance(result, Duplicate) or not result.applied.events else 201
    return result.applied


async def _view(container: Container, household_id: str, applied: Applied) -> HouseholdView:
    roster = (await container.ledger.member_state(household_stream_id(household_id))).household_roster
    return HouseholdView(household_id=household_id, head_member_id=roster[0], members=list(roster),
                         position=applied.position)


_MANAGE = require(Permission.manage_households)


@router.post("", status_code=201, operation_id="createHousehold", response_model=HouseholdView,
             responses={200: {"model": HouseholdView, "description": "Already applied: the household as it is now."},
                        **_errors(404, 409)})
async def create_household(body: HouseholdRequest, idempotency_key: IdempotencyKey, response: Response,
                           container: ContainerDep, key: Annotated[ApiKey, _MANAGE]) -> HouseholdView:
    """Create a household pool with its head as first member (a member is in one household at most)."""
    command = CreateHousehold(household_stream_id(body.household_id), container.clock(), body.household_id,
                              body.head_member_id)
    applied = await _write(container, response, command, "household", idempotency_key, key, body.model_dump())
    return await _view(container, body.household_id, applied)


@router.put("/{household_id}/members/{member_id}", status_code=201, operation_id="addHouseholdMember",
            response_model=HouseholdView,
            responses={200: {"model": HouseholdView, "description": "A member already: nothing changed."},
                       **_errors(404, 409)})
async def add_member(household_id: Household, member_id: Member, idempotency_key: IdempotencyKey,
                     response: Response, container: ContainerDep,
                     key: Annotated[ApiKey, _MANAGE]) -> HouseholdView:
    """Add a member, up to the programme's `household_members_max` (409 with `limit` beyond)."""
    command = AddHouseholdMember(household_stream_id(household_id), container.clock(), household_id, member_id)
    applied = await _write(container, response, command, "household-add", idempotency_key, key,
                           {"household_id": household_id, "member_id": member_id})
    return await _view(container, household_id, applied)


@router.delete("/{household_id}/members/{member_id}", operation_id="removeHouseholdMember",
               response_model=HouseholdView, responses=_errors(404, 409))
async def remove_member(household_id: Household, member_id: Member, idempotency_key: IdempotencyKey,
                        response: Response, container: ContainerDep,
                        key: Annotated[ApiKey, _MANAGE]) -> HouseholdView:
    """Remove a member (not the head). Its points stay its own."""
    command = RemoveHouseholdMember(household_stream_id(household_id), container.clock(), household_id, member_id)
    applied = await _write(container, response, command, "household-remove", idempotency_key, key,
                           {"household_id": household_id, "member_id": member_id})
    response.status_code = 200
    return await _view(container, household_id, applied)


@router.post("/{household_id}/redemptions", status_code=201, operation_id="redeemForHousehold",
             response_model=HouseholdRedemptionResult,
             responses={200: {"model": HouseholdRedemptionResult}, **_errors(404, 409)})
async def redeem(household_id: Household, body: RedemptionRequest, idempotency_key: IdempotencyKey,
                 response: Response, container: ContainerDep,
                 key: Annotated[ApiKey, require(Permission.redeem)]) -> HouseholdRedemptionResult:
    """Spend the household's points on a reward: the members' lots are consumed soonest-expiry
    first across the household, in one transaction. 409 with `available` when short."""
    stream_id = household_stream_id(household_id)
    redemption_id = _command_id("hrd", stream_id, idempotency_key)
    request = {"household_id": household_id, **body.model_dump()}
    for round_ in range(1, ROSTER_ROUNDS_MAX + 1):
        roster = (await container.ledger.member_state(stream_id)).household_roster
        if not roster:
            raise HouseholdNotFound(f"No household {household_id!r} is known to the ledger.", household_id=household_id)
        command = RedeemForHousehold(stream_id, container.clock(), household_id, redemption_id, body.points,
                                     body.reward.id, body.reward.kind, roster)
        try:
            applied = await _write(container, response, command, "household-redemption", idempotency_key, key,
                                   request)
            break
        except HouseholdChanged:
            if round_ == ROSTER_ROUNDS_MAX:
                raise
    shares = {e.stream_id: e.event for e in applied.events if isinstance(e.event, PointsRedeemedForHousehold)}
    (record,) = (e.event for e in applied.events if isinstance(e.event, HouseholdPointsRedeemed))
    assert applied.position is not None
    return HouseholdRedemptionResult(
        household_id=household_id, redemption_id=record.redemption_id, points=record.points, reward=body.reward,
        members=[HouseholdShare(member_id=member_id, points=points, lots=[
            {"lot_id": lot_id, "points": taken} for lot_id, taken in shares[member_id].lots])
            for member_id, points in record.shares],
        position=applied.position,
    )


@router.get("/{household_id}/balance", operation_id="getHouseholdBalance", response_model=HouseholdBalance,
            responses=_errors(404, 409))
async def balance(household_id: Household, container: ContainerDep,
                  _: Annotated[ApiKey, require(Permission.read_members)],
                  min_position: MinPosition = None) -> HouseholdBalance:
    """The household's available and pending points (its members' summed), and each member's."""
    if min_position is not None:
        await wait_for_position(container, min_position)
    found = await household_balance(container.pool, household_id, container.clock())
    if found is None:
        raise HouseholdNotFound(f"No household {household_id!r} is known to the ledger.", household_id=household_id)
    return HouseholdBalance(
        household_id=household_id, available=found.available, pending=found.pending, held=found.held,
        members=[{"member_id": m.member_id, "role": m.role, "available": m.available, "pending": m.pending,
                  "held": m.held} for m in found.members],
        position=found.position,
    )
