"""Customer value segments: the programme's members in the four quadrants of value by
loyalty, the top share by value (the 80/20 view), and one member's place.

Reads from the segments' read model (`projections.segment_queries`), placed by the
rules' `segments` thresholds (`ledger.domain.segments`), as of now."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from ledger.bootstrap import Container
from ledger.domain import MemberNotFound, SegmentRules
from ledger.domain.segments import Segment
from ledger.keys import ApiKey, Permission
from projections.segment_queries import TopEdge, member_segment, segments_overview, top_edge
from projections.models import REPORTS

from .deps import ContainerDep, MemberPath, MinPosition, SingleQueryValues, require, wait_for_position
from .routes import _errors
from .schemas import _examples

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues])
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]

_SEGMENTS = ("champions: high value and high loyalty; big_spenders: high value, low loyalty; loyal_regulars: low"
             " value, high loyalty; occasional: low value, low loyalty.")
_MONEY = "A decimal amount in `currency`, as a string."


_THRESHOLDS = {"currency": "EUR", "window_months": 12, "value_min": "2000", "bookings_min": 3,
               "tenure_days_min": 365, "top_share": 0.2}
_SEGMENT = {"segment": "champions", "members": 1200, "member_share": 0.12, "value": "5310000.00",
            "value_share": 0.59}
_TOP = {"members": 2000, "value": "7380000.00", "value_share": 0.82}


class SegmentThresholds(BaseModel):
    model_config = _examples(_THRESHOLDS)
    currency: str = Field(description="Value counts the bookings in this currency (the programme's); bookings in"
                                      " others count towards loyalty only.", min_length=3, max_length=3)
    window_months: int = Field(description="Value and bookings count over this many months up to now.")
    value_min: str = Field(description=f"High value from this spend in the window up. {_MONEY}")
    bookings_min: int = Field(description="High loyalty from this many bookings in the window up ...")
    tenure_days_min: int = Field(description="... and this many days since the member's first event.")
    top_share: float = Field(description="The share of members by value marked as the top (0.2: the top 20%).")


class SegmentSummary(BaseModel):
    model_config = _examples(_SEGMENT)
    segment: Segment = Field(description=_SEGMENTS)
    members: int = Field(ge=0)
    member_share: float = Field(ge=0, le=1, description="Of all members.")
    value: str = Field(description=_MONEY)
    value_share: float = Field(ge=0, le=1, description="Of the value of all members; 0 when there is none.")


class TopShare(BaseModel):
    model_config = _examples(_TOP)
    members: int = Field(ge=0, description="Members ranked within the top share's places by value, ties at the edge"
                                           " all in; none who spent nothing.")
    value: str = Field(description=_MONEY)
    value_share: float = Field(ge=0, le=1, description="The share of all members' value they bring.")


class SegmentsView(BaseModel):
    model_config = _examples({
        "as_of": "2027-01-15T12:00:00Z", "window_start": "2026-01-15T12:00:00Z", "thresholds": _THRESHOLDS,
        "members": 10000, "value": "9000000.00", "segments": [
            _SEGMENT,
            {**_SEGMENT, "segment": "big_spenders", "members": 800, "member_share": 0.08, "value": "2250000.00",
             "value_share": 0.25},
            {**_SEGMENT, "segment": "loyal_regulars", "members": 2500, "member_share": 0.25, "value": "990000.00",
             "value_share": 0.11},
            {**_SEGMENT, "segment": "occasional", "members": 5500, "member_share": 0.55, "value": "450000.00",
             "value_share": 0.05}],
        "top": _TOP, "position": 48211})
    as_of: datetime = Field(description="The segments at this time (now).")
    window_start: datetime = Field(description="Bookings earned after this and up to `as_of` count.")
    thresholds: SegmentThresholds
    members: int = Field(ge=0, description="Members whose first event is before `as_of`.")
    value: str = Field(description=f"Of all members. {_MONEY}")
    segments: list[SegmentSummary] = Field(max_length=4, description="Every segment, empty ones too.")
    top: TopShare
    position: int = Field(description="The read models include every event up to this position.")


class MemberSegmentView(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "as_of": "2027-01-15T12:00:00Z", "window_start": "2026-01-15T12:00:00Z",
        "currency": "EUR", "value": "2100.00", "bookings": 3, "first_event_at": "2025-11-01T10:00:00Z",
        "tenure_days": 440, "segment": "champions", "in_top": True, "top_value_min": "1890.50", "members": 10000,
        "position": 48211})
    member_id: str
    as_of: datetime
    window_start: datetime = Field(description="Bookings earned after this and up to `as_of` count.")
    currency: str = Field(description="The currency of `value`: the programme's.")
    value: str = Field(description=f"Spend in the window: the bookings' amounts now, after partial refunds and"
                                   f" amendments; cancelled and refunded bookings count nothing. {_MONEY}")
    bookings: int = Field(ge=0, description="Bookings in the window, not cancelled or refunded (any currency).")
    first_event_at: datetime = Field(description="When the member's first event happened.")
    tenure_days: int = Field(ge=0, description="Whole days from the first event to `as_of`.")
    segment: Segment = Field(description=_SEGMENTS)
    in_top: bool = Field(description="Whether the member is in the top share of members by value (the rules'"
                                     " `segments.top_share`): some value, and at least `top_value_min`.")
    top_value_min: str | None = Field(description="The least value in the top share (ties at the edge all in);"
                                                  " null while fewer members than its places have any value. The"
                                                  " edge is recomputed at most every LEDGER_SEGMENTS_TOP_CACHE_S"
                                                  f" seconds. {_MONEY}")
    members: int = Field(ge=1, description="Members the top share is of.")
    position: int = Field(description="The read models include every event up to this position.")


def _thresholds(rules: SegmentRules) -> SegmentThresholds:
    return SegmentThresholds(currency=rules.currency, window_months=rules.window_months, value_min=str(rules.value_min),
                             bookings_min=rules.bookings_min, tenure_days_min=rules.tenure_days_min,
                             top_share=float(rules.top_share))


def _share(part: Decimal | int, whole: Decimal | int) -> float:
    return round(float(Decimal(part) / Decimal(whole)), 6) if whole else 0.0


@router.get("/segments", operation_id="getSegments", response_model=SegmentsView, responses=_errors(),
            tags=["reports"])
async def segments(container: ContainerDep, _: Annotated[ApiKey, require(Permission.reports)]) -> SegmentsView:
    """Members, value and shares per customer value segment now, and the top share of members by value with the
    share of value they bring (the 80/20 view); the thresholds are the programme rules' `segments`."""
    rules = container.rules.segments
    o = await segments_overview(container.pool, container.clock(), rules)
    return SegmentsView(
        as_of=o.now, window_start=o.window_start, thresholds=_thresholds(rules), members=o.members, value=str(o.value),
        segments=[SegmentSummary(segment=t.segment, members=t.members, member_share=_share(t.members, o.members),
                                 value=str(t.value), value_share=_share(t.value, o.value)) for t in o.segments],
        top=TopShare(members=o.top_members, value=str(o.top_value), value_share=_share(o.top_value, o.value)),
        position=o.position,
    )


