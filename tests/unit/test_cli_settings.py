"""A LEDGER_* variable with a wrong value is one line naming the variable, exit status 2,
from every command: not a pydantic traceback naming a field the user never typed."""

from __future__ import annotations

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
