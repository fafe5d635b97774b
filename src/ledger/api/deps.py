"""Dependencies shared by the routes: the container, the caller's key, waits."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.bootstrap import Container
from ledger.keys import WHAT, ApiKey, Permission, authenticate
from ledger.ingest.schema import Identifier

from .access_log import KEY_NAME_STATE
from .problems import ApiProblem

_KEY_CACHE_S = 5.0  # how long a checked key is trusted; also the delay before a revocation bites
_KEY_CACHE_MAX = 10_000


def get_container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


ContainerDep = Annotated[Container, Depends(get_container)]


_bearer = HTTPBearer(auto_error=False, description="An API key from `ledger keys create`.")


async def _caller(request: Request, container: ContainerDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
    if credentials is None:
        raise ApiProblem(401, "Unauthorized", "Send an API key as 'Authorization: Bearer <key>'.",
                         {"WWW-Authenticate": "Bearer"})
    token = credentials.credentials.strip()
    cache: dict[str, tuple[float, ApiKey]] = request.app.state.key_cache
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and now - hit[0] < _KEY_CACHE_S:
        return hit[1]
    key = await authenticate(container.pool, token)
    if key is None:
        cache.pop(token, None)
        raise ApiProblem(401, "Unauthorized", "The API key is unknown or revoked.", {"WWW-Authenticate": "Bearer"})
    if len(cache) >= _KEY_CACHE_MAX:
        cache.clear()
    cache[token] = (now, key)
    return key


def require(permission: Permission):  # type: ignore[no-untyped-def]
    async def check(request: Request, key: Annotated[ApiKey, Depends(_caller)]) -> ApiKey:
        setattr(request.state, KEY_NAME_STATE, key.name)  # for the access log
        if not key.can(permission):
            raise ApiProblem(403, "Forbidden", f"A key with the role {key.role.value!r} may not {WHAT[permission]}.")
        return key

    return Depends(check)


MemberPath = Identifier(64)
IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
           description="Unique per logical request; a retry with the same key returns the first result."),
]
MinPosition = Annotated[
    int | None,
    Query(ge=0, le=2**62, description="Wait (bounded) until the read models include this position."),
]


async def wait_for_position(container: Container, min_position: int | None) -> int:
    """The projected position, once it is at least `min_position` (read-your-writes)."""
    deadline = time.monotonic() + container.settings.read_wait_s_max
    delay = 0.002
    while True:
        position = int(await container.pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = 'read_models'"))
        if min_position is None or position >= min_position:
            return position
        if delay == 0.002:
            head = await container.pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
            if min_position > head:
                raise ApiProblem(
                    422, "Invalid request", "min_position is beyond the last event written to the ledger.",
                    errors=[{"field": "min_position", "message": f"must be at most {head}", "type": "beyond_head"}],
                )
        if time.monotonic() >= deadline:
            raise ApiProblem(
                503, "Read model behind",
                f"The read models are at position {position}, not yet {min_position}; retry shortly.",
                {"Retry-After": "1"}, position=position,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
