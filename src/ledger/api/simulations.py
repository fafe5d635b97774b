"""The /v1/programme/simulations routes: what-if replays of a draft rule set over a window
of the history, beside what was actually issued (`ledger.simulations`). Admins ask for
them (`simulations:write`); admins and auditors read them (`simulations:read`). A
simulation writes no event: it reads the event log and keeps its sums in its own row."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ledger.domain import NotFound, ProgramRules
from ledger.keys import ApiKey, Permission
from ledger.rulesets import Instant, RuleSet
from ledger.simulations import LIST_PAGE_MAX, KeyReused, QueueFull, Simulation, SimulationStore

from .deps import ContainerDep, IdempotencyKey, QueryInt, SingleQueryValues, require
from .problems import ApiProblem
from .programme import _EveryMethodRoute
from .routes import _errors
from .schemas import _examples

WINDOW_DAYS_MAX = 366

router = APIRouter(prefix="/v1/programme/simulations", dependencies=[SingleQueryValues], tags=["programme"],
                   route_class=_EveryMethodRoute)

Asker = Annotated[ApiKey, require(Permission.simulate)]
Reader = Annotated[ApiKey, require(Permission.read_simulations)]
SimulationId = Annotated[str, Path(pattern=r"^sim-[0-9a-f-]{36}$", max_length=40,
                                   description="The `simulation_id` POST answered.")]

_RULES_EXAMPLE = {
    "version": "draft-2027", "effective_from": "2027-01-01T00:00:00Z", "programme_currency": "EUR",
    "earn_rates": {"flight": {"EUR": "5"}, "hotel": {"EUR": "20"}},
    "tiers": [{"name": "member", "threshold": 0, "multiplier": "1"}], "first_booking_bonus": 500, "expiry_months": 24,
}


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"rules": _RULES_EXAMPLE, "from": "2026-01-01T00:00:00Z", "to": "2026-07-01T00:00:00Z"}]})

    rules: RuleSet = Field(description="The draft rule set, in the shape `publishRules` takes (its `effective_from` is"
                                       " not used: the draft prices every earn of the window).")
    from_: Instant = Field(alias="from", description="Start of the window (inclusive), by each earn's occurred_at.")
    to: Instant = Field(description=f"End of the window (exclusive): after `from`, by at most {WINDOW_DAYS_MAX} days"
                                    " (else 422).")


class SimulatedSums(BaseModel):
    model_config = _examples({"actual": 12000, "simulated": 13500, "difference": 1500})
    actual: int
    simulated: int
    difference: int = Field(description="simulated - actual")


class SimulatedProductSums(SimulatedSums):
    model_config = _examples({"product": "hotel", "actual": 12000, "simulated": 13500, "difference": 1500})
    product: str = Field(description="A booking's product; `activity:<type>` or `anniversary` for earn beyond"
                                     " bookings.")


class SimulatedTierSums(SimulatedSums):
    model_config = _examples({"tier": "gold", "actual": 12000, "simulated": 13500, "difference": 1500})
    tier: str = Field(description="The tier the earn recorded; `none` for an earn that records none.")


class SimulatedRuleSums(SimulatedSums):
    model_config = _examples({"rule": "base:hotel:EUR", "actual": 12000, "simulated": 13500, "difference": 1500})
    rule: str = Field(description="A rule's label in the earns' breakdowns.")


class SimulatedLiability(SimulatedSums):
    model_config = _examples({"actual": 12000, "simulated": 13500, "difference": 1500, "currency": "EUR",
                              "actual_value": "120.00", "simulated_value": "135.00", "difference_value": "15.00"})
    currency: str
    actual_value: str = Field(description="At the cost_per_point of the rules in force at `to`.")
    simulated_value: str = Field(description="At the draft's cost_per_point.")
    difference_value: str


class SimulationReplayFigures(BaseModel):
    model_config = _examples({"seconds": 1.2, "earns_per_s": 110000, "loop_block_ms_max": 4.1, "page_events": 5000,
                              "events_read": 132000, "read_s": 0.5, "price_s": 0.6})
    seconds: float
    earns_per_s: int
    loop_block_ms_max: float = Field(description="The longest the replay held the event loop between two yields.")
    page_events: int
    events_read: int
    read_s: float = Field(description="Of `seconds`, waiting for and decoding the pages of earns.")
    price_s: float = Field(description="Of `seconds`, pricing the earns under the draft and adding them up.")


class SimulationResult(BaseModel):
    model_config = _examples({
        "earns": 10, "not_earned": 0, "take_backs": 1,
        "earned": {"actual": 12000, "simulated": 13500, "difference": 1500},
        "taken_back": {"actual": -100, "simulated": -110, "difference": -10},
        "net": {"actual": 11900, "simulated": 13390, "difference": 1490},
        "by_product": [{"product": "hotel", "actual": 12000, "simulated": 13500, "difference": 1500}],
        "by_tier": [{"tier": "gold", "actual": 12000, "simulated": 13500, "difference": 1500}],
        "by_rule": [{"rule": "base:hotel:EUR", "actual": 12000, "simulated": 13500, "difference": 1500}],
        "liability": {"actual": 11900, "simulated": 13390, "difference": 1490, "currency": "EUR",
                      "actual_value": "119.00", "simulated_value": "133.90", "difference_value": "14.90"},
        "replay": {"seconds": 0.1, "earns_per_s": 100, "loop_block_ms_max": 0.2, "page_events": 5000,
                   "events_read": 11, "read_s": 0.05, "price_s": 0.04}})
    earns: int = Field(description="Earns replayed: bookings, activities and anniversaries of the window.")
    not_earned: int = Field(description="Bookings the draft earns nothing on (a product or currency it drops).")
    take_backs: int = Field(description="Cancellations, refunds and amendments of the window's bookings.")
    earned: SimulatedSums = Field(description="Points the window's earns issued, and would have under the draft.")
    taken_back: SimulatedSums = Field(description="What the take-backs took back (negative), scaled to the draft's earn.")
    net: SimulatedSums
    by_product: list[SimulatedProductSums] = Field(description="Earned, by product.")
    by_tier: list[SimulatedTierSums] = Field(description="Earned, by the tier the earn recorded.")
    by_rule: list[SimulatedRuleSums] = Field(description="Earned, by rule of the breakdowns.")
    liability: SimulatedLiability = Field(description="What the window's earns leave outstanding at `to` (net of take-backs,"
                                             " expired lots left out; redemptions as they were).")
    replay: SimulationReplayFigures


class SimulationProgress(BaseModel):
    model_config = _examples({"position": 5000, "head": 10000, "events_read": 4200, "fraction": 0.5})
    position: int = Field(description="The position of the event log read up to.")
    head: int | None = Field(description="The last position when the run started: it reads up to there.")
    events_read: int = Field(description="Earns and take-backs of the window read so far.")
    fraction: float


_VIEW_EXAMPLE: dict[str, Any] = {
    "simulation_id": "sim-0b6f1f5e-6d0a-4b8e-9d2f-1f1c9d2a7e11", "status": "queued", "rules_version": "draft-2027",
    "from": "2026-01-01T00:00:00Z", "to": "2026-07-01T00:00:00Z", "requested_by": "marketing-admin",
    "attempts": 0, "progress": {"position": 0, "head": None, "events_read": 0, "fraction": 0.0},
    "result": None, "error": None, "created_at": "2026-11-30T09:00:00Z", "started_at": None,
    "finished_at": None}


class SimulationView(BaseModel):
    model_config = _examples(_VIEW_EXAMPLE)
    model_config["populate_by_name"] = True
    simulation_id: str
    status: str = Field(description="queued, running, done or failed.")
    rules_version: str = Field(description="The draft's `version`.")
    from_: datetime = Field(alias="from")
    to: datetime
    requested_by: str = Field(description="The name of the API key that asked for it.")
    attempts: int = Field(description="Runs started: a run cut short by a stopped process starts over.")
    progress: SimulationProgress
    result: SimulationResult | None = Field(description="Once done.")
    error: str | None = Field(description="Once failed: why.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SimulationDetail(SimulationView):
    model_config = _examples({**_VIEW_EXAMPLE, "rules": _RULES_EXAMPLE})
    model_config["populate_by_name"] = True
    rules: dict[str, Any] = Field(description="The draft rule set, as asked for.")


class SimulationsPage(BaseModel):
    model_config = _examples({"simulations": [], "next_before": None})
    simulations: list[SimulationView] = Field(description="Newest first, without their rule sets.")
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last one.")


def _store(container: Any) -> SimulationStore:
    return SimulationStore(container.pool)


def _view(sim: Simulation, cls: type[SimulationView] = SimulationView) -> Any:
    request = sim.request
    fraction = 1.0 if sim.status == "done" else (sim.position / sim.head if sim.head else 0.0)
    fields: dict[str, Any] = {
        "simulation_id": sim.simulation_id, "status": sim.status, "rules_version": request["rules"]["version"],
        "from": request["from"], "to": request["to"], "requested_by": sim.requested_by, "attempts": sim.attempts,
        "progress": SimulationProgress(position=sim.position, head=sim.head, events_read=sim.events_read,
                             fraction=round(fraction, 4)),
        "result": sim.result, "error": sim.error, "created_at": sim.created_at, "started_at": sim.started_at,
        "finished_at": sim.finished_at}
    if cls is SimulationDetail:
        fields["rules"] = request["rules"]
    return cls.model_validate(fields)


def _wrong(field: str, message: str, status: int = 422, kind: str = "value_error") -> ApiProblem:
    return ApiProblem(status, "Invalid request" if status == 422 else "Inconsistent rule set",
                      f"Invalid value for: {field}.", errors=[{"field": field, "message": message, "type": kind}])


@router.post("", operation_id="startSimulation", status_code=202, response_model=SimulationDetail,
             responses={**_errors(409, 429), 200: {
                 "model": SimulationDetail, "description": "A retry with the same Idempotency-Key: that simulation."}})
async def start_simulation(body: SimulationRequest, idempotency_key: IdempotencyKey, response: Response,
                           container: ContainerDep, key: Asker) -> Any:
    """Queue a what-if replay of the window's earns under a draft rule set; 202 with its id and a Location to poll.
    The draft is checked as `publishRules` checks a rule set (422 naming the field; 409 naming each field that does
    not hold together, or a `programme_currency` other than the one in force at `to`); `to` is after `from` by at
    most 366 days (422). A retry with the same Idempotency-Key and
    body answers the same simulation (200); the key with another body is a 409. 429 when
    LEDGER_SIMULATIONS_QUEUED_MAX wait already."""
    if not body.from_ < body.to:
        raise _wrong("to", "must be after from")
    if body.to - body.from_ > timedelta(days=WINDOW_DAYS_MAX):
        raise _wrong("to", f"must be at most {WINDOW_DAYS_MAX} days after from")
    wrong = body.rules.inconsistencies()
    if wrong:
        errors = [{**e, "field": f"rules.{e['field']}"} for e in wrong]
        raise ApiProblem(409, "Inconsistent rule set",
                         f"The rule set does not hold together: {', '.join(e['field'] for e in errors)}.",
                         errors=errors)
    try:
        ProgramRules.from_dict(body.rules.document())  # what the domain checks beyond the schema
    except ValueError as exc:
        raise _wrong("rules", str(exc)) from None
    # The liability values the actual points in the currency of the rules in force at
    # `to`, the simulated ones in the draft's, and subtracts the two: only one currency
    # makes that a difference.
    currency = container.book.at(body.to).programme_currency
    if body.rules.programme_currency != currency:
        raise _wrong("rules.programme_currency", f"must be {currency}, the programme currency in force at `to`: the"
                     " liability's actual and simulated values are compared in it", 409, "currency")
    request = {"rules": body.rules.model_dump(mode="json"), "from": body.from_.isoformat(),
               "to": body.to.isoformat()}
    settings = container.settings
    try:
        sim, created = await _store(container).create(request, f"simulation:{idempotency_key}", key.name,
                                                      settings.simulations_queued_max)
    except KeyReused:
        raise ApiProblem(409, "Idempotency key reused", "The Idempotency-Key asked for another simulation.",
                         field="Idempotency-Key") from None
    except QueueFull:
        raise ApiProblem(429, "Too many simulations queued",
                         f"{settings.simulations_queued_max} simulations wait already; ask again once one has run.",
                         headers={"Retry-After": "10"}) from None
    runner = container.extras.get("simulation_runner")
    if created and runner is not None:
        runner.wake.set()  # type: ignore[attr-defined]
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/v1/programme/simulations/{sim.simulation_id}"
    return _view(sim, SimulationDetail)


@router.get("", operation_id="listSimulations", response_model=SimulationsPage, responses=_errors())
async def list_simulations(container: ContainerDep, _: Reader,
                           limit: Annotated[QueryInt(1, LIST_PAGE_MAX), Query()] = 20,  # type: ignore[valid-type]
                           before: Annotated[QueryInt(1, 2**62), Query(  # type: ignore[valid-type]
                               description="The `next_before` of the page before.")] = None) -> Any:
    """The simulations asked for, newest first, a page at a time."""
    rows = await _store(container).page(limit + 1, before)
    page = rows[:limit]
    return SimulationsPage(simulations=[_view(s) for s in page],
                           next_before=page[-1].seq if len(rows) > limit else None)


@router.get("/{simulation_id}", operation_id="getSimulation", response_model=SimulationDetail,
            responses=_errors(404))
async def get_simulation(simulation_id: SimulationId, container: ContainerDep, _: Reader) -> Any:
    """A simulation's status and progress, and once done the points difference in total, by product, tier and rule,
    and the change in outstanding liability."""
    sim = await _store(container).get(simulation_id)
    if sim is None:
        raise NotFound(f"No simulation {simulation_id!r}.")
    return _view(sim, SimulationDetail)
