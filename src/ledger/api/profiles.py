"""The member routes of M1: enrolment, profiles, the search by email, erasure, export.

Personal data is sealed here, at the edge, with the member's own data key
(`ledger.members.MemberVault`) before any command is built: the ledger, its events,
snapshots and read models hold only sealed values, and the access log only the route's
template. Reads open the sealed fields of the profiles' read model (`member_profiles`),
so a read after a write passes the write's `position` as `min_position`.

Erasure (admin) destroys the member's data key and their email index rows first, then
records a `MemberErased` event with the actor: whatever fails in between, a repeat
finishes it (the event is keyed by the member, so it is recorded once). A profile
read after an erasure answers 404 with the problem type `/problems/profile-erased`:
a 404 rather than a 410, as for every other thing a request names that is not there
(the problem's type tells an erased profile from one never given).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from ledger.bootstrap import Container
from ledger.domain import (
    ChangeProfile,
    EnrolMember,
    EraseMember,
    MemberExists,
    MemberNotFound,
    NotFound,
    ProfileErased,
)
from ledger.handlers import CommandRequest
from ledger.keys import ApiKey, Permission
from ledger.members import StoredProfile, profile_view

from .deps import ContainerDep, MemberPath, MinPosition, SingleQueryValues, require, wait_for_position
from .member_schemas import (
    Email,
    EnrolmentRequest,
    ErasureView,
    MemberExport,
    MemberProfileView,
    MemberSearch,
    MemberWrite,
    ProfilePatch,
)
from .routes import _errors
from .shared_path import shared_path_route

router = APIRouter(prefix="/v1/members", dependencies=[SingleQueryValues], tags=["members"],
                   route_class=shared_path_route(lambda: router.routes))
Member = Annotated[MemberPath, Path(description="The member's id in the programme.")]
EXPORT_PAGE_EVENTS = 1_000  # events read per query while an export streams


class ProfileNotFound(NotFound):
    title = "Profile not found"


def _metadata(key: ApiKey) -> dict[str, Any]:
    return {"source": "http", "actor": key.name}


@router.post("", status_code=201, operation_id="enrolMember", response_model=MemberWrite,
             responses=_errors(409))
async def enrol(body: EnrolmentRequest, container: ContainerDep,
                key: Annotated[ApiKey, require(Permission.enrol_members)]) -> MemberWrite:
    """Enrol a member with an optional profile (each field encrypted with the member's own
    key) and their consents. 409 when the member exists (enrolled, or with events of its
    own: a booking enrolled it; give it a profile with PATCH .../profile)."""
    member_id = body.member_id
    if (await container.ledger.member_state(member_id)).exists or await container.members.erased_at(member_id):
        raise MemberExists(member_id)  # before a data key is made for it; an erased id is not used again
    fields = body.profile.model_dump(exclude_none=True)
    sealed = await container.members.seal(member_id, fields)
    command = EnrolMember(member_id, container.clock(), key.name, sealed, body.consents.marketing)
    applied = (await container.ledger.handle(CommandRequest(command, metadata=_metadata(key)))).applied
    if "email" in fields:
        await container.members.index_email(member_id, fields["email"])
    return MemberWrite(member_id=member_id, position=applied.position)


@router.get("", operation_id="findMembers", response_model=MemberSearch, responses=_errors())
async def find_by_email(
    email: Annotated[Email, Query(description="The email, compared normalised (case and surrounding white space"
                                              " aside); found through an index of its keyed hash.")],
    container: ContainerDep, _: Annotated[ApiKey, require(Permission.search_members)],
) -> MemberSearch:
    """The members whose profile has this email (support: who is calling?)."""
    found = await container.members.find_by_email(email)
    return MemberSearch(members=[{"member_id": m} for m in found])  # type: ignore[misc]


async def _caught_up(container: Container, member_id: str, min_position: int | None) -> None:
    """Wait (bounded) until the read model has the member's last event, and `min_position`:
    a profile is read as the member's own writes left it, whoever made them."""
    last = await container.pool.fetchval(
        "SELECT position FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1", member_id)
    wanted = max(last or 0, min_position or 0)
    if wanted:
        await wait_for_position(container, wanted)


async def _profile(container: Container, member_id: str) -> tuple[StoredProfile, dict[str, str]]:
    erased_at = await container.members.erased_at(member_id)
    if erased_at is not None:
        raise ProfileErased(member_id)
    stored = await container.members.profile(member_id)
    if stored is None:
        raise ProfileNotFound(f"The member {member_id!r} has no profile (never enrolled, nor given one).",
                              member_id=member_id)
    return stored, await container.members.open(stored)


@router.get("/{member_id}/profile", operation_id="getProfile", response_model=MemberProfileView,
            responses=_errors(404, 409))
async def get_profile(member_id: Member, container: ContainerDep,
                      _: Annotated[ApiKey, require(Permission.read_profiles)],
                      min_position: MinPosition = None) -> MemberProfileView:
    """The member's profile, decrypted, and consents, as of the member's last event at
    least. 404 without a profile, and after an erasure (type `/problems/profile-erased`)."""
    await _caught_up(container, member_id, min_position)
    stored, fields = await _profile(container, member_id)
    return MemberProfileView(
        member_id=member_id, profile=profile_view(fields),  # type: ignore[arg-type]
        consents={"marketing": stored.marketing_consent},  # type: ignore[arg-type]
        enrolled_at=stored.enrolled_at, updated_at=stored.updated_at, position=stored.position,
    )


