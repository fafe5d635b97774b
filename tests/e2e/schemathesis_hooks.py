"""Schemathesis hooks of the contract test (loaded through SCHEMATHESIS_HOOKS).

JSON Schema cannot compare two fields of one object, nor a value with the clock, so the
API's rules of that kind (each a 422 said in the field's description) are not in the
published schema, and generated requests that break them are left out, or the
positive-data check would take them for valid requests:
- a transfer's `to_member_id` differs from its `from_member_id`;
- an instant in a query (`as_of`, `from`, `to`) is not later than now, and a statement's
  `to` is after its `from`, by at most its span;
- a member profile's `phone` is a number valid in its country (the `phonenumbers`
  library's metadata, not a pattern), its `country` a code ISO 3166-1 assigns (pycountry;
  published as a pattern: an enum of 249 codes doubled the coverage phase's time), its
  `birth_date` a day that exists and is not in the future, and an email (a profile's, or the search's `email`) one email-validator
  takes, whose domain is not reserved (.local, .arpa): JSON Schema's `format: email`
  asks only for an @;
- a simulation's window (`POST /v1/programme/simulations`): `to` after `from`, by at
  most 366 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

STATEMENT_DAYS_MAX = 3_660  # ledger.api.statements.STATEMENT_DAYS_MAX
EARLIEST = datetime(2000, 1, 2, tzinfo=UTC)  # a day into the schema's years, whatever the offset


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    operation = context.operation
    if operation is None or operation.path != "/v1/transfers" or not isinstance(body, dict):
        return True
    return "from_member_id" not in body or body["from_member_id"] != body.get("to_member_id")


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        return None  # not an instant at all: the schema's own refusal
    return moment if moment.tzinfo is not None else None


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, **kwargs: Any) -> None:
    # Not a `filter_query`: the coverage phase, which sends the schema's edge values
    # (`from` and `to` both its least instant, the greatest one for `as_of`), does not
    # apply filters. The request is made to keep the rules instead, and stays positive or
    # negative as it was: only instants that parse, and so are valid, are moved.
    _valid_profile(case)
    _valid_window(case)
    query = case.query
    if not isinstance(query, dict):
        return
    # Now: the server reads its clock after this, so the instant is not later than its
    # "now". Not further back: an instant moved here must stay after a resource created
    # just before (a member's enrolment, a few milliseconds ago), or the read as of it
    # rightly finds no member (404), which the resource-availability check of a stateful
    # step takes for a lost resource (it did with two days back).
    latest = datetime.now(UTC)
    for name in ("as_of", "from", "to"):
        at = _instant(query.get(name))
        if at is not None and at > latest:
            query[name] = _text(latest)
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if start is not None and end is not None and not start < end <= start + timedelta(days=STATEMENT_DAYS_MAX):
        if end >= EARLIEST + timedelta(days=2):
            query["from"] = _text(end - timedelta(days=1))
        else:  # the schema's least instants: move `to` on instead, to now at most
            end = min(start + timedelta(days=1), latest)
            query["to"] = _text(end)
            if not start < end:
                query["from"] = _text(end - timedelta(days=1))


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: Any) -> bool:
    """The activity report's span: `to` after `from`, by at most the granularity's days
    (422, said in `to`'s description), in every phase (the coverage phase's cases pass
    no `filter_query`): generated spans that break it are left out."""
    query = case.query
    if case.operation.path != "/v1/reports/activity" or not isinstance(query, dict):
        return True
    from datetime import datetime

    from ledger.api.reports import DAYS_MAX

    try:
        start, end = (datetime.fromisoformat(str(query[name]).upper()) for name in ("from", "to"))
        days = DAYS_MAX[str(query.get("granularity", "day"))]
        return bool(start < end and (end - start).total_seconds() <= days * 86_400)
    except (KeyError, ValueError, TypeError):
        return True  # not a well-formed span: the schema itself refuses it


PROFILE_OPERATIONS = {("POST", "/v1/members"), ("PATCH", "/v1/members/{member_id}/profile")}
PHONE = "+442079460958"
EMAIL = "li.wei@example.com"
BIRTH_DATE = "1988-04-12"
COUNTRY = "GB"


def _valid_email(value: Any) -> bool:
    """False only for an email the schema takes (a string with an @, at most 254
    characters) that the API refuses."""
    from ledger.api.member_schemas import EMAIL_CHARS_MAX, _email

    if not isinstance(value, str) or "@" not in value or len(value) > EMAIL_CHARS_MAX:
        return True
    try:
        _email(value)
    except ValueError:
        return False
    return True


def _valid_profile(case: Any) -> None:
    """A phone or birth date that the schema's pattern takes but the API refuses is made
    a valid one: the field was schema-valid and stays so, and so does the request,
    whether it was generated valid or invalid for another reason."""
    if case.operation.method.upper() == "GET" and case.operation.path == "/v1/members":
        if isinstance(case.query, dict) and not _valid_email(case.query.get("email")):
            case.query["email"] = EMAIL
        return
    if (case.operation.method.upper(), case.operation.path) not in PROFILE_OPERATIONS:
        return
    body = case.body
    profile = body.get("profile") if isinstance(body, dict) else None
    if not isinstance(profile, dict):
        return
    import re

    import phonenumbers

    from ledger.api.member_schemas import BIRTH_DATE_PATTERN, PHONE_PATTERN

    phone = profile.get("phone")
    if isinstance(phone, str) and re.search(PHONE_PATTERN, phone):
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            profile["phone"] = PHONE
    if not _valid_email(profile.get("email")):
        profile["email"] = EMAIL
    country = profile.get("country")
    if isinstance(country, str) and re.search(r"^[A-Z]{2}$", country):
        import pycountry

        if pycountry.countries.get(alpha_2=country) is None:
            profile["country"] = COUNTRY
    day = profile.get("birth_date")
    if isinstance(day, str) and re.search(BIRTH_DATE_PATTERN, day):
        try:
            valid = datetime.fromisoformat(day).date() <= datetime.now(UTC).date()
        except ValueError:
            valid = False
        if not valid:
            profile["birth_date"] = BIRTH_DATE


SIMULATION_DAYS_MAX = 366  # ledger.api.simulations.WINDOW_DAYS_MAX


def _valid_window(case: Any) -> None:
    """A simulation's window the schema takes and the API refuses (`to` not after `from`,
    or too long) is made a day long: the instants stay valid ones."""
    body = case.body
    if case.operation.path != "/v1/programme/simulations" or not isinstance(body, dict):
        return
    start, end = _instant(body.get("from")), _instant(body.get("to"))
    if start is None or end is None or start < end <= start + timedelta(days=SIMULATION_DAYS_MAX):
        return
    if end >= EARLIEST + timedelta(days=2):
        body["from"] = _text(end - timedelta(days=1))
    else:
        body["to"] = _text(start + timedelta(days=1))
