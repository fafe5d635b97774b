"""Request and response bodies of the member routes (M1): enrolment, profiles, the
search by email, erasure and export. Every profile field is optional and bounded;
emails are checked and normalised by `email-validator` (as pydantic's EmailStr does,
with reserved domains allowed),
phone numbers by `phonenumbers` and kept in E.164."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StringConstraints
from pydantic import WithJsonSchema

from ledger.ingest.schema import Identifier, Text

EMAIL_CHARS_MAX = 254  # RFC 5321's longest forward path, less its angle brackets
PHONE_PATTERN = r"^\+[1-9][0-9 ]{5,18}[0-9]$"
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$"
BIRTH_DATE_PATTERN = r"^(19[0-9]{2}|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)


def _email(value: Any) -> str:
    """An address email-validator takes (syntax only: no delivery check, and dotless and
    .test domains allowed; other reserved ones such as .local or .arpa are not), as it
    normalises it (the domain in lower case; the local part as given)."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if len(value) > EMAIL_CHARS_MAX:
        raise ValueError(f"must be at most {EMAIL_CHARS_MAX} characters")
    try:
        return validate_email(value, check_deliverability=False, globally_deliverable=False,
                              test_environment=True).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"must be an email address: {exc}") from None


def _phone(value: str) -> str:
    """E.164 (`+` and the country code, digits only) of a number valid in its country."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be a phone number in international form, such as +44 20 7946 0958") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("must be a valid phone number of its country, in international form")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _birth_date(value: str) -> str:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date that exists, written YYYY-MM-DD") from None
    if day > date.today():
        raise ValueError("must not be in the future")
    return value


Email = Annotated[
    str, PlainValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_CHARS_MAX,
                    "description": "An email address, checked by email-validator (no delivery check)."}),
]
Phone = Annotated[
    str, StringConstraints(pattern=PHONE_PATTERN), AfterValidator(_phone),
    WithJsonSchema({"type": "string", "pattern": PHONE_PATTERN,
                    "description": "International form (+, the country code, the number; spaces allowed), a number"
                                   " valid in its country; kept in E.164."}),
]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(lambda c: _known_country(c)),
                    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{2}$",
                                    "description": "An ISO 3166-1 alpha-2 code (a code that is none is a 422)."})]
Locale = Annotated[str, StringConstraints(pattern=LOCALE_PATTERN),
                   WithJsonSchema({"type": "string", "pattern": LOCALE_PATTERN,
                                   "description": "A BCP 47 tag: language, optional script and region (zh-Hans-CN)."})]
BirthDate = Annotated[
    str, StringConstraints(pattern=BIRTH_DATE_PATTERN), AfterValidator(_birth_date),
    WithJsonSchema({"type": "string", "pattern": BIRTH_DATE_PATTERN,
                    "description": "YYYY-MM-DD, a date that exists, from 1900 and not in the future."}),
]
Name = Text(200)


def _known_country(code: str) -> str:
    if code not in _COUNTRIES:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code")
    return code


_PROFILE_EXAMPLE = {"name": "Li Wei", "email": "li.wei@example.com", "phone": "+8613812345678", "country": "CN",
                    "locale": "zh-CN", "birth_date": "1988-04-12"}


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_PROFILE_EXAMPLE]})

    name: Name | None = None  # type: ignore[valid-type]
    email: Email | None = None
    phone: Phone | None = None
    country: Country | None = None
    locale: Locale | None = None
    birth_date: BirthDate | None = None


class Consents(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"marketing": False}]})

    marketing: StrictBool = Field(False, description="Whether the member agreed to marketing messages.")


class EnrolmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"member_id": "M-1001", "profile": _PROFILE_EXAMPLE, "consents": {"marketing": True}}]})

    member_id: Identifier(64)  # type: ignore[valid-type]
    profile: ProfileIn = Field(default_factory=ProfileIn)
    consents: Consents = Field(default_factory=Consents)


class ConsentsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"marketing": True}]})

    # Absent: None (unchanged); given, true or false: null is refused, as the schema says.
    marketing: Annotated[StrictBool, WithJsonSchema({"type": "boolean"})] = Field(
        None, description="Absent: unchanged. A consent is true or false, not null.")  # type: ignore[assignment]


class ProfilePatch(BaseModel):
    """A JSON merge patch (RFC 7396) of the profile: a field given is set, a field given as
    null is removed, a field left out is unchanged."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"profile": {"email": "wei.li@example.org", "phone": None}, "consents": {"marketing": False}}]})

    profile: ProfileIn = Field(default_factory=ProfileIn)
    consents: ConsentsPatch = Field(default_factory=ConsentsPatch)


class ProfileOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PROFILE_EXAMPLE]})

    name: str | None
    email: str | None
    phone: str | None
    country: str | None
    locale: str | None
    birth_date: str | None


class ConsentsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"marketing": True}]})

    marketing: bool


class MemberProfileView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "member_id": "M-1001", "profile": _PROFILE_EXAMPLE, "consents": {"marketing": True},
        "enrolled_at": "2026-11-20T09:30:00Z", "updated_at": "2026-11-21T10:00:00Z", "position": 42}]})

    member_id: str
    profile: ProfileOut
    consents: ConsentsOut
    enrolled_at: datetime | None = Field(description="None: the member was enrolled by a booking, and given a"
                                                     " profile later.")
    updated_at: datetime
    position: int = Field(description="The event the read model is at for this member.")


class MemberWrite(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"member_id": "M-1001", "position": 42}]})

    member_id: str
    position: int | None = Field(description="Of the write's event (pass it as `min_position` to read it back);"
                                             " None when there was nothing to write.")


class ErasureView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"member_id": "M-1001", "erased_at": "2026-11-30T12:00:00Z", "position": 57}]})

    member_id: str
    erased_at: datetime = Field(description="When the member's data key was destroyed (the first erasure).")
    position: int | None = Field(description="Of the erasure's event; None for a member with no events.")


class MemberMatch(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"member_id": "M-1001"}]})

    member_id: str


class MemberSearch(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"members": [{"member_id": "M-1001"}]}]})

    members: list[MemberMatch] = Field(description="Every member with this email (duplicate accounts share one),"
                                                   " at most 20, by member id.")


class ExportedEvent(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "position": 42, "stream_version": 1, "type": "MemberEnrolled", "schema_version": 1,
        "data": {"actor": "support-desk"}, "metadata": {"source": "http"},
        "occurred_at": "2026-11-20T09:30:00Z", "recorded_at": "2026-11-20T09:30:00.120Z"}]})

    position: int
    stream_version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime


class ExportedProfile(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "present", "profile": _PROFILE_EXAMPLE, "consents": {"marketing": True},
        "erased_at": None}]})

    status: str = Field(description="present, erased (the data key was destroyed: nothing can be read), or none.")
    profile: ProfileOut | None
    consents: ConsentsOut | None
    erased_at: datetime | None


class MemberExport(BaseModel):
    """The access request's answer: the profile in clear (unless erased) and every event
    of the member's stream as stored (profile fields in them are sealed values)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "member_id": "M-1001", "exported_at": "2026-11-30T12:00:00Z",
        "profile": ExportedProfile.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
        "events": [ExportedEvent.model_config["json_schema_extra"]["examples"][0]]}]})  # type: ignore[index]

    member_id: str
    exported_at: datetime
    profile: ExportedProfile
    events: list[ExportedEvent]
