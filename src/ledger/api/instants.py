"""Instants in query strings (`as_of`, `from`, `to`): RFC 3339 with an offset, and in the
past, since a read as of an instant answers what the ledger held then."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from ledger.bootstrap import Container
from ledger.ingest.schema import OccurredAt

from .problems import ApiProblem

_INSTANT = ("RFC 3339 date-time with seconds and an offset (or Z), years 2000 to 2099, not later than now"
            " (the server's clock).")
AS_OF_DESCRIPTION = (
    "Answer as of this instant, from the member's events: those of its stream, in the order recorded, up to the"
    " first one dated (`occurred_at`) after it; lots past their date at the instant are left out. A member with no event by then: 404. " + _INSTANT)
AsOf = Annotated[OccurredAt | None, Query(description=AS_OF_DESCRIPTION)]
Instant = OccurredAt
INSTANT_DESCRIPTION = _INSTANT


def invalid(field: str, message: str, kind: str) -> ApiProblem:
    """A 422 naming `field`, in the shape request validation answers."""
    return ApiProblem(422, "Invalid request", f"Invalid value for: {field}.",
                      errors=[{"field": field, "message": message, "type": kind}])


def in_the_past(container: Container, field: str, at: datetime) -> datetime:
    """`at`, refused (422) when later than the server's clock: what the ledger will hold
    then is not known, and an answer for it would change as events come in."""
    if at > container.clock():
        raise invalid(field, "must not be later than now", "future")
    return at
