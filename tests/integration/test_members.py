"""Members (M1) on the real PostgreSQL and Kafka broker: an erasure leaves the hash chains,
the balances and a rebuild as they were; nothing the app logged nor anything any table
holds has a name, an email or a phone in clear; and rules that do not enrol on the first
booking refuse a booking for a member never enrolled, over HTTP and from Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ledger.anchor import verify_all
from ledger.bootstrap import Container, build
from ledger.domain import DEFAULT_RULES_DICT, EnrolMember
from ledger.handlers import CommandRequest
from ledger.ingest.consumer import BookingConsumer
from projections import report_queries
from projections.runner import rebuild
from tests.conftest import make_settings
from tests.e2e.conftest import Api, api  # noqa: F401 - the app over HTTP, as a fixture
from tests.e2e.test_walkthrough import BOOKING

from .kafka_load import create_topics, encode, end_offsets, kafka_settings, produce, read_topic, wait_consumed
from .test_projections import _tables

PROFILES = {
    "M-1": {"name": "Zhang Xiuying", "email": "Xiuying.Zhang@Mail-Example.com", "phone": "+86 138 1234 5678",
            "country": "CN", "locale": "zh-CN", "birth_date": "1979-03-08"},
    "M-2": {"name": "Siobhan O'Connell", "email": "siobhan.oconnell@example.ie", "phone": "+353 85 123 4567",
            "country": "IE", "birth_date": "1991-12-30"},
}
CHANGED = {"name": "Zhang Xiuying-Li", "phone": "+86 139 8765 4321"}


def clear_forms() -> set[str]:
    """Every form a personal value could be written in: as given, lower and upper case,
    the phone's digits without spaces and in E.164, the email's local part."""
    forms: set[str] = set()
    for value in [v for p in PROFILES.values() for k, v in p.items() if k in ("name", "email", "phone")] + list(
            CHANGED.values()):
        forms |= {value, value.lower(), value.upper(), value.replace(" ", "")}
        if "@" in value:
            forms.add(value.split("@")[0].lower())
        if value.startswith("+"):
            forms.add(value.replace(" ", "")[3:])  # the national number
    forms |= {p["birth_date"] for p in PROFILES.values()}
    return forms


async def table_dump(api: Api) -> str:
    """Every column of every table of the database, as text (bytea in hex, and also
    decoded as UTF-8 where it is text)."""
    pool = api.container.pool
    tables = [r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    out = []
    for table in tables:
        for row in await pool.fetch(f'SELECT * FROM "{table}"'):
            for value in row.values():
                if isinstance(value, (bytes, bytearray, memoryview)):
                    raw = bytes(value)
                    out += [raw.hex(), raw.decode("utf-8", "replace")]
                else:
                    out.append(str(value))
    return "\n".join(out)


async def _reports(container: Container) -> tuple[list, list]:
    """The liability now and the activity of every day so far, by their rows."""
    now = datetime.now(UTC)
    liability = await report_queries.liability(container.pool, now)
    activity = await report_queries.activity(container.pool, date(2000, 1, 1), now.date() + timedelta(days=1),
                                             monthly=True)
    assert liability.rows and activity.rows
    return liability.rows, activity.rows


async def test_an_erasure_keeps_chains_balances_and_rebuild_and_nothing_personal_is_kept_in_clear(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    container = api.container
    async with api.client("support") as support, api.client("admin") as admin, api.client("app") as app:
        for member, profile in PROFILES.items():
            r = await support.post("/v1/members", json={"member_id": member, "profile": profile,
                                                        "consents": {"marketing": True}})
            assert r.status_code == 201, r.text
            for n in range(3):
                r = await admin.post("/v1/booking-events", json={
                    **BOOKING, "member_id": member, "type": "booking.completed", "event_id": f"{member}-{n}",
                    "booking_id": f"BK-{member}-{n}"})
                assert r.status_code == 201, r.text
        r = await app.patch("/v1/members/M-1/profile", json={"profile": CHANGED})
        assert r.status_code == 200, r.text
        r = await app.post("/v1/members/M-1/redemptions", json={"points": 100, "reward": {"id": "R", "kind": "voucher"}},
                           headers={"Idempotency-Key": "rd-1"})
        assert r.status_code == 201, r.text
        r = await support.get("/v1/members", params={"email": PROFILES["M-1"]["email"].upper()})
        assert r.json() == {"members": [{"member_id": "M-1"}]}
        r = await support.get("/v1/members/M-1/export")
        assert r.status_code == 200 and r.json()["profile"]["profile"]["name"] == CHANGED["name"]

        await container.project()
        balances = {m: (await admin.get(f"/v1/members/{m}/balance")).json() for m in PROFILES}
        reports = await _reports(container)

        r = await admin.post("/v1/members/M-1/erasure")
        assert r.status_code == 200, r.text
        erasure_position = r.json()["position"]

        # The chains verify (they cover the sealed values, which stay), balances are as they were.
        assert (await verify_all(container.pool, None, None)).breaks == []
        for member in PROFILES:
            r = await admin.get(f"/v1/members/{member}/balance", params={"min_position": erasure_position})
            # All but the position and the last activity (which the erasure's event moves).
            assert {k: v for k, v in r.json().items() if k not in ("position", "last_activity")} == \
                   {k: v for k, v in balances[member].items() if k not in ("position", "last_activity")}
        r = await support.get("/v1/members", params={"email": PROFILES["M-1"]["email"]})
        assert r.json() == {"members": []}
        assert (await support.get("/v1/members/M-1/profile")).json()["type"] == "/problems/profile-erased"
        # The other member is untouched.
        r = await support.get("/v1/members", params={"email": PROFILES["M-2"]["email"]})
        assert r.json() == {"members": [{"member_id": "M-2"}]}
        assert (await support.get("/v1/members/M-2/profile")).json()["profile"]["name"] == PROFILES["M-2"]["name"]

    # The programme's reports add up as before, live and rebuilt.
    await container.project()
    assert await _reports(container) == reports
    # A rebuild reproduces the live read models, the erased profile included.
    live = await _tables(container)
    assert next(r for r in live["member_profiles"] if r["member_id"] == "M-1")["fields"] == "{}"
    await rebuild(container.pool, container.store, workers=1)
    assert await _tables(container) == live
    assert await _reports(container) == reports

    # Nothing personal in clear: not in any table (events, snapshots, read models, the
    # index, the keys), nor in anything the app logged. The test's own HTTP client logs
    # the URLs it requests (the search's email), so its loggers are left out.
    await container.ledger.save_snapshots()
    assert await container.pool.fetchval("SELECT count(*) FROM member_profiles") == 2
    dump = await table_dump(api)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                       if not r.name.startswith(("httpx", "httpcore")))
    assert any(r.name == "ledger.access" for r in caplog.records), "the access log was captured"
    for form in clear_forms():
        assert form not in dump, f"{form!r} is stored in clear"
        assert form not in logged, f"{form!r} was logged"


@pytest.mark.kafka
async def test_rules_without_enrolment_on_first_booking_refuse_unknown_members_over_http_and_kafka(
        db_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({**DEFAULT_RULES_DICT, "enrol_on_first_booking": False}))
    run = uuid.uuid4().hex[:8]
    topic, group = f"bookings-{run}", f"ledger-{run}"
    await create_topics(kafka_bootstrap, topic, partitions=1)
    settings = kafka_settings(db_url, kafka_bootstrap, topic, group, tmp_path, rules_file=str(rules))
    container = await build(settings, run_migrations=False, url=db_url)
    try:
        assert not container.rules.enrol_on_first_booking
        await container.ledger.handle(CommandRequest(EnrolMember("M-IN", container.clock(), "support", (), False)))
        events = [{**BOOKING, "member_id": m, "event_id": f"e-{m}", "booking_id": f"BK-{m}"}
                  for m in ("M-OUT", "M-IN")]
        await produce(kafka_bootstrap, topic, [encode(e) for e in events])
        stop = asyncio.Event()
        consumer = BookingConsumer(container.ledger, container.pool, settings)
        task = asyncio.create_task(consumer.run(stop))
        try:
            await wait_consumed(container.pool, group, topic, await end_offsets(kafka_bootstrap, topic), 60)
        finally:
            stop.set()
            await task
        (dead,) = await read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
        assert dead.key == b"M-OUT"
        assert dict(dead.headers)["reason"].decode().startswith("Member not enrolled: The member 'M-OUT' is not")
        assert (await container.ledger.member_state("M-IN")).bookings  # the enrolled member earned
        assert not (await container.ledger.member_state("M-OUT")).exists

        from ledger.api.app import create_app
        from ledger.keys import Role, create_key
        import httpx

        _, token = await create_key(container.pool, "ingest", Role.ingest)
        app = create_app(settings, container=container, background=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ledger",
                headers={"Authorization": f"Bearer {token}"}) as client:
            r = await client.post("/v1/booking-events", json={**BOOKING, "member_id": "M-HTTP"})
            assert r.status_code == 409 and r.json()["title"] == "Member not enrolled", r.text
            r = await client.post("/v1/members", json={"member_id": "M-HTTP"})  # ingest may enrol
            assert r.status_code == 201, r.text
            r = await client.post("/v1/booking-events", json={**BOOKING, "member_id": "M-HTTP"})
            assert r.status_code == 201, r.text
    finally:
        await container.close()
