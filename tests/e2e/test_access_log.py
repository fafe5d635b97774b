"""The access log: one JSON line per request, with the route's template and the key's
name, and never a token or a member id."""

from __future__ import annotations

import json
import logging

import pytest

from .conftest import Api
from .test_walkthrough import BOOKING

MEMBER = "M-PRIVATE-4711"


async def test_one_json_line_per_request_without_tokens_or_member_ids(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ledger.access")
    async with api.client("ingest") as ingest:
        r = await ingest.post("/v1/booking-events", json={**BOOKING, "member_id": MEMBER, "event_id": "acc-1"})
        assert r.status_code == 201, r.text
    async with api.client("app", **{"X-Request-ID": "trace-42"}) as app:
        r = await app.get(f"/v1/members/{MEMBER}/balance", params={"min_position": 1})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    async with api.client(None, Authorization="Bearer lk_nothere.secret") as stranger:
        assert (await stranger.get(f"/v1/members/{MEMBER}/tier")).status_code == 401
    async with api.client(None, **{"X-Request-ID": "not a plain id"}) as anonymous:
        r = await anonymous.get(f"/no/such/{MEMBER}")
        assert r.status_code == 404 and r.headers["x-request-id"] != "not a plain id"

    records = [rec for rec in caplog.records if rec.name == "ledger.access"]
    lines = [json.loads(rec.getMessage()) for rec in records]
    assert [(x["method"], x["route"], x["status"], x["key_name"]) for x in lines] == [
        ("POST", "/v1/booking-events", 201, "ingest-key"),
        ("GET", "/v1/members/{member_id}/balance", 200, "app-key"),
        ("GET", "/v1/members/{member_id}/tier", 401, None),
        ("GET", None, 404, None),
    ]
    assert lines[1]["request_id"] == "trace-42" and len({x["request_id"] for x in lines}) == 4
    assert all(isinstance(x["latency_ms"], float) and x["latency_ms"] >= 0 for x in lines)
    text = "\n".join(rec.getMessage() for rec in records)
    assert MEMBER not in text and "lk_" not in text and "secret" not in text
    for token in api.tokens.values():
        assert token not in text and token.split(".")[0] not in text


async def test_the_metrics_count_what_the_access_log_logs_a_body_limit_refusal_too(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """The metrics and the access log are one middleware, the outermost: a request the
    body limit refuses before routing is counted as it is logged (it went uncounted when
    the metrics had a middleware of their own inside the limit's)."""
    caplog.set_level(logging.INFO, logger="ledger.access")
    async with api.client("ingest") as ingest:
        r = await ingest.post("/v1/booking-events", content=b"{" + b" " * 70_000 + b"}",
                              headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        metrics = (await ingest.get("/metrics")).text
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "ledger.access"]
    assert ("POST", 413) in [(x["method"], x["status"]) for x in lines]
    assert 'ledger_http_requests_total{method="POST",route="unmatched",status="413"} 1.0' in metrics
