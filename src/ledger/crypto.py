"""Per-member encryption of personal data (crypto-shredding), in one small module.

Three keys, kept apart:

- the master key (`LEDGER_MASTER_KEY`, 32 random bytes), which never encrypts data
  itself: two keys are derived from it with HKDF-SHA256 under their own labels;
- the wrapping key (derived) encrypts each member's data key, with the member id as
  associated data, so that a wrapped key copied to another member's row does not open;
- each member's data key (32 random bytes, AES-256-GCM) encrypts that member's profile
  fields, field by field, with `<member id>/<field>` as associated data, so that a
  ciphertext moved to another member or another field does not open either;
- the index key (derived) computes the keyed hash (HMAC-SHA256) of a normalised email
  that finds a member without a scan; without the master key the hash says nothing.

Every encryption takes a fresh random 96-bit nonce (AES-GCM's size; at a few writes
per member a lifetime, random nonces stay far from the collision bound). A sealed
value is `base64url(version byte 1 || nonce || ciphertext and tag)`, text that JSON
carries as it is.

Erasing a member destroys their data key: what was encrypted under it stays where it
is (events, snapshots, read models), unreadable for good.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits, AES-GCM's own size
_FORMAT = b"\x01"  # a first byte that names the layout, so that another can follow
_WRAP_LABEL = b"travel-points-ledger/member-data-key-wrap/v1"
_INDEX_LABEL = b"travel-points-ledger/email-index/v1"
MASTER_KEY_FILE = "master.key"


class CryptoError(Exception):
    """A sealed value that does not open: altered, under another key or other associated
    data, or of a member whose key was destroyed."""


class MasterKeyError(ValueError):
    """A master key that is not 32 bytes in base64."""


def parse_master_key(text: str) -> bytes:
    """The 32 bytes of a master key written in base64 (standard or URL-safe)."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError("the master key must be 32 bytes written in base64") from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(f"the master key must be 32 bytes written in base64 (this one is {len(raw)} bytes)")
    return raw


def generate_key_text() -> str:
    """A new master key, as LEDGER_MASTER_KEY takes it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def development_master_key(data_dir: Path) -> bytes:
    """The master key kept in `data_dir` for development, made on first use with mode
    0600 (created with that mode, never readable by others even for a moment). A file
    that others may read is refused rather than used."""
    path = data_dir / MASTER_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise MasterKeyError(f"{path} may be read by others (mode {mode:04o}); make it 0600") from None
        return parse_master_key(path.read_text())
    with os.fdopen(fd, "w") as f:
        f.write(generate_key_text() + "\n")
    return parse_master_key(path.read_text())


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(master)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return base64.urlsafe_b64encode(_FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)).decode()


def _open(key: bytes, sealed: str, aad: bytes) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
    except (binascii.Error, ValueError):
        raise CryptoError("not a sealed value") from None
    if len(raw) < 1 + NONCE_BYTES + 16 or raw[:1] != _FORMAT:
        raise CryptoError("not a sealed value")
    try:
        return AESGCM(key).decrypt(raw[1:1 + NONCE_BYTES], raw[1 + NONCE_BYTES:], aad)
    except InvalidTag:
        raise CryptoError("the value does not open with this key and associated data") from None


def field_aad(member_id: str, field: str) -> bytes:
    return f"{member_id}/{field}".encode()


@dataclass(frozen=True, slots=True)
class DataKey:
    """One member's data key, in clear: held only for the request that uses it."""

    member_id: str
    key: bytes

    def seal(self, field: str, value: str) -> str:
        return _seal(self.key, value.encode(), field_aad(self.member_id, field))

    def open(self, field: str, sealed: str) -> str:
        return _open(self.key, sealed, field_aad(self.member_id, field)).decode()


class MasterKey:
    """What the master key is used for: wrapping data keys, and the email index hash."""

    def __init__(self, master: bytes) -> None:
        assert len(master) == KEY_BYTES
        self._wrap = _derive(master, _WRAP_LABEL)
        self._index = _derive(master, _INDEX_LABEL)

    def new_data_key(self, member_id: str) -> tuple[DataKey, bytes]:
        """A fresh data key and its wrapped form (what is stored)."""
        key = AESGCM.generate_key(bit_length=256)
        return DataKey(member_id, key), self.wrap(member_id, key)

    def wrap(self, member_id: str, key: bytes) -> bytes:
        return _seal(self._wrap, key, member_id.encode()).encode()

    def unwrap(self, member_id: str, wrapped: bytes) -> DataKey:
        return DataKey(member_id, _open(self._wrap, wrapped.decode(), member_id.encode()))

    def email_hash(self, normalised_email: str) -> bytes:
        """The keyed hash the email index holds (never the email)."""
        return hmac.new(self._index, normalised_email.encode(), hashlib.sha256).digest()
