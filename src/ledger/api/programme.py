"""The /v1/programme routes: rule set versions and exchange-rate sets, published as data.

Admins publish (`programme:write`); admins, auditors and support read
(`programme:read`). What is published is never changed: a new version or rate set
takes effect from its `effective_from` (later than now), and every process uses it within
LEDGER_RULES_REFRESH_S (`ledger.rules_refresh`); this process at once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ledger.bootstrap import Container
from ledger.domain import NotFound, ProgramRules
from ledger.keys import ApiKey, Permission
from ledger.rules_refresh import refresh_once
from ledger.rulesets import VERSIONS_PAGE_MAX, FxRateSet, Instant, RuleSet, Version
from ledger.store.programme import PublishRefused

from .deps import ContainerDep, QueryInt, SingleQueryValues, require
from .problems import ApiProblem
from .routes import _errors
from .schemas import _examples

class _EveryMethodRoute(APIRoute):
    """A route whose 405 lists every method its path has in the app (GET and POST of
    /rules, GET and PUT of /fx-rates are two routes each, and Starlette's 405 names only
    the first one's methods in `Allow`, where HTTP wants all of them)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods and "app" in scope:
            allowed = sorted({method for route in scope["app"].routes
                              if isinstance(route, APIRoute) and route.path == self.path for method in route.methods})
            raise StarletteHTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})
        await super().handle(scope, receive, send)


router = APIRouter(prefix="/v1/programme", dependencies=[SingleQueryValues], tags=["programme"],
                   route_class=_EveryMethodRoute)

At = Annotated[Instant | None, Query(description="RFC 3339 instant (2000 to 2099); unset: now.")]
Reader = Annotated[ApiKey, require(Permission.read_programme)]
Publisher = Annotated[ApiKey, require(Permission.publish_programme)]


class PublishedVersion(BaseModel):
    model_config = _examples({"version": "2027.1", "effective_from": "2027-01-01T00:00:00Z",
                              "published_at": "2026-12-01T09:30:00Z", "published_by": "marketing-admin"})
    version: str
    effective_from: datetime
    published_at: datetime
    published_by: str = Field(description="The name of the API key that published it.")


class VersionsPage(BaseModel):
    model_config = _examples({"versions": [{"version": "2027.1", "effective_from": "2027-01-01T00:00:00Z",
                                            "published_at": "2026-12-01T09:30:00Z", "published_by": "marketing-admin"}],
                              "next_before": None})
    versions: list[PublishedVersion] = Field(description="Newest publication first.")
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last one.")


class PublishedRates(FxRateSet):
    model_config = _examples({"effective_from": "2027-01-01T00:00:00Z", "base": "EUR", "rates": {"CNY": "7.8"},
                              "published_at": "2026-12-01T09:30:00Z", "published_by": "finance-admin"})
    base: str  # type: ignore[assignment]
    published_at: datetime
    published_by: str


def _refused(exc: PublishRefused) -> ApiProblem:
    # A version name or a start taken, or a start no longer ahead of now: the request is
    # well formed, what exists (or the clock) refuses it, as for any 409.
    return ApiProblem(409, "Conflict", str(exc), field=exc.field,
                      errors=[{"field": exc.field, "message": str(exc), "type": "publish_refused"}])


async def _after_publish(container: Container) -> None:
    """This process uses what it published at once, not after the next poll."""
    await refresh_once(container)


@router.post("/rules", operation_id="publishRules", status_code=201, response_model=PublishedVersion,
             responses=_errors(409))
async def publish_rules(body: RuleSet, response: Response, container: ContainerDep, key: Publisher) -> PublishedVersion:
    """Publish a whole rule set as a new version, in force from `effective_from` (later than now) until the next
    version's. 422 names every field the schema refuses; 409 names every field of a rule set that does not hold
    together (tiers not starting at 0 or not ascending, a promotion ending before it starts), and is the answer
    for a version name or a start that exists."""
    wrong = body.inconsistencies()
    if wrong:
        fields = ", ".join(e["field"] for e in wrong)
        raise ApiProblem(409, "Inconsistent rule set", f"The rule set does not hold together: {fields}.",
                         errors=wrong)
    try:
        ProgramRules.from_dict(body.document())  # what the domain checks beyond the schema
    except ValueError as exc:
        raise ApiProblem(422, "Invalid request", str(exc), errors=[
            {"field": "body", "message": str(exc), "type": "value_error"}]) from None
    try:
        p = await container.programme.publish_rules(body.document(), body.effective_from, key.name,
                                                       container.clock())
    except PublishRefused as exc:
        raise _refused(exc) from None
    await _after_publish(container)
    response.headers["Location"] = f"/v1/programme/rules/{p.version}"
    return PublishedVersion(version=p.version, effective_from=p.effective_from, published_at=p.published_at,
                            published_by=p.published_by)


