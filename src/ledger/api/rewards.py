"""The /v1/programme/rewards routes: the reward catalogue, and the catalogue forms of a
member's redemption and hold (`ledger.domain.catalogue` says how stock is kept).

A reward is a stream of its own (`reward/{reward_id}`): a definition is a command on it
alone; a redemption or hold of it is one command across the member's stream and the
reward's, committed in one transaction. The catalogue's listing comes from the
`rewards` read model (`?min_position=` waits for a write); one reward's page is read
from its stream, so its stock is the stock now."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from ledger.bootstrap import Container
from ledger.domain import (
    CatalogueRewardTaken,
    DefineReward,
    HoldReward,
    MemberNotFound,
    PointsHeld,
    PointsRedeemed,
    ProgramRules,
    RedeemReward,
    RewardDefined,
    RewardNotFound,
    RewardState,
    member_tier,
    miles_for,
    price_for,
    reward_stream_id,
    unavailable,
)
from ledger.handlers import CommandRequest
from ledger.ingest.schema import Identifier
from ledger.keys import ApiKey, Permission
from ledger.outcomes import Applied
from projections.reward_queries import REWARDS_PAGE_MAX, rewards_page

from .deps import ContainerDep, MemberPath, MinPosition, QueryInt, SingleQueryValues, require, wait_for_position
from .movements import _lots, _one, _position
from .reward_schemas import (
    MilesRewardDefinitionRequest,
    RewardDefinitionBody,
    RewardDefinitionRequest,
    RewardDefinitionResult,
    RewardNames,
    RewardPage,
    RewardView,
)
from .routes import _command_id, _errors, _fingerprint, keyed_write
from .schemas import CatalogueHoldRequest, CatalogueRedemptionRequest, HoldResult, RedemptionResult, Reward, \
    RewardTerms
from .shared_path import shared_path_route

router = APIRouter(prefix="/v1/programme/rewards", dependencies=[SingleQueryValues], tags=["catalogue"],
                   route_class=shared_path_route(lambda: router.routes))
RewardId = Annotated[Identifier(64), Path(description="The reward's id in the catalogue.")]
PricedFor = Annotated[MemberPath | None, Query(description="Price the rewards for this member's tier now.")]
_READ = require(Permission.read_catalogue)


def _view(reward: RewardState, tier: str | None, rules: ProgramRules, now: datetime) -> RewardView:
    """The reward as the catalogue shows it; `tier`: the member's tier to price it for."""
    price = miles = None
    why = unavailable(reward, now)
    if tier is not None:
        price = price_for(reward, tier, rules)
        miles = None if price is None else miles_for(reward, price)
        if why is None and price is None:
            why = "not_offered_to_tier"
    return RewardView(
        reward_id=reward.reward_id, kind=reward.kind, names=RewardNames(en=reward.name_en, zh_cn=reward.name_zh_cn),
        points_by_tier=dict(reward.points_by_tier), stock=reward.stock, taken=reward.taken,
        remaining=reward.remaining, available_from=reward.available_from, available_to=reward.available_to,
        miles_ratio=reward.miles_ratio, partner=reward.partner, price=price, miles=miles, unavailable=why,
    )


async def _member_tier(container: Container, member_id: str | None) -> str | None:
    """The member's tier now, read as a redemption's decision reads it (from its stream)."""
    if member_id is None:
        return None
    state = await container.ledger.member_state(member_id)
    if not state.exists:
        raise MemberNotFound(member_id)
    return member_tier(state, container.clock(), container.rules)


async def _reward(container: Container, reward_id: str) -> RewardState:
    reward = (await container.ledger.member_state(reward_stream_id(reward_id))).reward
    if reward is None:
        raise RewardNotFound(f"No reward {reward_id!r} is in the catalogue.", reward_id=reward_id)
    return reward


@router.put("/{reward_id}", status_code=201, operation_id="defineReward", response_model=RewardDefinitionResult,
            responses={200: {"model": RewardDefinitionResult, "description": "Replaced, or the same already."},
                       **_errors(409)})
