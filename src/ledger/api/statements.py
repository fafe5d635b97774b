"""The /v1 routes an auditor reconciles with: a member's statement between two instants,
and a check of the member's hash chain. Reads only: each asks one query and shapes it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.domain import MemberNotFound
from ledger.domain.asof import CREDITS, DEBITS
from ledger.keys import ApiKey, Permission
from projections.asof import read_statement, verify_member

from .deps import ContainerDep, MemberPath, NotMerged, SingleQueryValues, require
from .instants import INSTANT_DESCRIPTION, Instant, in_the_past, invalid
from .routes import _errors

router = APIRouter(prefix="/v1", dependencies=[SingleQueryValues])
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
STATEMENT_DAYS_MAX = 3_660  # ten years and their leap days: a statement's span is bounded


def _examples(*examples: dict[str, object]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class StatementCredits(BaseModel):
    model_config = _examples({"earned": 2600, "adjusted": 750, "transferred_in": 0, "reversed": 0, "released": 400,
                              "other": 0})
    earned: int = Field(description="Bookings' points as they became available (completed, activated, or raised by"
                                    " an amendment); by rule in `earned_by_source`.")
    adjusted: int = Field(description="Credits by customer service.")
    transferred_in: int = Field(description="Points received from other members.")
    reversed: int = Field(description="Points returned by reversals of redemptions.")
    released: int = Field(description="Points back from holds released or timed out.")
    other: int = Field(description="Any other rise of the balance (none is known; here so the sums always hold).")


class StatementDebits(BaseModel):
    model_config = _examples({"redeemed": 2100, "held": 400, "expired": 0, "adjusted": 0, "transferred_out": 0,
                              "clawed_back": 0, "other": 0})
    redeemed: int = Field(description="Redemptions (own and household), less nothing: reversals are credits.")
    held: int = Field(description="Points set aside by holds at checkout (a capture spends them: no second debit).")
    expired: int = Field(description="Points on lots reaching their date in the span, at their date (whether or not"
                                     " the expiry job had run), and what came back to a lot past its date.")
    adjusted: int = Field(description="Debits by customer service.")
    transferred_out: int = Field(description="Points sent to other members.")
    clawed_back: int = Field(description="Taken back by cancellations, refunds and amendments of bookings, including"
                                         " a shortfall debited as a negative balance.")
    other: int = Field(description="Any other fall of the balance (none is known; here so the sums always hold).")


class StatementView(BaseModel):
    model_config = _examples({
        "member_id": "M-1001", "from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z",
        "opening_balance": 100, "closing_balance": 1350,
        "credits": {"earned": 2600, "adjusted": 750, "transferred_in": 0, "reversed": 0, "released": 400,
                    "other": 0},
        "debits": {"redeemed": 2100, "held": 400, "expired": 0, "adjusted": 0, "transferred_out": 0,
                   "clawed_back": 0, "other": 0},
        "earned_by_source": {"base:flight:EUR": 2100, "first_booking_bonus": 500},
        "total_credits": 3750, "total_debits": 2500, "opening_pending": 0, "closing_pending": 0,
        "opening_held": 0, "closing_held": 0, "events": 5,
    })
    member_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    opening_balance: int = Field(description="Available as of `from` (the balance route's `available` with"
                                             " `as_of=from`; 0 for a member who did not exist yet).")
    closing_balance: int = Field(description="Available as of `to`: opening_balance + total_credits - total_debits.")
    credits: StatementCredits
    debits: StatementDebits
    earned_by_source: dict[str, int] = Field(description="`credits.earned` by the rule labels of the bookings'"
                                                         " breakdowns (base rate, tier bonus, each promotion,"
                                                         " first booking); they add up to it.")
    total_credits: int
    total_debits: int
    opening_pending: int = Field(description="Pending points (not in the balance) as of `from`.")
    closing_pending: int
    opening_held: int = Field(description="Points on open holds (not in the balance) as of `from`.")
    closing_held: int
    events: int = Field(description="The member's events in the span.")


class VerificationView(BaseModel):
    model_config = _examples({"member_id": "M-1001", "events": 12, "ok": True, "broken_at_version": None,
                              "head_hash": "9f2c0e..."})
    member_id: str
    events: int = Field(description="Events in the member's stream, all checked.")
    ok: bool = Field(description="Every event's stored hash is the SHA-256 of its content chained to the one before.")
    broken_at_version: int | None = Field(description="The stream version of the first event that does not verify.")
    head_hash: str = Field(description="The stored hash (hex) of the stream's last event, to compare with an anchor.")


@router.get("/members/{member_id}/statement", operation_id="getStatement", response_model=StatementView,
            dependencies=[NotMerged],
            response_model_by_alias=True, responses=_errors(404), tags=["members"])
async def get_statement(
    member_id: Member, container: ContainerDep, _: Annotated[ApiKey, require(Permission.read_members)],
    start: Annotated[Instant, Query(alias="from", description="The statement's start. " + INSTANT_DESCRIPTION)],
    end: Annotated[Instant, Query(alias="to", description=f"The statement's end, after `from` and at most"
                                                          f" {STATEMENT_DAYS_MAX} days later. " + INSTANT_DESCRIPTION)],
) -> StatementView:
    """The member's available balance as of `from` and as of `to`, and every change
    between them by kind: opening_balance + total_credits - total_debits = closing_balance.
    The as-of rule is the balance route's."""
    if end <= start:
        raise invalid("to", "must be later than from", "span")
    if end - start > timedelta(days=STATEMENT_DAYS_MAX):
        raise invalid("to", f"must be at most {STATEMENT_DAYS_MAX} days after from", "span")
    in_the_past(container, "to", end)
    s = await read_statement(container.pool, member_id, start, end)
    if s is None or not s.closed:
        raise MemberNotFound(member_id)
    credits, debits = sum(s.credits.values()), sum(s.debits.values())
    return StatementView.model_validate({
        "member_id": member_id, "from": start, "to": end, "opening_balance": s.opening,
        "closing_balance": s.closing, "credits": {name: s.credits[name] for name in CREDITS},
        "debits": {name: s.debits[name] for name in DEBITS}, "earned_by_source": s.earned_by_source,
        "total_credits": credits, "total_debits": debits, "opening_pending": s.opening_pending,
        "closing_pending": s.closing_pending, "opening_held": s.opening_held, "closing_held": s.closing_held,
        "events": s.events,
    })


@router.get("/members/{member_id}/verification", operation_id="getVerification", response_model=VerificationView,
            dependencies=[NotMerged],
            responses=_errors(404), tags=["audit"])
async def get_verification(
    member_id: Member, container: ContainerDep, _: Annotated[ApiKey, require(Permission.audit)],
) -> VerificationView:
    """Recompute the member's hash chain from its events as stored and say where it
    breaks, if it does (auditor and admin)."""
    v = await verify_member(container.store, member_id)
    if v is None:
        raise MemberNotFound(member_id)
    return VerificationView(member_id=member_id, events=v.events, ok=v.ok, broken_at_version=v.broken_at_version,
                            head_hash=v.head_hash.hex())
