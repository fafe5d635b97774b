"""The OpenAPI document: generated from the app, and honoured by it under fuzzing."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ledger.api.openapi import OUTPUT, render

from .conftest import Api

ROOT = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def test_openapi_json_is_generated_from_the_app() -> None:
    assert OUTPUT.read_text() == render(), "openapi/openapi.json is stale: run `python -m ledger.api.openapi`"


def test_every_operation_has_a_stable_id_and_examples() -> None:
    import json

    spec = json.loads(OUTPUT.read_text())
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) and all("_" not in i for i in ids)
    for name, schema in spec["components"]["schemas"].items():
        if name not in {"HTTPValidationError", "ValidationError"} and schema.get("type") == "object":
            assert schema.get("examples"), f"schema {name} has no example"


def test_ci_runs_the_readme_test_command() -> None:
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme


# A bound on a run that hangs, not a timing: 60 examples per operation over every route
# take 60 to 70 s on a quiet 2-core machine and 120 to 170 s on a busy one.
SCHEMATHESIS_S_MAX = 300


async def test_schemathesis_with_every_check_finds_nothing(api: Api, tmp_path: Path) -> None:
    """Every check, positive-data acceptance (a schema-valid request is not refused with
    4xx other than 401/403/404/409) and negative-data rejection included: the published
    contract and the validation are one."""
    # A member with history, so reads exercise real rows and not only 404s.
    async with api.client("admin") as admin:
        from .test_walkthrough import BOOKING

        await admin.post("/v1/booking-events", json={**BOOKING, "member_id": "0", "type": "booking.completed"})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run", str(OUTPUT), "--url", api.base_url,
        "--header", f"Authorization: Bearer {api.tokens['admin']}",
        "--checks", "all",
        "--max-examples", os.environ.get("LEDGER_SCHEMATHESIS_EXAMPLES", "60"),
        "--seed", os.environ.get("LEDGER_SCHEMATHESIS_SEED", "1"), "--workers", "1", "--request-timeout", "20",
        "--warnings", "off",
        "--report", "junit", "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), SCHEMATHESIS_S_MAX)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis ran past {SCHEMATHESIS_S_MAX} s") from None
    text = out.decode(errors="replace")
    print(text)
    assert process.returncode == 0, text[-6000:]
