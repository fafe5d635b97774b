"""The /v1 routes: each turns a request into a command or a read, nothing more."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from ledger.bootstrap import Container
from ledger.domain import (
    tier_in_force,
    AdjustPoints,
    Command,
    Event,
    MemberNotFound,
    PointsAdjusted,
    PointsRedeemed,
    RedeemPoints,
    tier_status,
    to_data,
)
from ledger.handlers import Applied, CommandRequest, Duplicate
from ledger.ingest.schema import BookingEvent, id_pattern
from ledger.keys import ApiKey, Permission
from projections.asof import expiry_page_as_of, history_as_of, read_member_as_of
from projections.queries import EXPIRY_PAGE_LOTS_MAX, expiry_page

from ledger.domain.tierpolicy import rank_of
from .tier_views import tier_view
from .deps import (
    ContainerDep,
    IdempotencyKey,
    MemberPath,
    NotMerged,
    MinPosition,
    QueryInt,
    SingleQueryValues,
    require,
    wait_for_position,
)
from .instants import AsOf, in_the_past
from .problems import ApiProblem
from .schemas import (
    AdjustmentRequest,
    AuditEvent,
    AuditPage,
    AdjustmentResult,
    Balance,
    BookingEventResult,
    ExpirySchedule,
    HistoryPage,
    Problem,
    CatalogueRedemptionRequest,
    MemberRedemptionBody,
    RedemptionResult,
    TierView,
)

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues])
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
HISTORY_LIMIT_MAX = 200
EXPIRY_CURSOR_CHARS_MAX = 400  # base64 of a date and a lot id, with room for ids well past 64 characters


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Problem responses of a route: every route may answer 503 with Retry-After (the
    database unreachable, a write to retry as it is)."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}}}
            for code in sorted({400, 401, 403, 413, 422, 503, *codes})}


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def presented(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data as the member routes show it: the lots it took as {lot_id, points}
    objects, the redemption response's shape. Stored events keep their [lot_id, points]
    pairs (events never change once written, and the hash chain covers those bytes), so
    the conversion is made here, on the way out; /v1/events shows the stored form, which
    an auditor's replay and hash check need."""
    lots = data.get("lots")
    if lots is None:
        return data
    return {**data, "lots": [{"lot_id": lot_id, "points": points} for lot_id, points in lots]}


def _status(response: Response, outcome: Applied | Duplicate) -> None:
    response.status_code = 200 if isinstance(outcome, Duplicate) else 201


@router.post("/booking-events", status_code=201, operation_id="postBookingEvent", response_model=BookingEventResult,
             responses={200: {"model": BookingEventResult, "description": "Already applied: the original result."},
                        **_errors(409)}, tags=["ingest"])
async def post_booking_event(
    event: BookingEvent, response: Response, container: ContainerDep,
    key: Annotated[ApiKey, require(Permission.post_bookings)],
) -> BookingEventResult:
    """Apply a booking event (the Kafka topic's schema); `event_id` is the idempotency key."""
    result = await container.ledger.handle(event.to_request("http", actor=key.name))
    _status(response, result)
    return booking_event_result(result)


def booking_event_result(outcome: Applied | Duplicate) -> BookingEventResult:
    applied = outcome.applied
    return BookingEventResult(
        member_id=applied.member_id, points=applied.summary.earned,
        events=[{**e, "data": presented(e["data"])} for e in applied.event_views()],
        pending_points=applied.summary.pending_after, position=applied.position,
    )


@router.post("/members/{member_id}/redemptions", status_code=201, operation_id="redeemPoints",
             response_model=RedemptionResult, responses={200: {"model": RedemptionResult}, **_errors(404, 409)},
             tags=["members"])
