"""Every error leaves as RFC 9457 application/problem+json, mapped here and only here."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.domain import (
    BookingNotFound,
    BookingStateConflict,
    ConcurrencyConflict,
    DuplicateEvent,
    InsufficientPoints,
    InvalidCommand,
    LedgerError,
    MemberNotFound,
    NotFound,
    ProfileErased,
)
from ledger.group_commit import Overloaded
from ledger.store.database import UNAVAILABLE

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class ApiProblem(Exception):
    """An HTTP-level refusal raised by the API layer itself (auth, waits, limits)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers, extra


# Most specific first: the first match wins. 422 is kept for requests the published
# schema refuses; a request it accepts that the ledger's state or the programme rules in
# force refuse (a booking never earned on, a currency the rules do not earn in and no
# exchange rate in force converts: `currency` and `field` name it) is a 409.
# A 409 is final: the same request will be refused again. A write that lost every race
# against other processes for the member (bounded by LEDGER_COMMAND_ATTEMPTS_MAX), or
# found too many writes queued, was not applied and may be sent again as it is: a 503
# with Retry-After says so, as any HTTP client library's retry policy understands.
_STATUS: list[tuple[type[LedgerError], int]] = [
    (InsufficientPoints, 409),
    (ProfileErased, 404),  # Members (M1): gone for good; the problem's type says erased
    (MemberNotFound, 404),
    (NotFound, 404),
    (BookingNotFound, 409),
    (BookingStateConflict, 409),
    (DuplicateEvent, 409),
    (ConcurrencyConflict, 503),
    (Overloaded, 503),
    (InvalidCommand, 409),
    (LedgerError, 400),
]
_RETRY_AFTER = {"Retry-After": "1"}


def _slug(title: str) -> str:
    return "/problems/" + title.lower().replace(" ", "-")


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": _slug(title), "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# The tags of a body that takes one of several shapes (a redemption's free-form or
# catalogue reward, a reward's definition by kind): pydantic puts them in an error's
# location, but they are no field.
_SHAPE_TAGS = ("free_form", "catalogue", "other_reward", "miles_reward")


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", *_SHAPE_TAGS)]
    return ".".join(parts) or "body"


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised while handling, says the connection
    or the server went away, rather than that the client was misused.

    InterfaceError is both: "connection is closed" when a connection died under a
    transaction, and "another operation is in progress" for code that shares one
    connection between two tasks, which is a bug. InternalClientError is asyncpg's
    own state going wrong, which in practice is a connection that died mid-operation:
    the pool's reset of such a connection on release raises "cannot switch to state
    15; another operation (2) is in progress" (seen under SIGKILL of the server),
    and the pool then drops that connection."""
    seen: BaseException | None = exc
    for _ in range(5):  # a bounded walk down the chain
        if seen is None:
            return False
        misuse = isinstance(seen, asyncpg.InterfaceError) and "closed" not in str(seen)
        if isinstance(seen, UNAVAILABLE) and not misuse:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def install(app: FastAPI) -> None:
    @app.exception_handler(LedgerError)
    async def _ledger(_: Request, exc: LedgerError) -> JSONResponse:
        status = next(code for cls, code in _STATUS if isinstance(exc, cls))
        details = {k: v for k, v in exc.details.items() if isinstance(v, (int, str))}
        return problem(status, exc.title, exc.message, _RETRY_AFTER if status == 503 else None, **details)

    @app.exception_handler(ApiProblem)
    async def _api(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": "body" if e["type"] == "json_invalid" else _field(tuple(e["loc"])), "message": e["msg"],
                   "type": e["type"]} for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "Malformed JSON", "The request body is not valid JSON.", errors=errors)
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        return problem(422, "Invalid request", f"Invalid value for: {fields}.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI's body parsing met JSON nested deeper than Python's parser follows:
            # not JSON this API reads, as the Kafka consumer says of the same bytes.
            return problem(400, "Malformed JSON", "The request body is not valid JSON.", errors=[
                {"field": "body", "message": "JSON nested too deeply", "type": "json_invalid"}])
        titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 401: "Unauthorized",
                  403: "Forbidden", 413: "Request too large"}
        return problem(exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail), exc.headers)

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        if _connection_lost(exc):
            log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        else:
            # Not the connection: asyncpg misused ("another operation is in progress")
            # or failing inside. Still a 503 (retrying may well work), but a bug to see.
            log.error("database client error", exc_info=exc)
        return problem(503, "Service unavailable", "The ledger database is unavailable; retry shortly.", _RETRY_AFTER)

    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "Internal error", "An unexpected error occurred; it has been logged.")
