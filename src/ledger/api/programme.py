"""The /v1/programme routes: rule set versions and exchange-rate sets, published as data.

Admins publish (`programme:write`); admins, auditors and support read
(`programme:read`). What is published is never changed: a new version or rate set
takes effect from its `effective_from` (later than now), and every process uses it within
LEDGER_RULES_REFRESH_S (`ledger.rules_refresh`); this process at once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field

from ledger.bootstrap import Container
from ledger.domain import NotFound, ProgramRules
from ledger.keys import ApiKey, Permission
from ledger.rules_refresh import refresh_once
from ledger.rulesets import VERSIONS_PAGE_MAX, FxRateSet, RuleSet, Version
from ledger.store.programme import PublishRefused

from .deps import ContainerDep, QueryInt, SingleQueryValues, require
from .problems import ApiProblem
from .routes import _errors

router = APIRouter(prefix="/v1/programme", dependencies=[SingleQueryValues], tags=["programme"])

At = Annotated[AwareDatetime | None, Query(description="RFC 3339 instant; unset: now.")]
Reader = Annotated[ApiKey, require(Permission.read_programme)]
Publisher = Annotated[ApiKey, require(Permission.publish_programme)]


class PublishedVersion(BaseModel):
    version: str
    effective_from: datetime
    published_at: datetime
    published_by: str = Field(description="The name of the API key that published it.")


class VersionsPage(BaseModel):
    versions: list[PublishedVersion] = Field(description="Newest publication first.")
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last one.")


class PublishedRates(FxRateSet):
    base: str  # type: ignore[assignment]
    published_at: datetime
    published_by: str


def _refused(exc: PublishRefused) -> ApiProblem:
    # A version name or a start taken is a conflict with what exists; a start in the past
    # is a value the request may not carry.
    status = 409 if "already" in str(exc) else 422
    return ApiProblem(status, "Conflict" if status == 409 else "Invalid request", str(exc),
                      errors=[{"field": exc.field, "message": str(exc), "type": "publish_refused"}])


async def _after_publish(container: Container) -> None:
    """This process uses what it published at once, not after the next poll."""
    await refresh_once(container)


@router.post("/rules", operation_id="publishRules", status_code=201, response_model=PublishedVersion,
             responses=_errors(409))
async def publish_rules(body: RuleSet, response: Response, container: ContainerDep, key: Publisher) -> PublishedVersion:
    """Publish a whole rule set as a new version, in force from `effective_from` (later than now) until the next
    version's. 409 for a version name or a start that exists; 422 names every wrong field."""
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
        raise ApiProblem(422, "Invalid request", f"The rates must be against the programme currency, {base}.",
                         errors=[{"field": "base", "message": f"must be {base}", "type": "value_error"}])
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
