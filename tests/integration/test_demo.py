"""`ledger demo` loads a realistic programme through the real ledger, and the read
models it leaves equal a rebuild from its events."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from ledger.bootstrap import Container
from projections.runner import rebuild

from .test_projections import _tables


def _demo(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LEDGER_DATABASE_URL=db_url)
    return subprocess.run([sys.executable, "-m", "ledger.cli", "demo", *args], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


async def test_demo_then_a_rebuild_equals_the_live_read_models(db_url: str, container: Container) -> None:
    run = _demo(db_url, "--members", "200", "--seed", "5", "--until", "2026-06-30")
    assert run.returncode == 0, run.stderr
    assert "refused" not in run.stdout, run.stdout

    pool = container.pool
    types = dict(await pool.fetch("SELECT type, count(*) FROM events GROUP BY type"))
    assert {"PointsEarned", "PendingPointsActivated", "EarnReversed", "PointsRedeemed", "PointsAdjusted"} <= set(types)
    assert await pool.fetchval("SELECT count(DISTINCT stream_id) FROM events") == 200
    refunds = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'EarnReversed'"
                                  " AND data->>'reason' = 'refunded'")
    cancellations = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'EarnReversed'"
                                        " AND data->>'reason' = 'cancelled'")
    assert refunds > 0 and cancellations > 0
    currencies = await pool.fetchval("SELECT count(DISTINCT data->>'currency') FROM events WHERE type = 'PointsEarned'")
    assert currencies >= 8
    first, last = await pool.fetchrow("SELECT min(occurred_at), max(occurred_at) FROM events")
    assert (last - first).days >= 600 and last <= datetime(2026, 6, 30, tzinfo=UTC)
    assert await pool.fetchval("SELECT count(*) FROM balances WHERE pending > 0") > 0

    await container.project()
    live = await _tables(container)
    assert len(live["balances"]) == 200
    assert await rebuild(pool, container.store, page_size=500) == await container.store.head()
    assert await _tables(container) == live

    again = _demo(db_url, "--members", "200", "--seed", "5", "--until", "2026-06-30")
    assert again.returncode == 0 and "loaded already" in again.stdout, again.stdout + again.stderr
    assert dict(await pool.fetch("SELECT type, count(*) FROM events GROUP BY type")) == types
