"""API key names: unique for good, non-empty, printable; rotation hands a name over."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ledger.bootstrap import Container
from ledger.keys import KeyNameError, Role, authenticate, create_key, list_keys, revoke_key, rotate_key


async def test_a_name_stays_taken_even_revoked_and_rotate_hands_it_over(container: Container) -> None:
    pool = container.pool
    old, old_token = await create_key(pool, "booking-system", Role.ingest)
    with pytest.raises(KeyNameError, match="ledger keys rotate booking-system"):
        await create_key(pool, "booking-system", Role.admin)
    assert await revoke_key(pool, "booking-system")
    with pytest.raises(KeyNameError, match="exists already"):
        await create_key(pool, "booking-system", Role.ingest)

    retired, new, token = await rotate_key(pool, "booking-system")
    assert retired.key_id == old.key_id and retired.replaced_by == new.key_id and retired.revoked_at is not None
    assert (new.name, new.role, new.revoked_at) == ("booking-system", Role.ingest, None)
    assert await authenticate(pool, old_token) is None
    assert (await authenticate(pool, token)).key_id == new.key_id  # type: ignore[union-attr]

    # Rotating an active key revokes it in the same transaction.
    retired2, newer, token2 = await rotate_key(pool, "booking-system")
    assert retired2.key_id == new.key_id and await authenticate(pool, token) is None
    assert (await authenticate(pool, token2)).role == Role.ingest  # type: ignore[union-attr]
    keys = [k for k in await list_keys(pool) if k.name == "booking-system"]
    assert [k.revoked_at is None for k in keys] == [False, False, True]
    with pytest.raises(KeyNameError, match="no key named"):
        await rotate_key(pool, "nobody")


@pytest.mark.parametrize("name", ["", "   ", " padded", "tab\there", "line\nbreak", "zero\u200bwidth",
                                  "bidi\u202eoverride", "nbsp\u00a0space", "x" * 65])
async def test_unusable_names_are_refused(container: Container, name: str) -> None:
    with pytest.raises(KeyNameError):
        await create_key(container.pool, name, Role.app)
    assert await list_keys(container.pool) == []


def _ledger(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LEDGER_DATABASE_URL=db_url)
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


async def test_the_command_line_says_what_is_wrong_in_one_line_with_status_2(db_url: str) -> None:
    first = _ledger(db_url, "keys", "create", "ops", "--role", "support")
    assert first.returncode == 0, first.stderr
    token = first.stdout.splitlines()[-1]
    again = _ledger(db_url, "keys", "create", "ops", "--role", "support")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "ledger keys rotate ops" in again.stderr and token not in again.stderr
    empty = _ledger(db_url, "keys", "create", "", "--role", "app")
    assert empty.returncode == 2 and "must not be empty" in empty.stderr and "Traceback" not in empty.stderr
    rotated = _ledger(db_url, "keys", "rotate", "ops")
    assert rotated.returncode == 0, rotated.stderr
    new_token = rotated.stdout.splitlines()[-1]
    assert new_token.startswith("lk_") and new_token != token
    listing = _ledger(db_url, "keys", "list").stdout
    assert "rotated" in listing and "active" in listing and token not in listing and new_token not in listing
    missing = _ledger(db_url, "keys", "rotate", "nobody")
    assert missing.returncode == 2 and "no key named 'nobody'" in missing.stderr and "Traceback" not in missing.stderr


def test_the_keys_commands_answer_a_mistake_in_one_line_and_exit_2(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.cli import main

    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    assert main(["keys", "create", "ops", "--role", "support"]) == 0
    assert main(["keys", "create", "ops", "--role", "support"]) == 2
    assert main(["keys", "revoke", "ops"]) == 0
    assert main(["keys", "revoke", "ops"]) == 2
    assert main(["keys", "revoke", "nobody"]) == 2
    assert main(["keys", "rotate", "nobody"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ledger keys create: a key named 'ops' exists already (revoked keys keep their names);"
        " `ledger keys rotate ops` issues a new key under that name",
        "ledger keys revoke: no active key named 'ops'; `ledger keys list` shows the keys",
        "ledger keys revoke: no active key named 'nobody'; `ledger keys list` shows the keys",
        "ledger keys rotate: no key named 'nobody'; `ledger keys create nobody --role ROLE` makes one",
    ]