async def redeem(
    member_id: Member, body: MemberRedemptionBody, idempotency_key: IdempotencyKey, response: Response,
    container: ContainerDep, key: Annotated[ApiKey, require(Permission.redeem)],
) -> RedemptionResult:
    """Spend points on a reward; lots are consumed soonest-expiry first. 409 with `available` when short.

    Free-form, `{points, reward: {id, kind}}`, as the caller prices it; or a catalogue
    reward, `{reward: {id}}` and no points: its price for the member's tier now, with a
    unit of its stock, in one transaction (409 with `reason` when the reward is out of
    stock, outside its window, or not offered to the tier; 404 for an unknown reward)."""
    if isinstance(body, CatalogueRedemptionRequest):
        from .rewards import redeem_catalogue  # imports this module: bound at the first catalogue redemption

        return await redeem_catalogue(member_id, body, idempotency_key, response, container, key)
    command = RedeemPoints(member_id, container.clock(), _command_id("rd", member_id, idempotency_key), body.points,
                           body.reward.id, body.reward.kind)
    applied, event = await _member_write(container, response, command, "redemption", idempotency_key, key)
    assert isinstance(event, PointsRedeemed)
    return RedemptionResult(
        redemption_id=event.redemption_id, points=event.points, reward=body.reward,
        lots=presented(to_data(event))["lots"],
        available_after=applied.summary.available_after, position=applied.position,
    )


@router.post("/members/{member_id}/adjustments", status_code=201, operation_id="adjustPoints",
             response_model=AdjustmentResult, responses={200: {"model": AdjustmentResult}, **_errors(404, 409)},
             tags=["members"])
async def adjust(
    member_id: Member, body: AdjustmentRequest, idempotency_key: IdempotencyKey, response: Response,
    container: ContainerDep, key: Annotated[ApiKey, require(Permission.adjust)],
) -> AdjustmentResult:
    """Credit or debit points after a complaint; the reason and the key's name stay on record."""
    command = AdjustPoints(member_id, container.clock(), _command_id("adj", member_id, idempotency_key), body.points,
                           body.reason, key.name, body.case_id, body.category, body.booking_id)
    # An adjustment without a case hashes as it did before cases existed, so that a retry
    # of one sent before keeps its original answer.
    case = ("case_id", "category", "booking_id") if body.case_id is body.category is body.booking_id is None else ()
    applied = await keyed_write(container, response, command, "adjustment", idempotency_key, key,
                                timed=("occurred_at", *case))
    (appended,) = applied.events
    event = appended.event
    assert isinstance(event, PointsAdjusted)
    return AdjustmentResult(
        adjustment_id=event.adjustment_id, points=event.points, reason=event.reason, actor=event.actor,
        case_id=event.case_id, category=event.category, booking_id=event.booking_id,
        available_after=applied.summary.available_after, position=applied.position,
    )


def _command_id(prefix: str, member_id: str, idempotency_key: str) -> str:
    """The same id for every retry of one request, so a replayed command is the same command."""
    return f"{prefix}-{uuid.uuid5(uuid.NAMESPACE_URL, f'{member_id}/{idempotency_key}')}"


async def keyed_write(
    container: Container, response: Response, command: Command, kind: str, idempotency_key: str, key: ApiKey,
    *, timed: tuple[str, ...] = ("occurred_at",), request: dict[str, Any] | None = None,
) -> Applied:
    """A write keyed by its Idempotency-Key header (scoped by `kind` and the command's
    member): what applied it; 201 when applied, 200 when replayed. A replay is the same
    request when it asks for the same command, whatever the time: the fields in `timed`
    follow the clock and are left out of the comparison, and `request` adds what the
    caller asked for in their place (a hold's `ttl_s` for its `expires_at`)."""
    same_command = {k: v for k, v in dataclasses.asdict(command).items() if k not in timed}
    result = await container.ledger.handle(CommandRequest(
        command, idempotency_key=f"{kind}:{command.member_id}:{idempotency_key}",
        request_hash=_fingerprint(same_command, request) if request is not None else _fingerprint(same_command),
        metadata={"source": "http", "actor": key.name, "causation_id": idempotency_key},
    ))
    _status(response, result)
    return result.applied


async def _member_write(
    container: Container, response: Response, command: Command, kind: str, idempotency_key: str, key: ApiKey,
) -> tuple[Applied, Event]:
    """A one-event write on a member's account (`keyed_write`): (what applied it, its event)."""
    applied = await keyed_write(container, response, command, kind, idempotency_key, key)
    (appended,) = applied.events
    return applied, appended.event


