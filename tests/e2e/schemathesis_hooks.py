"""Schemathesis hooks of the contract test (loaded through SCHEMATHESIS_HOOKS).

JSON Schema cannot compare two fields of one object, so the one cross-field rule of the
API, a transfer's `to_member_id` differing from its `from_member_id` (422, said in the
field's description), is not in the published schema: generated transfer bodies that
break it are left out, or the positive-data check would take them for valid requests."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    operation = context.operation
    if operation is None or operation.path != "/v1/transfers" or not isinstance(body, dict):
        return True
    return "from_member_id" not in body or body["from_member_id"] != body.get("to_member_id")



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
