"""Members (M1) over HTTP: enrolment, profiles, the search by email, erasure and export;
every route, the roles allowed and refused, bad input (422 naming the field, nothing
changed), 409 on a member that exists, 404 (profile erased) after an erasure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import CompleteBooking
from ledger.handlers import CommandRequest

from .conftest import Api
from .test_walkthrough import BOOKING

PROFILE = {"name": "Li Wei", "email": "Li.Wei@Example.com", "phone": "+44 20 7946 0958", "country": "GB",
           "locale": "en-GB", "birth_date": "1988-04-12"}


async def events_count(api: Api) -> int:
    return int(await api.container.pool.fetchval("SELECT count(*) FROM events"))


async def enrol(api: Api, member: str = "M-1", profile: dict | None = None, marketing: bool = True) -> int:
    async with api.client("support") as support:
        r = await support.post("/v1/members", json={"member_id": member, "profile": PROFILE if profile is None
                                                    else profile, "consents": {"marketing": marketing}})
    assert r.status_code == 201, r.text
    assert r.json()["member_id"] == member
    return int(r.json()["position"])


async def test_enrol_read_patch_and_find_a_member(api: Api) -> None:
    position = await enrol(api)
    async with api.client("app") as app, api.client("support") as support:
        r = await app.get("/v1/members/M-1/profile", params={"min_position": position})
        assert r.status_code == 200, r.text
        body = r.json()
        # The email as email-validator normalises it (the domain in lower case); the phone in E.164.
        assert body["profile"] == {**PROFILE, "email": "Li.Wei@example.com", "phone": "+442079460958"}
        assert body["consents"] == {"marketing": True} and body["enrolled_at"] is not None

        r = await app.patch("/v1/members/M-1/profile", json={
            "profile": {"email": "wei.li@example.org", "locale": None, "name": "Wei Li"},
            "consents": {"marketing": False}}, headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        r = await app.get("/v1/members/M-1/profile", params={"min_position": r.json()["position"]})
        assert r.json()["profile"] == {**PROFILE, "name": "Wei Li", "email": "wei.li@example.org",
                                       "phone": "+442079460958", "locale": None}
        assert r.json()["consents"] == {"marketing": False}

        r = await app.patch("/v1/members/M-1/profile", json={})  # an empty patch: nothing to write
        assert r.status_code == 200 and r.json() == {"member_id": "M-1", "position": None}

        for email in ("  WEI.LI@Example.ORG ", "wei.li@example.org", "Wei.Li@EXAMPLE.org"):
            r = await support.get("/v1/members", params={"email": email})
            assert r.status_code == 200 and r.json() == {"members": [{"member_id": "M-1"}]}, (email, r.text)
        r = await support.get("/v1/members", params={"email": "li.wei@example.com"})  # the old email
        assert r.json() == {"members": []}


async def test_a_member_that_exists_is_a_409_and_nothing_changes(api: Api) -> None:
    await enrol(api)
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "member_id": "M-2"})
        assert r.status_code == 201
        before = await events_count(api)
        for member in ("M-1", "M-2"):  # enrolled, and enrolled by a booking
            r = await admin.post("/v1/members", json={"member_id": member, "profile": {"name": "Other"}})
            assert r.status_code == 409 and r.json()["title"] == "Member exists", r.text
        assert await events_count(api) == before
        # The member enrolled by its booking is given a profile by a patch.
        r = await admin.patch("/v1/members/M-2/profile", json={"profile": {"country": "CN"}})
        assert r.status_code == 200, r.text
        r = await admin.get("/v1/members/M-2/profile", params={"min_position": r.json()["position"]})
        assert r.json()["profile"]["country"] == "CN" and r.json()["enrolled_at"] is None
        r = await admin.patch("/v1/members/nobody/profile", json={"profile": {"country": "CN"}})
        assert r.status_code == 404
        r = await admin.get("/v1/members/nobody/profile")
        assert r.status_code == 404


BAD_ENROLMENTS = [
    ({"member_id": "M-9", "profile": {"email": "not an email"}}, "profile.email"),
    ({"member_id": "M-9", "profile": {"email": "a@" + "b" * 250 + ".com"}}, "profile.email"),
    ({"member_id": "M-9", "profile": {"phone": "+44 12"}}, "profile.phone"),
    ({"member_id": "M-9", "profile": {"phone": "+1 555 000 0000"}}, "profile.phone"),  # not a valid number
    ({"member_id": "M-9", "profile": {"phone": "020 7946 0958"}}, "profile.phone"),  # no country code
    ({"member_id": "M-9", "profile": {"country": "XX"}}, "profile.country"),
    ({"member_id": "M-9", "profile": {"locale": "english"}}, "profile.locale"),
    ({"member_id": "M-9", "profile": {"birth_date": "1988-02-30"}}, "profile.birth_date"),
    ({"member_id": "M-9", "profile": {"birth_date": "2099-01-01"}}, "profile.birth_date"),
    ({"member_id": "M-9", "profile": {"name": "x" * 201}}, "profile.name"),
    ({"member_id": "M-9", "profile": {"name": "\u202e"}}, "profile.name"),
    ({"member_id": "M-9", "profile": {"nickname": "Wei"}}, "profile.nickname"),
    ({"member_id": "M 9"}, "member_id"),
    ({"member_id": "M-9", "consents": {"marketing": "yes"}}, "consents.marketing"),
]
BAD_PATCHES = [
    ({"profile": {"email": "nope@"}}, "profile.email"),
    ({"profile": {"phone": "+1"}}, "profile.phone"),
    ({"profile": {"country": "XX"}}, "profile.country"),
    ({"consents": {"marketing": None}}, "consents.marketing"),
    ({"profile": None}, "profile"),
    ({"status": "closed"}, "status"),
]


async def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(api: Api) -> None:
    """One server for every case (each case its own request): enrolments, then patches."""
    async with api.client("admin") as admin:
        for body, field in BAD_ENROLMENTS:
            r = await admin.post("/v1/members", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (body, r.text)
        assert await events_count(api) == 0
        assert await api.container.pool.fetchval("SELECT count(*) FROM member_keys") == 0
    position = await enrol(api)
    async with api.client("app") as app:
        before = await events_count(api)
        for body, field in BAD_PATCHES:
            r = await app.patch("/v1/members/M-1/profile", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (body, r.text)
        assert await events_count(api) == before
        r = await app.get("/v1/members/M-1/profile", params={"min_position": position})
        assert r.json()["profile"] == {**PROFILE, "email": "Li.Wei@example.com", "phone": "+442079460958"}


# (method, path, body) of each route, on an enrolled member M-1
ROUTES = {
    "enrol": ("POST", "/v1/members", {"member_id": "M-NEW"}),
    "search": ("GET", "/v1/members?email=li.wei@example.com", None),
    "read": ("GET", "/v1/members/M-1/profile", None),
    "patch": ("PATCH", "/v1/members/M-1/profile", {"consents": {"marketing": True}}),
    "export": ("GET", "/v1/members/M-1/export", None),
    "erase": ("POST", "/v1/members/M-1/erasure", None),
}
ALLOWED = {
    "ingest": {"enrol"},
    "app": {"read", "patch"},
    "support": {"enrol", "search", "read", "patch", "export"},
    "auditor": set(),  # reads accounts and the audit trail, never a profile in clear
    "admin": set(ROUTES),
}


async def test_each_role_is_allowed_and_refused_where_it_should_be(api: Api) -> None:
    """The admin last: its erasure would turn the others' reads into 404s."""
    for n, role in enumerate(sorted(ALLOWED, key=lambda r: r == "admin")):
        position = await enrol(api, f"M-{n}")
        async with api.client(role) as client:
            for name, (method, path, body) in ROUTES.items():
                path = path.replace("M-1", f"M-{n}").replace("M-NEW", f"M-NEW-{n}")
                params = {"min_position": position} if name in ("read", "export") else None
                r = await client.request(method, path, json=body and {
                    k: (f"M-NEW-{n}" if v == "M-NEW" else v) for k, v in body.items()}, params=params)
                if name in ALLOWED[role]:
                    assert r.status_code in (200, 201), (role, name, r.text)
                else:
                    assert r.status_code == 403, (role, name, r.text)
                    assert r.headers["content-type"] == "application/problem+json"
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/v1/members/M-1/profile")).status_code == 401