_READ = require(Permission.read_members)


@router.get("/members/{member_id}/balance", operation_id="getBalance", response_model=Balance,
            responses=_errors(404, 409), tags=["members"], dependencies=[NotMerged])
async def balance(member_id: Member, container: ContainerDep, _: Annotated[ApiKey, _READ],
                  min_position: MinPosition = None, as_of: AsOf = None) -> Balance:
    """Available, pending and held points, lifetime totals, and the tier in force now (or
    as of `as_of`)."""
    if min_position is not None:
        await wait_for_position(container, min_position)
    if as_of is not None:
        return await _balance_as_of(container, member_id, in_the_past(container, "as_of", as_of))
    now = container.clock()
    # One round trip, one snapshot: this is the route apps poll most.
    row = await container.pool.fetchrow(_BALANCE_SQL, member_id, now)
    if row is None:
        raise MemberNotFound(member_id)
    rules = container.rules
    tier = tier_status(zip(row["earned_at"], row["points"], strict=True), now, rules).tier
    # The tier in force: the higher of the one qualified for and the one the member's
    # tier changes put in force (the tier policy's soft landing keeps it above).
    tier = max(tier, row["recorded_tier"] or tier, key=lambda name: rank_of(rules, name))
    return Balance(
        member_id=member_id, available=row["available"] - max(row["overdue"] - row["debt"], 0), pending=row["pending"],
        held=row["held"], lifetime_earned=row["lifetime_earned"], lifetime_redeemed=row["lifetime_redeemed"],
        lifetime_expired=row["lifetime_expired"], lifetime_adjusted=row["lifetime_adjusted"],
        lifetime_transferred_in=row["lifetime_transferred_in"], lifetime_transferred_out=row["lifetime_transferred_out"],
        lifetime_merged_in=row["lifetime_merged_in"], lifetime_merged_out=row["lifetime_merged_out"],
        tier=tier, last_activity=row["last_activity"], position=row["checkpoint"],
    )


async def _balance_as_of(container: Container, member_id: str, at: datetime) -> Balance:
    member = await read_member_as_of(container.pool, member_id, at, container.ledger.member_state)
    if member is None:
        raise MemberNotFound(member_id)
    state, totals = member.state, member.totals
    return Balance(
        member_id=member_id, available=state.available(at), pending=state.pending, held=state.held,
        lifetime_earned=totals["lifetime_earned"], lifetime_redeemed=totals["lifetime_redeemed"],
        lifetime_expired=totals["lifetime_expired"], lifetime_adjusted=totals["lifetime_adjusted"],
        lifetime_transferred_in=totals["lifetime_transferred_in"],
        lifetime_transferred_out=totals["lifetime_transferred_out"],
        lifetime_merged_in=totals["lifetime_merged_in"], lifetime_merged_out=totals["lifetime_merged_out"],
        tier=tier_in_force(state, container.book.at(at), at), last_activity=member.last_activity,
        position=member.position,
    )


# Lots past their date stop being spendable before the expiry job records it: `overdue`.
# What they have left pays the member's debt first (MemberState.debt_owed), and `available`
# is already net of the debt, so only the overdue points beyond the debt come off.
_BALANCE_SQL = """
SELECT b.available, b.debt, b.pending, b.held, b.lifetime_earned, b.lifetime_redeemed, b.lifetime_expired,
       b.lifetime_adjusted, b.lifetime_transferred_in, b.lifetime_transferred_out, b.lifetime_merged_in,
       b.lifetime_merged_out, b.last_activity,
       (SELECT position FROM projection_checkpoints WHERE name = 'read_models') AS checkpoint,
       (SELECT coalesce(sum(remaining), 0) FROM expiry_lots
         WHERE member_id = $1 AND status = 'active' AND remaining > 0 AND expires_at <= $2) AS overdue,
       array(SELECT earned_at FROM tier_qualifying WHERE member_id = $1 ORDER BY booking_id) AS earned_at,
       array(SELECT points FROM tier_qualifying WHERE member_id = $1 ORDER BY booking_id) AS points,
       (SELECT tier FROM member_tiers WHERE member_id = $1) AS recorded_tier
FROM balances b WHERE b.member_id = $1
"""


