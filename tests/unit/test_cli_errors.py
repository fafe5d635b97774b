"""An operator's mistake is a few lines saying what to fix, not a traceback: a LEDGER_*
variable with a wrong value is one line naming the variable (exit status 2, from every
command), a database that cannot be started or reached is one line saying why (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.cli import main


@pytest.mark.parametrize("argv", [["serve"], ["keys", "list"], ["demo"], ["kafka", "init"]])
def test_invalid_settings_are_one_line_per_variable_and_exit_2(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_PORT", "abc")
    monkeypatch.setenv("LEDGER_DB_POOL_SIZE_MAX", "1")
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == [
        f"ledger {argv[0]}: LEDGER_DB_POOL_SIZE_MAX: Input should be greater than or equal to 2",
        f"ledger {argv[0]}: LEDGER_PORT: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_a_refused_combination_names_the_variables_and_never_echoes_a_value(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_ENVIRONMENT", "production")
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert capsys.readouterr().err == (
        "ledger migrate: LEDGER_DATABASE_URL is required when LEDGER_ENVIRONMENT=production\n")
    monkeypatch.setenv("LEDGER_ENVIRONMENT", "staging")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger:s3cret@db/ledger")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ledger migrate: LEDGER_ENVIRONMENT: ") and "s3cret" not in err


@pytest.mark.parametrize("argv", [["serve"], ["keys", "list"], ["migrate"], ["demo"]])
def test_a_database_that_cannot_be_reached_is_one_line_and_exit_1(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger:s3cret@127.0.0.1:1/ledger")  # nothing listens
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ledger {argv[0]}: cannot start on LEDGER_DATABASE_URL: ConnectionRefusedError: ")
    assert "Traceback" not in err and "s3cret" not in err and len(err.splitlines()) == 1


def test_an_embedded_data_directory_that_cannot_be_made_is_one_line_and_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "file" / "ledger"))
    assert main(["serve"]) == 1
    assert capsys.readouterr().err == (f"ledger serve: cannot start on the embedded PostgreSQL: NotADirectoryError:"
                                       f" [Errno 20] Not a directory: '{tmp_path / 'file' / 'ledger' / 'postgres'}'\n")


def test_a_master_key_that_is_not_32_bytes_of_base64_is_one_line_and_never_echoed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_MASTER_KEY", "c2hvcnQtc2VjcmV0")  # 12 bytes
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger@127.0.0.1:1/ledger")  # never reached either
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ledger serve: LEDGER_MASTER_KEY: ") and "32 bytes" in err and len(err.splitlines()) == 1
    assert "c2hvcnQtc2VjcmV0" not in err


def test_production_without_a_master_key_refuses_to_start_before_the_database(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_ENVIRONMENT", "production")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://ledger:s3cret@127.0.0.1:1/ledger")  # never reached
    monkeypatch.delenv("LEDGER_MASTER_KEY", raising=False)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ledger serve: LEDGER_MASTER_KEY is required when LEDGER_ENVIRONMENT=production")
    assert "Traceback" not in err and len(err.splitlines()) == 1