async def test_erasure_makes_the_profile_unreadable_for_good_and_is_idempotent(api: Api) -> None:
    position = await enrol(api)
    async with api.client("admin") as admin:
        r = await admin.post("/v1/booking-events", json={**BOOKING, "member_id": "M-1"})
        assert r.status_code == 201
        balance = (await admin.get("/v1/members/M-1/balance", params={"min_position": r.json()["position"]})).json()
        r = await admin.post("/v1/members/M-1/erasure")
        assert r.status_code == 200, r.text
        first = r.json()
        again = await admin.post("/v1/members/M-1/erasure")
        assert again.status_code == 200 and again.json() == first  # recorded once
        r = await admin.get("/v1/members/M-1/profile", params={"min_position": first["position"]})
        assert r.status_code == 404 and r.json()["type"] == "/problems/profile-erased", r.text
        r = await admin.patch("/v1/members/M-1/profile", json={"profile": {"name": "Li Wei"}})
        assert r.status_code == 404 and r.json()["type"] == "/problems/profile-erased"
        r = await admin.get("/v1/members", params={"email": PROFILE["email"]})
        assert r.json() == {"members": []}
        assert await api.container.pool.fetchval("SELECT count(*) FROM member_email_index") == 0
        assert (await admin.get("/v1/members/M-1/balance")).json()["available"] == balance["available"]
        r = await admin.get("/v1/members/M-1/export")
        assert r.status_code == 200
        export = r.json()
        assert export["profile"]["status"] == "erased" and export["profile"]["profile"] is None
        assert [e["type"] for e in export["events"]] == ["MemberEnrolled", "PointsEarned", "MemberErased"]
        assert export["events"][-1]["data"]["actor"] == "admin-key"
        assert "Li Wei" not in r.text and "example.com" not in r.text.lower()
        assert (await admin.post("/v1/members/nobody/erasure")).status_code == 404
        r = await admin.post("/v1/members", json={"member_id": "M-1", "profile": PROFILE})
        assert r.status_code == 409 and r.json()["title"] == "Member exists"
        # The member's account reads as before: member events are no movements.
        await asyncio.sleep(1.1)  # `to` and `as_of` are whole seconds, not later than now
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        for path in ("history", "verification", f"statement?from=2026-01-01T00:00:00Z&to={now}",
                     f"balance?as_of={now}", "tier", "expiry-schedule"):
            r = await admin.get(f"/v1/members/M-1/{path}")
            assert r.status_code == 200, (path, r.text)
        assert (await admin.get("/v1/members/M-1/verification")).json()["ok"] is True
    assert position < first["position"]


async def test_an_export_streams_every_event_of_a_long_history(api: Api) -> None:
    """More events than one page of the export's reads (1,000): all of them, in order."""
    await enrol(api)
    at = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    await api.container.ledger.handle_batch([
        CommandRequest(CompleteBooking("M-1", at + timedelta(minutes=n), f"BK-{n}", "hotel", Decimal("100.00"),
                                       "EUR")) for n in range(1_100)])
    async with api.client("support") as support:
        r = await support.get("/v1/members/M-1/export")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        export = r.json()
    assert export["profile"]["status"] == "present"
    assert export["profile"]["profile"]["email"] == "Li.Wei@example.com"
    versions = [e["stream_version"] for e in export["events"]]  # the earns, and the tier upgrades among them
    assert versions == list(range(1, len(versions) + 1))
    assert sum(e["type"] == "PointsEarned" for e in export["events"]) == 1_100
    assert export["events"][0]["type"] == "MemberEnrolled" and "Li Wei" not in str(export["events"][0])
