"""The /v1/reports routes for finance and auditors: outstanding points (the liability,
valued at the rules' cost per point) and the points moved over a period (the activity).
Both are answered from the report read models (`projections.reports`), as JSON, or as
CSV for `Accept: text/csv` (the columns of each are named in `*_CSV_COLUMNS`)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ledger.ingest.schema import OccurredAt
from ledger.keys import ApiKey, Permission
from projections import report_queries
from projections.reports import KINDS
from projections.models import REPORTS

from .deps import ContainerDep, MinPosition, SingleQueryValues, require, wait_for_position
from .instants import in_the_past
from .problems import ApiProblem
from .routes import _errors

router = APIRouter(prefix="/v1/reports", dependencies=[SingleQueryValues], tags=["reports"])
_REPORTS = require(Permission.reports)

LIABILITY_CSV_COLUMNS = ("status", "expiry_month", "tier", "points", "value", "currency")
ACTIVITY_CSV_COLUMNS = ("period", "kind", "product", "source", "points")
DAYS_MAX = {"day": 366, "month": 3_660}  # the longest span of each granularity (a year; ten years)
CSV = "text/csv"
_CSV_RESPONSE = {"description": "The same report as CSV (header row first), for `Accept: text/csv`.",
                 "schema": {"type": "string"}}


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class LiabilityLine(BaseModel):
    model_config = _example({"status": "active", "expiry_month": "2028-05", "tier": "gold", "points": 12000,
                             "value": "120.00"})
    status: Literal["active", "pending"]
    expiry_month: str | None = Field(description="YYYY-MM (UTC) of the lots' date; null while pending.")
    tier: str
    points: int
    value: str = Field(description="points × cost_per_point, a decimal string in `currency`.")


class LiabilityByMonth(BaseModel):
    model_config = _example({"status": "active", "expiry_month": "2028-05", "points": 12000, "value": "120.00"})
    status: Literal["active", "pending"]
    expiry_month: str | None
    points: int
    value: str


class LiabilityByTier(BaseModel):
    model_config = _example({"tier": "gold", "active": 12000, "pending": 800, "points": 12800, "value": "128.00"})
    tier: str
    active: int
    pending: int
    points: int
    value: str


class LiabilityTotals(BaseModel):
    model_config = _example({"active": 12000, "pending": 800, "points": 12800, "value": "128.00"})
    active: int
    pending: int
    points: int
    value: str


class LiabilityReport(BaseModel):
    model_config = _example({
        "as_of": "2026-06-30T23:59:59Z", "position": 1042, "currency": "EUR", "cost_per_point": "0.01",
        "totals": {"active": 12000, "pending": 800, "points": 12800, "value": "128.00"},
        "by_expiry_month": [{"status": "active", "expiry_month": "2028-05", "points": 12000, "value": "120.00"},
                            {"status": "pending", "expiry_month": None, "points": 800, "value": "8.00"}],
        "by_tier": [{"tier": "gold", "active": 12000, "pending": 800, "points": 12800, "value": "128.00"}],
        "lines": [{"status": "active", "expiry_month": "2028-05", "tier": "gold", "points": 12000, "value": "120.00"},
                  {"status": "pending", "expiry_month": None, "tier": "gold", "points": 800, "value": "8.00"}],
    })
    as_of: datetime
    position: int = Field(description="The last event the read models include.")
    currency: str
    cost_per_point: str
    totals: LiabilityTotals
    by_expiry_month: list[LiabilityByMonth]
    by_tier: list[LiabilityByTier]
    lines: list[LiabilityLine] = Field(description="By status, expiry month and tier: the CSV's rows.")


class ActivityLine(BaseModel):
    model_config = _example({"period": "2026-06-01", "kind": "earned", "product": "flight",
                             "source": "base:flight:EUR", "points": 5200})
    period: str = Field(description="YYYY-MM-DD (day) or YYYY-MM (month), in UTC.")
    kind: str
    product: str | None = Field(description="The booking's product, the reward kind of a redemption; null: none.")
    source: str
    points: int


class ActivityReport(BaseModel):
    model_config = _example({
        "from": "2026-06-01T00:00:00Z", "to": "2026-07-01T00:00:00Z", "granularity": "month",
        "first_day": "2026-06-01", "last_day": "2026-06-30", "position": 1042,
        "totals": {"earned": 5200, "redeemed": 2500},
        "lines": [{"period": "2026-06", "kind": "earned", "product": "flight", "source": "base:flight:EUR",
                   "points": 5200},
                  {"period": "2026-06", "kind": "redeemed", "product": "hotel_discount", "source": "redemption",
                   "points": 2500}],
    })
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Literal["day", "month"]
    first_day: str | None = Field(description="The first UTC day counted; null: no whole day in the span.")
    last_day: str | None
    position: int
    totals: dict[str, int] = Field(description="Points by kind over the period, every kind listed.")
    lines: list[ActivityLine]


def _wants_csv(request: Request) -> bool:
    return CSV in request.headers.get("accept", "").lower()


def _csv(columns: tuple[str, ...], rows: list[tuple]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return Response(out.getvalue(), media_type=f"{CSV}; charset=utf-8")


def _value(points: int, cost: Decimal) -> str:
    return format(points * cost, "f")


@router.get("/liability", operation_id="getLiabilityReport", response_model=LiabilityReport,
            responses={200: {"content": {CSV: _CSV_RESPONSE}}, **_errors(409)})
async def liability(
    request: Request, container: ContainerDep, _: Annotated[ApiKey, _REPORTS],
    as_of: Annotated[OccurredAt | None, Query(description="RFC 3339 with an offset; default now.")] = None,
    min_position: MinPosition = None,
) -> Any:
    """Outstanding points (pending and active, on the lots, held ones included) as of an
    instant, by expiry month and by tier, valued at the `cost_per_point` of the rules in force then. CSV
    columns: status, expiry_month, tier, points, value, currency."""
    await wait_for_position(container, min_position, REPORTS)
    # A later instant is refused (422), as for a balance: its answer would change as events come in.
    at = container.clock() if as_of is None else in_the_past(container, "as_of", as_of)
    # Valued at the rules in force at the instant, as the what-if liability is at `to`: a
    # version published since, with another cost per point, does not change a past answer.
    rules = container.book.at(at)
    report = await report_queries.liability(container.pool, at)
    cost, currency = rules.cost_per_point, rules.programme_currency
    if _wants_csv(request):
        return _csv(LIABILITY_CSV_COLUMNS, [(s, m, t, p, _value(p, cost), currency) for s, m, t, p in report.rows])
    months: dict[tuple[str, str], int] = {}
    tiers: dict[str, list[int]] = {t.name: [0, 0] for t in rules.tiers}
    for status, month, tier, points in report.rows:
        months[(status, month)] = months.get((status, month), 0) + points
        tiers.setdefault(tier, [0, 0])[status == "pending"] += points
    active = sum(p for s, _, _, p in report.rows if s == "active")
    pending = sum(p for s, _, _, p in report.rows if s == "pending")
    return LiabilityReport(
        as_of=at, position=report.position, currency=currency, cost_per_point=format(cost, "f"),
        totals=LiabilityTotals(active=active, pending=pending, points=active + pending,
                               value=_value(active + pending, cost)),
        by_expiry_month=[LiabilityByMonth(status=s, expiry_month=m or None, points=p, value=_value(p, cost))
                         for (s, m), p in sorted(months.items())],
        by_tier=[LiabilityByTier(tier=t, active=a, pending=p, points=a + p, value=_value(a + p, cost))
                 for t, (a, p) in tiers.items()],
        lines=[LiabilityLine(status=s, expiry_month=m or None, tier=t, points=p, value=_value(p, cost))
               for s, m, t, p in report.rows],
    )


def _invalid(field: str, message: str) -> ApiProblem:
    return ApiProblem(422, "Invalid request", f"Invalid value for: {field}.",
                      errors=[{"field": field, "message": message, "type": "value_error"}])


@router.get("/activity", operation_id="getActivityReport", response_model=ActivityReport,
            response_model_by_alias=True, responses={200: {"content": {CSV: _CSV_RESPONSE}}, **_errors(409)})
async def activity(
    request: Request, container: ContainerDep, _: Annotated[ApiKey, _REPORTS],
    from_: Annotated[OccurredAt, Query(alias="from", description="RFC 3339 with an offset: the span's start.")],
    to: Annotated[OccurredAt, Query(description="RFC 3339 with an offset, after `from`: the span's end"
                                                " (exclusive); at most 366 days after `from` by day,"
                                                " 3,660 by month.")],
    granularity: Annotated[Literal["day", "month"], Query(description="One row per UTC day or month.")] = "day",
    min_position: MinPosition = None,
) -> Any:
    """Points issued (earned on bookings, by rule), activated, redeemed, expired
    (breakage), adjusted, clawed back, transferred and settled against debts, by day or
    month, product and source. Counts the whole UTC days whose midnight is in
    [`from`, `to`). CSV columns: period, kind, product, source, points."""
    if from_ >= to:
        raise _invalid("to", "must be after `from`")
    if to - from_ > timedelta(days=DAYS_MAX[granularity]):
        raise _invalid("to", f"must be at most {DAYS_MAX[granularity]} days after `from` at {granularity} granularity")
    await wait_for_position(container, min_position, REPORTS)
    first, end = report_queries.whole_days(from_, to)
    report = await report_queries.activity(container.pool, first, end, monthly=granularity == "month")
    if report.truncated:
        raise _invalid("to", f"the report has more than {report_queries.ACTIVITY_ROWS_MAX} rows; ask for a shorter"
                             " span or by month")
    if _wants_csv(request):
        return _csv(ACTIVITY_CSV_COLUMNS, report.rows)
    totals = dict.fromkeys(KINDS, 0)
    for _, kind, _, _, points in report.rows:
        totals[kind] = totals.get(kind, 0) + points
    some = first < end
    return ActivityReport.model_validate({
        "from": from_, "to": to, "granularity": granularity,
        "first_day": first.isoformat() if some else None,
        "last_day": (end - timedelta(days=1)).isoformat() if some else None,
        "position": report.position, "totals": totals,
        "lines": [ActivityLine(period=p, kind=k, product=pr or None, source=s, points=n)
                  for p, k, pr, s, n in report.rows],
    })
