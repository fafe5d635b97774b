"""The negative-balance policy through HTTP: a debt covered by later points is not
charged again when they reach their date, before or after the expiry job."""

from __future__ import annotations

from datetime import timedelta

from ledger.domain import ProgramRules, RefundBooking
from ledger.domain.rules import DEFAULT_RULES_DICT
from ledger.expiry import expire_due
from ledger.handlers import CommandRequest

from .conftest import Api
from tests.integration.helpers import T0, earn, redeem


async def test_a_covered_debt_is_not_charged_again_when_the_points_that_covered_it_expire(api: Api) -> None:
    c = api.container
    c.ledger.rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": True})
    b_at = T0 + timedelta(days=1)
    await c.ledger.handle(earn("M-1", "A", "60.00"))  # 800 with the first-booking bonus
    await c.ledger.handle(redeem("M-1", 700, "R1"))
    await c.ledger.handle(CommandRequest(RefundBooking("M-1", T0, "A")))  # -700
    await c.ledger.handle(earn("M-1", "B", "200.00", at=b_at))  # 1,000
    await c.ledger.handle(redeem("M-1", 300, "R2", at=b_at))  # 0: 700 of B cover the debt
    await c.runner.run_until_caught_up()
    b_expires = (await c.ledger.member_state("M-1")).lots["booking:B"].expires_at
    assert b_expires is not None
    async with api.client("app") as app:
        for at in (b_at, b_expires - timedelta(seconds=1), b_expires, b_expires + timedelta(days=1)):
            c.clock = lambda at=at: at
            r = await app.get("/v1/members/M-1/balance")
            assert r.status_code == 200 and r.json()["available"] == 0, (at, r.text)
        assert await expire_due(c.ledger, c.pool, b_expires) == 1  # B's 700 settle the debt
        await c.runner.run_until_caught_up()
        r = await app.get("/v1/members/M-1/balance")
        assert r.json()["available"] == 0 and r.json()["lifetime_expired"] == 0
    assert (await c.ledger.member_state("M-1")).available(b_expires) == 0
