"""Dependencies shared by the routes: the container, the caller's key, waits."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Annotated, Any

import annotated_types
from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from ledger.bootstrap import Container
from ledger.domain import MemberMerged
from ledger.keys import WHAT, ApiKey, Permission, authenticate
from ledger.ingest.schema import Identifier, id_pattern
from projections.models import MEMBERS, Group

from .access_log import KEY_NAME_STATE
from .problems import ApiProblem

_KEY_CACHE_S = 5.0  # how long a checked key is trusted; also the delay before a revocation bites
_KEY_CACHE_MAX = 10_000


async def get_container(request: Request) -> Container:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off on
    # every request (a fifth of the server's time in the closed-loop HTTP bench).
    return request.app.state.container  # type: ignore[no-any-return]


ContainerDep = Annotated[Container, Depends(get_container)]


_bearer = HTTPBearer(auto_error=False, description="An API key from `ledger keys create`.")


async def _caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    if credentials is None:
        raise ApiProblem(401, "Unauthorized", "Send an API key as 'Authorization: Bearer <key>'.",
                         {"WWW-Authenticate": "Bearer"})
    token = credentials.credentials.strip()
    cache: dict[str, tuple[float, ApiKey]] = request.app.state.key_cache
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and now - hit[0] < _KEY_CACHE_S:
        return hit[1]
    key = await authenticate(request.app.state.container.pool, token)
    if key is None:
        cache.pop(token, None)
        raise ApiProblem(401, "Unauthorized", "The API key is unknown or revoked.", {"WWW-Authenticate": "Bearer"})
    if len(cache) >= _KEY_CACHE_MAX:
        cache.clear()
    cache[token] = (now, key)
    return key


def require(permission: Permission):  # type: ignore[no-untyped-def]
    # One dependency with the bearer scheme as its only sub-dependency (which puts it in
    # the OpenAPI document): FastAPI solves each dependency of each request in Python, and
    # the key check had been three (the scheme, the container, the caller).
    async def check(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
        key = await _caller(request, credentials)
        setattr(request.state, KEY_NAME_STATE, key.name)  # for the access log
        if not key.can(permission):
            raise ApiProblem(403, "Forbidden", f"A key with the role {key.role.value!r} may not {WHAT[permission]}.")
        return key

    return Depends(check)


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def _integer_text(value: Any) -> Any:
    # A query string carries an integer as its decimal digits; the parser alone would also
    # take " 4", "+4", "007", "4_000" and "4.0", none of which the schema's integer is.
    if isinstance(value, str) and _INTEGER.fullmatch(value) is None:
        raise ValueError("must be an integer written in decimal digits, such as 42")
    return value


def QueryInt(ge: int, le: int) -> Any:  # noqa: N802 - a type alias factory
    # The bounds go on the int itself, before the text check: put after it (as Query's
    # ge/le would be), pydantic publishes them as "ge"/"le", which JSON Schema ignores.
    return Annotated[int, annotated_types.Interval(ge=ge, le=le), BeforeValidator(_integer_text)]


def _boolean_text(value: Any) -> Any:
    # The schema's boolean is written true or false; not also yes, on, 1 or t.
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


QueryBool = Annotated[bool, BeforeValidator(_boolean_text)]


async def _single_values(request: Request) -> None:
    """Every query parameter of these routes is one value: a repeated one is refused, not
    silently read as its last occurrence."""
    params = request.query_params
    repeated = sorted({name for name in params.keys() if len(params.getlist(name)) > 1})
    if repeated:
        raise ApiProblem(422, "Invalid request", f"Invalid value for: {', '.join(repeated)}.", errors=[
            {"field": name, "message": "must be given at most once", "type": "repeated"} for name in repeated])


SingleQueryValues = Depends(_single_values)
MemberPath = Identifier(64)
IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
           description="Unique per logical request; a retry with the same key returns the first result."),
]
MinPosition = Annotated[
    QueryInt(0, 2**62) | None,
    Query(description="Wait (bounded) until the read models include this position (a position"
                                      " a write returned; one beyond the last event written is a 409)."),
]


async def wait_for_position(container: Container, min_position: int | None, group: Group = MEMBERS) -> int:
    """The position `group`'s read models are at, once it is at least `min_position`
    (read-your-writes)."""
    deadline = time.monotonic() + container.settings.read_wait_s_max
    delay = 0.002
    while True:
        position = int(await container.pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = $1", group.name))
        if min_position is None or position >= min_position:
            return position
        if delay == 0.002:
            head = await container.pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
            if min_position > head:
                # Well formed (the schema cannot know the head), but no write has produced
                # it yet: a conflict with the ledger's state, not an invalid request. Waiting
                # would only end in a 503 that invites retrying a position that may never come.
                raise ApiProblem(
                    409, "Position not written",
                    f"min_position {min_position} is beyond the last event written to the ledger ({head});"
                    " pass a position a write returned.", head_position=head,
                )
        if time.monotonic() >= deadline:
            raise ApiProblem(
                503, "Read model behind",
                f"The read models are at position {position}, not yet {min_position}; retry shortly.",
                {"Retry-After": "1"}, position=position,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


# Members (M2)

_MEMBER_ID = re.compile(id_pattern(64))


async def _not_merged(request: Request, container: ContainerDep) -> None:
    """A read of a merged member answers 404 with `merged_into`, but a read as of an
    instant before the merge (`as_of`), which is history the duplicate still has.

    FastAPI solves a route's own dependencies before its parameters, the key check
    among them, so this one checks the key first: a caller with no key or an unknown
    one gets the 401, and a key that may read no member the route's 403, never the
    survivor's id."""
    member_id = request.path_params.get("member_id")
    # An id outside the grammar is the route's validation's to refuse (422), and never
    # looked up: PostgreSQL refuses a NUL in text.
    if member_id is None or _MEMBER_ID.fullmatch(member_id) is None:
        return
    key = await _caller(request, await _bearer(request))
    if not (key.can(Permission.read_members) or key.can(Permission.audit)):
        return  # the route's own key check refuses it
    row = await container.pool.fetchrow("SELECT merged_into, merged_at FROM member_redirects WHERE member_id = $1",
                                        member_id)
    if row is None:
        return
    as_of = request.query_params.get("as_of")
    if as_of is not None:
        try:
            if datetime.fromisoformat(as_of.replace("Z", "+00:00")) < row["merged_at"]:
                return
        except (ValueError, TypeError):
            pass  # the route's own validation answers for it
    raise MemberMerged(member_id, row["merged_into"])


NotMerged = Depends(_not_merged)