@router.get("/rules", operation_id="getRulesInForce", response_model=RuleSet, responses=_errors())
async def rules_in_force(container: ContainerDep, _: Reader, at: At = None) -> RuleSet:
    """The rule set in force now, or at `at`, in exactly the shape `publishRules` takes."""
    v = container.book.version_at(at or container.clock())
    return RuleSet.model_validate({**v.document, "effective_from": v.effective_from})


@router.get("/rules/versions", operation_id="listRuleVersions", response_model=VersionsPage, responses=_errors())
async def rule_versions(container: ContainerDep, _: Reader,
                        limit: Annotated[QueryInt(1, VERSIONS_PAGE_MAX), Query()] = 20,  # type: ignore[valid-type]
                        before: Annotated[QueryInt(1, 2**62), Query(  # type: ignore[valid-type]
                            description="The `next_before` of the page before.")] = None) -> VersionsPage:
    """The published versions, newest publication first, a page at a time."""
    rows = await container.programme.versions(limit + 1, before)
    page = rows[:limit]
    return VersionsPage(
        versions=[PublishedVersion(version=p.version, effective_from=p.effective_from, published_at=p.published_at,
                                   published_by=p.published_by) for p in page],
        next_before=page[-1].id if len(rows) > limit else None,
    )


@router.get("/rules/{version}", operation_id="getRuleVersion", response_model=RuleSet, responses=_errors(404))
async def rule_version(version: Annotated[Version, Path(description="A published version's name.")],
                       container: ContainerDep, _: Reader) -> RuleSet:
    """One published version, in the shape `publishRules` takes."""
    v = container.book.version(version)
    if v is None:
        # Published by another process since this one's last refresh?
        await refresh_once(container)
        v = container.book.version(version)
    if v is None:
        raise NotFound(f"No rules version {version!r} is published.", version=version)
    return RuleSet.model_validate({**v.document, "effective_from": v.effective_from})


@router.put("/fx-rates", operation_id="publishFxRates", status_code=201, response_model=PublishedRates,
            responses=_errors(409))
async def publish_fx_rates(body: FxRateSet, container: ContainerDep, key: Publisher) -> PublishedRates:
    """Publish a set of exchange rates (units of each currency per one unit of the programme currency), in force
    from `effective_from` (later than now) until the next set. A currency left out has no rate from then on."""
    base = container.book.version_at(body.effective_from).rules.programme_currency
    if body.base is not None and body.base != base:
        raise ApiProblem(409, "Conflict", f"The rates must be against the programme currency, {base}.", field="base",
                         errors=[{"field": "base", "message": f"must be {base}", "type": "publish_refused"}])
    try:
        p = await container.programme.publish_rates(dict(body.rates), base, body.effective_from, key.name,
                                                   container.clock())
    except PublishRefused as exc:
        raise _refused(exc) from None
    await _after_publish(container)
    return PublishedRates(effective_from=p.effective_from, base=p.base, rates=p.rates, published_at=p.published_at,
                          published_by=p.published_by)


@router.get("/fx-rates", operation_id="getFxRates", response_model=PublishedRates, responses=_errors(404))
async def fx_rates(container: ContainerDep, _: Reader, at: At = None) -> PublishedRates:
    """The exchange rates in force now, or at `at`."""
    p = await container.programme.rates_at(at or container.clock())
    if p is None:
        raise NotFound("No exchange rates are in force at that instant.")
    return PublishedRates(effective_from=p.effective_from, base=p.base, rates=p.rates, published_at=p.published_at,
                          published_by=p.published_by)
