"""Members (M1): enrolment, profile changes and erasure, decided on the member's stream.

The domain never sees personal data in clear: the entry points seal each profile field
with the member's data key (`ledger.crypto`) before a command is built, and the events
carry only those sealed values. What is decided here is whether the member may enrol
(not when it exists already), whether its profile may change (only of a member the
ledger knows), and that an erasure is recorded with its actor.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ._frozen import fast_init
from .commands import Command
from .errors import InvalidCommand, MemberNotFound
from .events import Event, MemberEnrolled, MemberErased, MemberProfileChanged
from .state import MemberState

PROFILE_FIELDS = ("name", "email", "phone", "country", "locale", "birth_date")
REMOVED = ""  # a field of a `ChangeProfile` (and of its event) that the patch removes


class MemberExists(InvalidCommand):
    """An enrolment of a member the ledger knows already: enrolled, or with events of its
    own (enrolled by its first booking) (409, final)."""

    title = "Member exists"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"The member {member_id!r} exists already.", member_id=member_id)


class MemberNotEnrolled(InvalidCommand):
    """A booking or an activity for a member who never enrolled, under rules that do not
    enrol on the first booking (`enrol_on_first_booking` false) (409, final until it enrols)."""

    title = "Member not enrolled"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"The member {member_id!r} is not enrolled, and the programme's rules do not enrol"
                         " a member on their first booking.", member_id=member_id)


class ProfileErased(InvalidCommand):
    """The member's personal data was erased: its profile cannot be read or changed (404,
    with its own problem type)."""

    title = "Profile erased"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"The personal data of member {member_id!r} was erased.", member_id=member_id)


def normalise_email(email: str) -> str:
    """The form the email index hashes: NFC, no surrounding white space, lower case (the
    local part too: no mail service a programme meets tells `Ann@` from `ann@`)."""
    return unicodedata.normalize("NFC", email).strip().lower()


Sealed = tuple[tuple[str, str], ...]  # (profile field, sealed value, or REMOVED in a change)


@fast_init
@dataclass(frozen=True, slots=True)
class EnrolMember(Command):
    actor: str
    profile: Sealed
    marketing_consent: bool


@fast_init
@dataclass(frozen=True, slots=True)
class ChangeProfile(Command):
    actor: str
    profile: Sealed  # the fields the patch names
    marketing_consent: bool | None  # None: unchanged


@fast_init
@dataclass(frozen=True, slots=True)
class EraseMember(Command):
    actor: str


MEMBER_COMMANDS = (EnrolMember, ChangeProfile, EraseMember)


def _fields(profile: Sealed) -> dict[str, str]:
    fields = dict(profile)
    unknown = set(fields) - set(PROFILE_FIELDS)
    if unknown or len(fields) != len(profile):
        raise InvalidCommand(f"Unknown or repeated profile fields: {sorted(unknown) or 'repeated'}.")
    return fields


def decide_member(state: MemberState, command: EnrolMember | ChangeProfile | EraseMember) -> list[Event]:
    at = command.occurred_at
    match command:
        case EnrolMember():
            if state.exists:
                raise MemberExists(command.member_id)
            fields = _fields(command.profile)
            if REMOVED in fields.values():
                raise InvalidCommand("An enrolment cannot remove a profile field.")
            return [MemberEnrolled(at, command.actor, *(fields.get(f) for f in PROFILE_FIELDS),
                                   command.marketing_consent)]
        case ChangeProfile():
            if not state.exists:
                raise MemberNotFound(command.member_id)
            fields = _fields(command.profile)
            if not fields and command.marketing_consent is None:
                return []  # an empty patch changes nothing
            return [MemberProfileChanged(at, command.actor, *(fields.get(f) for f in PROFILE_FIELDS),
                                         command.marketing_consent)]
        case EraseMember():
            if not state.exists:
                raise MemberNotFound(command.member_id)
            return [MemberErased(at, command.actor)]
    raise InvalidCommand(f"Unknown command {type(command).__name__}.")
