"""A command given an id that names nothing says so and exits 2, rather than reporting
success for having done nothing."""

from __future__ import annotations

import pytest

from ledger.cli import main


def test_retrying_a_rejected_message_that_is_not_there_says_so(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    assert main(["rejected", "retry", "--id", "999999"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("ledger rejected retry: no pending rejected message has the id 999999"
                            " (`ledger rejected list --pending` shows them)\n")
    # --all with nothing pending is not a mistake: there is simply nothing to do.
    assert main(["rejected", "retry", "--all"]) == 0
    assert capsys.readouterr().out == "0 applied, 0 still rejected\n"