class _TopEdgeCache:
    """The top share's edge, kept for `ttl_s`: finding it sums every member's window
    (a third of a second at 100,000 members), a member's own window is one index range."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.lock = asyncio.Lock()  # one computation at a time: the others wait for its answer
        self.edge: TopEdge | None = None
        self.found_at = 0.0

    async def get(self, container: Container, rules: SegmentRules) -> TopEdge | None:
        if self.ttl_s == 0:
            return None  # off: the query finds it for each read
        async with self.lock:
            if self.edge is None or time.monotonic() - self.found_at >= self.ttl_s:
                self.edge = await top_edge(container.pool, container.clock(), rules)
                self.found_at = time.monotonic()
            return self.edge


def _top_cache(container: Container) -> _TopEdgeCache:
    cache = container.extras.get("segments_top_edge")
    if not isinstance(cache, _TopEdgeCache):
        cache = container.extras["segments_top_edge"] = _TopEdgeCache(container.settings.segments_top_cache_s)
    return cache


@router.get("/members/{member_id}/segment", operation_id="getMemberSegment", response_model=MemberSegmentView,
            responses=_errors(404, 409), tags=["members"])
async def member(member_id: Member, container: ContainerDep,
                 _: Annotated[ApiKey, require(Permission.read_members)],
                 min_position: MinPosition = None) -> MemberSegmentView:
    """The member's value (spend in the window), bookings, tenure, segment, and whether they are in the top share
    by value, now."""
    if min_position is not None:
        await wait_for_position(container, min_position, REPORTS)
    rules = container.rules.segments
    if not await container.pool.fetchval("SELECT 1 FROM segment_members WHERE member_id = $1", member_id):
        raise MemberNotFound(member_id)  # before the top's edge, which may sum every member's window
    top = await _top_cache(container).get(container, rules)
    found = await member_segment(container.pool, member_id, container.clock(), rules, top)
    if found is None:
        raise MemberNotFound(member_id)
    return MemberSegmentView(
        member_id=member_id, as_of=found.now, window_start=found.window_start, currency=rules.currency,
        value=str(found.value), bookings=found.bookings, first_event_at=found.first_at,
        tenure_days=(found.now - found.first_at).days, segment=found.segment, in_top=found.in_top,
        top_value_min=str(found.top.value_min) if found.top.value_min is not None else None,
        members=found.top.members, position=found.position,
    )