async def define_reward(reward_id: RewardId, body: RewardDefinitionBody, response: Response,
                        container: ContainerDep,
                        key: Annotated[ApiKey, require(Permission.manage_catalogue)]) -> RewardDefinitionResult:
    """Create (201) or replace (200) a catalogue reward as a whole; each change is an event
    on the reward's stream, with the key's name. A stock below the units taken now: 409."""
    command = DefineReward(
        reward_stream_id(reward_id), container.clock(), reward_id, body.kind, body.names.en, body.names.zh_cn,
        tuple(body.points_by_tier.items()), body.stock, body.available_from, body.available_to,
        *_miles_terms(body), key.name,
    )
    result = await container.ledger.handle(CommandRequest(
        command, request_hash=_fingerprint(body.model_dump(mode="json")),
        metadata={"source": "http", "actor": key.name},
    ))
    applied = result.applied
    created = any(isinstance(e.event, RewardDefined) and e.stream_version == 1 for e in applied.events)
    response.status_code = 201 if created else 200
    view = _view(await _reward(container, reward_id), None, container.rules, container.clock())
    return RewardDefinitionResult(**view.model_dump(by_alias=False), position=applied.position)


def _miles_terms(body: RewardDefinitionRequest | MilesRewardDefinitionRequest) -> tuple[Decimal | None, str | None]:
    if isinstance(body, MilesRewardDefinitionRequest):
        return Decimal(repr(body.miles_ratio)), body.partner
    return None, None


@router.get("", operation_id="listRewards", response_model=RewardPage, responses=_errors(404, 409))
async def list_rewards(
    container: ContainerDep, _: Annotated[ApiKey, _READ], member_id: PricedFor = None,
    after: Annotated[Identifier(64) | None, Query(description="The last reward id of the page before.")] = None,
    limit: Annotated[QueryInt(1, REWARDS_PAGE_MAX), Query(description="Rewards per page.")] = 50,
    min_position: MinPosition = None,
) -> RewardPage:
    """The catalogue by reward id, a page at a time, with each reward's remaining stock;
    `member_id` prices it for the member's tier now (404 for an unknown member)."""
    position = await wait_for_position(container, min_position)
    member = await _member_tier(container, member_id)
    rewards, more = await rewards_page(container.pool, after or "", limit)
    now = container.clock()
    return RewardPage(
        rewards=[_view(r, member, container.rules, now) for r in rewards],
        next_after=rewards[-1].reward_id if more else None, member_id=member_id,
        tier=member, position=position,
    )


@router.get("/{reward_id}", operation_id="getReward", response_model=RewardView, responses=_errors(404, 409))
async def get_reward(reward_id: RewardId, container: ContainerDep, _: Annotated[ApiKey, _READ],
                     member_id: PricedFor = None) -> RewardView:
    """One reward, read from its stream (its stock as it is now); `member_id` prices it."""
    member = await _member_tier(container, member_id)
    return _view(await _reward(container, reward_id), member, container.rules, container.clock())


def _terms(applied: Applied) -> RewardTerms:
    taken = _one(applied, CatalogueRewardTaken)
    return RewardTerms(tier=taken.tier, points=taken.points, miles=taken.miles, partner=taken.partner)


async def redeem_catalogue(member_id: str, body: CatalogueRedemptionRequest, idempotency_key: str,
                           response: Response, container: Container, key: ApiKey) -> RedemptionResult:
    """`POST /v1/members/{member_id}/redemptions` of a catalogue reward (see `routes.redeem`)."""
    command = RedeemReward(member_id, container.clock(), _command_id("rd", member_id, idempotency_key),
                           body.reward.id)
    applied = await keyed_write(container, response, command, "redemption", idempotency_key, key)
    redeemed = _one(applied, PointsRedeemed)
    return RedemptionResult(
        redemption_id=redeemed.redemption_id, points=redeemed.points,
        reward=Reward(id=redeemed.reward_id, kind=redeemed.reward_kind), lots=_lots(redeemed.lots),
        available_after=applied.summary.available_after, position=_position(applied), catalogue=_terms(applied),
    )


async def hold_catalogue(member_id: str, body: CatalogueHoldRequest, idempotency_key: str, response: Response,
                         container: Container, key: ApiKey) -> HoldResult:
    """`POST /v1/members/{member_id}/holds` of a catalogue reward (see `movements.place_hold`)."""
    now = container.clock()
    command = HoldReward(member_id, now, _command_id("hold", member_id, idempotency_key), body.reward.id,
                         now + timedelta(seconds=body.ttl_s))
    applied = await keyed_write(container, response, command, "hold", idempotency_key, key,
                                timed=("occurred_at", "expires_at"), request={"ttl_s": body.ttl_s})
    held = _one(applied, PointsHeld)
    return HoldResult(hold_id=held.hold_id, points=held.points, lots=_lots(held.lots), expires_at=held.expires_at,
                      available_after=applied.summary.available_after, position=_position(applied),
                      catalogue=_terms(applied))