@router.get("/members/{member_id}/tier", operation_id="getTier", response_model=TierView, dependencies=[NotMerged],
            responses=_errors(404, 409), tags=["members"])
async def tier(member_id: Member, container: ContainerDep, _: Annotated[ApiKey, _READ],
               min_position: MinPosition = None, as_of: AsOf = None) -> TierView:
    """The tier in force now (or as of `as_of`), the tier-qualifying points in the window,
    and what the member needs, by when, to keep the tier and to reach the next one (per
    criterion of the rules in force then: have, threshold, need, by)."""
    position = await wait_for_position(container, min_position)
    if as_of is not None:
        at = in_the_past(container, "as_of", as_of)
        member = await read_member_as_of(container.pool, member_id, at, container.ledger.member_state)
        if member is None:
            raise MemberNotFound(member_id)
        state, position = member.state, member.position
    else:
        # The member's own state, as commands see it: the tier in force is on its stream.
        at = container.clock()
        state = await container.ledger.member_state(member_id)
        if not state.exists:
            raise MemberNotFound(member_id)
    return tier_view(member_id, state, container.book.at(at), at, position)


@router.get("/members/{member_id}/expiry-schedule", operation_id="getExpirySchedule", response_model=ExpirySchedule,
            dependencies=[NotMerged],
            responses=_errors(404, 409), tags=["members"])
async def expiry_schedule(
    member_id: Member, container: ContainerDep, _: Annotated[ApiKey, _READ],
    within_days: Annotated[QueryInt(0, 3650), Query()] = 90,
    limit: Annotated[QueryInt(1, EXPIRY_PAGE_LOTS_MAX), Query(description="Lots per page.")] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=EXPIRY_CURSOR_CHARS_MAX, pattern=r"^[A-Za-z0-9_-]+$",
                                        description="`next_cursor` of the page before.")] = None,
    min_position: MinPosition = None, as_of: AsOf = None,
) -> ExpirySchedule:
    """Lots with points left, soonest expiry first, a page at a time; and how many points
    expire within N days, over all of them (from now, or from `as_of`)."""
    after = _expiry_cursor_value(cursor) if cursor is not None else None
    position = await wait_for_position(container, min_position)
    if as_of is not None:
        at = in_the_past(container, "as_of", as_of)
        member = await read_member_as_of(container.pool, member_id, at, container.ledger.member_state)
        if member is None:
            raise MemberNotFound(member_id)
        page = expiry_page_as_of(member.state, at, at + timedelta(days=within_days), after, limit)
        position = member.position
    else:
        now = container.clock()
        page = await expiry_page(container.pool, member_id, now, now + timedelta(days=within_days), after, limit)
        if page is None:
            raise MemberNotFound(member_id)
    return ExpirySchedule(
        member_id=member_id, within_days=within_days, expiring_points=page.expiring_points,
        lots=[{"lot_id": lot_id, "remaining": remaining, "expires_at": expires_at}
              for lot_id, remaining, expires_at in page.lots],
        next_cursor=_expiry_cursor(*page.next_after) if page.next_after is not None else None, position=position,
    )


def _expiry_cursor(expires_at: datetime, lot_id: str) -> str:
    """Opaque to clients: where the next page starts, as base64url JSON without padding."""
    return base64.urlsafe_b64encode(json.dumps([expires_at.isoformat(), lot_id]).encode()).decode().rstrip("=")


