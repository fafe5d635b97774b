"""Members (M1), without services: the crypto module, email normalisation, the decisions
on enrolment, profile changes and erasure, and the rules flag `enrol_on_first_booking`."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.crypto import (
    CryptoError,
    MasterKey,
    MasterKeyError,
    development_master_key,
    generate_key_text,
    parse_master_key,
)
from ledger.domain import (
    DEFAULT_RULES_DICT,
    ChangeProfile,
    ConfirmBooking,
    EnrolMember,
    EraseMember,
    MemberEnrolled,
    MemberErased,
    MemberExists,
    MemberNotEnrolled,
    MemberNotFound,
    MemberProfileChanged,
    MemberState,
    ProgramRules,
    decide,
    evolve,
    fold,
    from_data,
    normalise_email,
    to_data,
)
from ledger.rulesets import RuleSet

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def master() -> MasterKey:
    return MasterKey(os.urandom(32))


def test_a_sealed_field_opens_with_its_key_member_and_field() -> None:
    key, _ = master().new_data_key("M-1")
    sealed = key.seal("email", "li.wei@example.com")
    assert "li.wei" not in sealed and "example" not in sealed
    assert key.open("email", sealed) == "li.wei@example.com"
    assert key.seal("email", "li.wei@example.com") != sealed  # a fresh nonce each time


def test_a_sealed_field_does_not_open_under_other_associated_data_or_key() -> None:
    vault = master()
    key, _ = vault.new_data_key("M-1")
    sealed = key.seal("email", "li.wei@example.com")
    other_member, _ = vault.new_data_key("M-2")
    with pytest.raises(CryptoError):
        type(key)("M-2", key.key).open("email", sealed)  # the same key, another member's id
    with pytest.raises(CryptoError):
        key.open("name", sealed)  # moved to another field
    with pytest.raises(CryptoError):
        other_member.open("email", sealed)
    tampered = bytearray(base64.urlsafe_b64decode(sealed))
    tampered[-1] ^= 1
    with pytest.raises(CryptoError):
        key.open("email", base64.urlsafe_b64encode(bytes(tampered)).decode())
    with pytest.raises(CryptoError):
        key.open("email", "not sealed at all")


def test_a_wrapped_data_key_opens_only_with_its_master_key_and_member() -> None:
    vault = master()
    key, wrapped = vault.new_data_key("M-1")
    assert wrapped != key.key and key.key not in wrapped
    assert vault.unwrap("M-1", wrapped) == key
    with pytest.raises(CryptoError):
        vault.unwrap("M-2", wrapped)
    with pytest.raises(CryptoError):
        master().unwrap("M-1", wrapped)


def test_a_destroyed_key_leaves_nothing_that_opens_the_fields() -> None:
    """Erasure keeps the ciphertext and drops the wrapped key: neither the master key nor
    a fresh data key for the same member opens what was sealed before."""
    vault = master()
    key, _ = vault.new_data_key("M-1")
    sealed = key.seal("name", "Li Wei")
    del key  # the wrapped key's row is set to NULL: nothing holds it any more
    again, _ = vault.new_data_key("M-1")
    with pytest.raises(CryptoError):
        again.open("name", sealed)


def test_the_email_hash_is_keyed() -> None:
    a, b = master(), master()
    assert a.email_hash("li.wei@example.com") == a.email_hash("li.wei@example.com")
    assert a.email_hash("li.wei@example.com") != b.email_hash("li.wei@example.com")
    assert a.email_hash("li.wei@example.com") != a.email_hash("wei.li@example.com")


def test_master_keys_are_32_bytes_of_base64() -> None:
    text = generate_key_text()
    assert len(parse_master_key(text)) == 32
    assert parse_master_key(text.replace("+", "-").replace("/", "_")) == parse_master_key(text)
    for bad in ("", "short", base64.b64encode(os.urandom(16)).decode(), "!" * 44):
        with pytest.raises(MasterKeyError):
            parse_master_key(bad)


def test_the_development_master_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = development_master_key(tmp_path / "data")
    path = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert development_master_key(tmp_path / "data") == first
    path.chmod(0o644)
    with pytest.raises(MasterKeyError, match="0600"):
        development_master_key(tmp_path / "data")


@pytest.mark.parametrize(("given", "normalised"), [
    ("Li.Wei@Example.COM", "li.wei@example.com"),
    ("  li.wei@example.com\t\n", "li.wei@example.com"),
    ("LI.WEI@EXAMPLE.COM ", "li.wei@example.com"),
    ("Jose\u0301@example.com", "jos\u00e9@example.com"),  # NFC: one form of é
])
def test_emails_are_normalised_for_the_index(given: str, normalised: str) -> None:
    assert normalise_email(given) == normalised


def enrol(member: str = "M-1", **fields: str) -> EnrolMember:
    return EnrolMember(member, T0, "support-desk", tuple(fields.items()), True)


def test_an_enrolment_records_only_what_it_was_given() -> None:
    (event,) = decide(MemberState("M-1"), enrol(name="sealed-name", email="sealed-email"), ProgramRules.from_dict(
        DEFAULT_RULES_DICT))
    assert event == MemberEnrolled(T0, "support-desk", "sealed-name", "sealed-email", None, None, None, None, True)
    assert from_data("MemberEnrolled", 1, to_data(event)) == event
    assert evolve(MemberState("M-1"), event).exists


def test_a_member_that_exists_cannot_enrol_again() -> None:
    rules = ProgramRules.from_dict(DEFAULT_RULES_DICT)
    state = fold("M-1", decide(MemberState("M-1"), enrol(), rules))
    with pytest.raises(MemberExists):
        decide(state, enrol(), rules)
    booked = fold("M-2", decide(MemberState("M-2"), ConfirmBooking("M-2", T0, "BK-1", "flight", Decimal("100"),
                                                                     "EUR"), rules))
    with pytest.raises(MemberExists):  # enrolled by its first booking
        decide(booked, enrol("M-2"), rules)


def test_a_profile_changes_and_is_erased_only_on_a_known_member() -> None:
    rules = ProgramRules.from_dict(DEFAULT_RULES_DICT)
    with pytest.raises(MemberNotFound):
        decide(MemberState("M-1"), ChangeProfile("M-1", T0, "app", (("email", "s"),), None), rules)
    with pytest.raises(MemberNotFound):
        decide(MemberState("M-1"), EraseMember("M-1", T0, "admin"), rules)
    state = fold("M-1", decide(MemberState("M-1"), enrol(), rules))
    (changed,) = decide(state, ChangeProfile("M-1", T0, "app", (("email", "s"), ("phone", "")), False), rules)
    assert changed == MemberProfileChanged(T0, "app", None, "s", "", None, None, None, False)
    assert decide(state, ChangeProfile("M-1", T0, "app", (), None), rules) == []
    assert decide(state, EraseMember("M-1", T0, "admin"), rules) == [MemberErased(T0, "admin")]


def test_without_enrolment_on_first_booking_a_booking_needs_an_enrolled_member() -> None:
    rules = ProgramRules.from_dict(RuleSet.model_validate(
        {**DEFAULT_RULES_DICT, "effective_from": "2026-01-01T00:00:00Z", "enrol_on_first_booking": False}).document())
    assert ProgramRules.from_dict(DEFAULT_RULES_DICT).enrol_on_first_booking  # today's behaviour by default
    booking = ConfirmBooking("M-1", T0, "BK-1", "flight", Decimal("100"), "EUR")
    with pytest.raises(MemberNotEnrolled, match="not enrolled"):
        decide(MemberState("M-1"), booking, rules)
    state = fold("M-1", decide(MemberState("M-1"), enrol(), rules))
    (earned,) = decide(state, booking, rules)
    assert earned.points > 0


def test_without_enrolment_on_first_booking_an_activity_needs_an_enrolled_member() -> None:
    # An activity (a share, a review, a survey) of an id the ledger never saw started a
    # member's stream, where a booking of it is refused: the flag let it in by another door.
    from ledger.domain import decide_streams
    from ledger.domain.earn import RecordActivity

    rules = ProgramRules.from_dict(RuleSet.model_validate(
        {**DEFAULT_RULES_DICT, "effective_from": "2026-01-01T00:00:00Z", "enrol_on_first_booking": False}).document())
    review = RecordActivity("M-1", T0, "rv-1", "review.submitted")
    with pytest.raises(MemberNotEnrolled, match="not enrolled"):
        decide_streams({"M-1": MemberState("M-1")}, review, rules)
    state = fold("M-1", decide(MemberState("M-1"), enrol(), rules))
    assert decide_streams({"M-1": state}, review, rules)["M-1"]
    # Enrolling on the first booking, the first activity enrols as well, as it did.
    assert decide_streams({"M-1": MemberState("M-1")}, review, ProgramRules.from_dict(DEFAULT_RULES_DICT))["M-1"]


def test_a_referral_of_or_by_a_merged_member_is_refused_naming_the_survivor() -> None:
    # A referral reads and writes two streams; unlike the one-member activities it did not
    # look at merges: a merged duplicate as referrer earned on its closed stream, which no
    # read shows, and as the referred member it answered "no completed booking yet".
    import dataclasses

    from ledger.domain import CompleteBooking, MemberMerged, decide_streams
    from ledger.domain.earn import RecordActivity

    rules = ProgramRules.from_dict(DEFAULT_RULES_DICT)
    live = fold("M-R", decide(MemberState("M-R"), CompleteBooking("M-R", T0, "BK-R", "flight", Decimal("100"), "EUR"),
                               rules))
    gone = dataclasses.replace(fold("M-D", decide(MemberState("M-D"), CompleteBooking(
        "M-D", T0, "BK-D", "flight", Decimal("100"), "EUR"), rules)), merged_into="M-S", status="closed")
    by_merged = RecordActivity("M-D", T0, "rf-1", "referral.completed", referred_member_id="M-R")
    with pytest.raises(MemberMerged) as refused:
        decide_streams({"M-D": gone, "M-R": live}, by_merged, rules)
    assert refused.value.details.get("merged_into") == "M-S", refused.value.details
    of_merged = RecordActivity("M-R", T0, "rf-2", "referral.completed", referred_member_id="M-D")
    with pytest.raises(MemberMerged):
        decide_streams({"M-R": live, "M-D": gone}, of_merged, rules)