@router.patch("/{member_id}/profile", operation_id="updateProfile", response_model=MemberWrite,
              responses=_errors(404, 409))
async def update_profile(member_id: Member, body: ProfilePatch, container: ContainerDep,
                         key: Annotated[ApiKey, require(Permission.write_profiles)]) -> MemberWrite:
    """A JSON merge patch of the profile and consents (sent as application/merge-patch+json
    or application/json): a field given is set, given as null removed, left out unchanged.
    404 for a member the ledger does not know, and after an erasure."""
    if not (await container.ledger.member_state(member_id)).exists:
        raise MemberNotFound(member_id)
    fields = body.profile.model_dump(include=body.profile.model_fields_set)
    if await container.members.erased_at(member_id) is not None:
        raise ProfileErased(member_id)
    sealed = await container.members.seal(member_id, fields)
    command = ChangeProfile(member_id, container.clock(), key.name, sealed, body.consents.marketing)
    applied = (await container.ledger.handle(CommandRequest(command, metadata=_metadata(key)))).applied
    if "email" in fields:
        await container.members.index_email(member_id, fields["email"])
    return MemberWrite(member_id=member_id, position=applied.position)


@router.post("/{member_id}/erasure", operation_id="eraseMember", response_model=ErasureView,
             responses=_errors(404))
async def erase(member_id: Member, container: ContainerDep,
                key: Annotated[ApiKey, require(Permission.erase_members)]) -> ErasureView:
    """Erase the member's personal data: their data key is destroyed, so every encrypted
    field of theirs (profile, events, read models) is unreadable for good, and they can no
    longer be found by email. Points, history and the hash chains stay. Idempotent: a
    repeat answers the first erasure."""
    exists = (await container.ledger.member_state(member_id)).exists
    if not exists and not await container.members.has_key(member_id):
        raise MemberNotFound(member_id)
    erased_at = await container.members.erase(member_id)
    position = None
    if exists:
        result = await container.ledger.handle(CommandRequest(
            EraseMember(member_id, container.clock(), key.name), idempotency_key=f"member-erasure:{member_id}",
            request_hash="member-erasure", metadata=_metadata(key)))
        position = result.applied.position
    return ErasureView(member_id=member_id, erased_at=erased_at, position=position)


@router.get("/{member_id}/export", operation_id="exportMember", response_model=None, response_class=StreamingResponse,
            responses={200: {"model": MemberExport, "content": {"application/json": {}},
                             "description": "The profile and every event, streamed."}, **_errors(404, 409)})
async def export(member_id: Member, container: ContainerDep,
                 _: Annotated[ApiKey, require(Permission.export_members)],
                 min_position: MinPosition = None) -> StreamingResponse:
    """The access request: the member's profile in clear (or that it was erased) and every
    event of their stream, oldest first, as stored. Streamed page by page, so a member
    with a long history costs bounded memory."""
    await _caught_up(container, member_id, min_position)
    erased_at = await container.members.erased_at(member_id)
    stored, fields = None, None
    if erased_at is None:
        stored = await container.members.profile(member_id)
        if stored is not None:
            fields = await container.members.open(stored)
    head = await container.pool.fetchval("SELECT 1 FROM events WHERE stream_id = $1 LIMIT 1", member_id)
    if head is None and stored is None and erased_at is None:
        raise MemberNotFound(member_id)
    profile = {
        "status": "erased" if erased_at is not None else "present" if stored is not None else "none",
        "profile": profile_view(fields) if fields is not None else None,
        "consents": {"marketing": stored.marketing_consent} if stored is not None else None,
        "erased_at": erased_at,
    }
    opening = orjson.dumps({"member_id": member_id, "exported_at": container.clock(), "profile": profile})
    return StreamingResponse(_export_body(container, member_id, opening), media_type="application/json")


async def _export_body(container: Container, member_id: str, opening: bytes) -> AsyncIterator[bytes]:
    yield opening[:-1] + b',"events":['
    after, first = 0, True
    while True:
        rows = await container.pool.fetch(
            "SELECT position, stream_version, type, schema_version, data, metadata, occurred_at, recorded_at"
            " FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3",
            member_id, after, EXPORT_PAGE_EVENTS)
        if not rows:
            break
        chunk = b",".join(orjson.dumps({
            "position": r["position"], "stream_version": r["stream_version"], "type": r["type"],
            "schema_version": r["schema_version"], "data": orjson.Fragment(r["data"]),
            "metadata": orjson.Fragment(r["metadata"]), "occurred_at": r["occurred_at"],
            "recorded_at": r["recorded_at"]}) for r in rows)
        yield (b"" if first else b",") + chunk
        first, after = False, rows[-1]["stream_version"]
        if len(rows) < EXPORT_PAGE_EVENTS:
            break
    yield b"]}"