def _expiry_cursor_value(cursor: str) -> tuple[datetime, str]:
    try:
        expires_at, lot_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(expires_at)
        # What the route hands out is a lot's date and id as stored: an id with a control
        # character (PostgreSQL refuses a NUL in text) or a date that leaves Python's
        # range in UTC (as the driver sends it) is none of them.
        if moment.tzinfo is None or not isinstance(lot_id, str) or not lot_id.isprintable():
            raise ValueError(cursor)
        moment.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as exc:  # binascii.Error and json's errors are ValueErrors
        # The schema can say what a cursor looks like, not which ones were handed out: a
        # well-formed one that names no page is a page not found (404), like an unknown
        # member, rather than a 422 for a request the published contract allows.
        raise ApiProblem(
            404, "Cursor not found", "The cursor is not one this route handed out; start again without one.",
            errors=[{"field": "cursor", "message": "unknown cursor", "type": "invalid_cursor"}],
        ) from exc
    return moment, lot_id


@router.get("/members/{member_id}/history", operation_id="getHistory", response_model=HistoryPage,
            dependencies=[NotMerged],
            responses=_errors(404, 409), tags=["members"])
async def history(
    member_id: Member, container: ContainerDep, _: Annotated[ApiKey, _READ],
    limit: Annotated[QueryInt(1, HISTORY_LIMIT_MAX), Query()] = 50,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    min_position: MinPosition = None, as_of: AsOf = None,
    case_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=id_pattern(64),
                                         description="Only the adjustments of this support case.")] = None,
) -> HistoryPage:
    """The member's events from the event store itself, newest first (those on its
    record as of `as_of`, when given; those of the support case `case_id`, when given,
    through an index)."""
    if min_position is not None:
        await wait_for_position(container, min_position)
    before = min(int(cursor), 2**31 - 1) if cursor else 2**31 - 1
    if case_id is not None:
        rows = await container.pool.fetch(
            "SELECT position, stream_version, type, data, metadata, occurred_at, recorded_at FROM events"
            " WHERE stream_id = $1 AND data->>'case_id' = $4 AND stream_version < $2"
            " AND type = 'PointsAdjusted' AND data ? 'case_id' ORDER BY stream_version DESC LIMIT $3",
            member_id, before, limit + 1, case_id)
        if as_of is not None:
            at = in_the_past(container, "as_of", as_of)
            rows = [r for r in rows if r["occurred_at"] <= at]
        if not rows and cursor is None and not await container.pool.fetchval(
                "SELECT 1 FROM events WHERE stream_id = $1 LIMIT 1", member_id):
            raise MemberNotFound(member_id)
    elif as_of is not None:
        rows = await history_as_of(container.pool, member_id, in_the_past(container, "as_of", as_of), before,
                                   limit + 1)
    else:
        rows = await container.pool.fetch(
            "SELECT position, stream_version, type, data, metadata, occurred_at, recorded_at FROM events"
            " WHERE stream_id = $1 AND stream_version < $2 ORDER BY stream_version DESC LIMIT $3",
            member_id, before, limit + 1)
    if not rows and cursor is None and case_id is None:
        raise MemberNotFound(member_id)
    page = rows[:limit]
    return HistoryPage(
        member_id=member_id,
        events=[{**dict(r), "data": presented(json.loads(r["data"])), "metadata": json.loads(r["metadata"])}
                for r in page],
        next_cursor=str(page[-1]["stream_version"]) if len(rows) > limit else None,
    )


@router.get("/events", operation_id="listEvents", response_model=AuditPage, responses=_errors(), tags=["audit"])
async def list_events(
    container: ContainerDep, _: Annotated[ApiKey, require(Permission.audit)],
    after: Annotated[QueryInt(0, 2**62), Query(description="Global position to read after.")] = 0,
    limit: Annotated[QueryInt(1, 1000), Query()] = 100,
) -> AuditPage:
    """Every event in global order, with its hash chained to the stream's previous one, for replay."""
    rows = await container.pool.fetch(
        "SELECT position, stream_id, stream_version, type, schema_version, data, metadata, occurred_at,"
        " recorded_at, hash FROM events WHERE position > $1 ORDER BY position LIMIT $2", after, limit)
    events = [{**dict(r), "data": json.loads(r["data"]), "metadata": json.loads(r["metadata"]),
               "hash": bytes(r["hash"]).hex()} for r in rows]
    return AuditPage(events=events, next_after=events[-1]["position"] if len(events) == limit else None)
