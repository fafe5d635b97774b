"""Partial refunds and amendments through `POST /v1/booking-events`: each moves the
booking's points rule by rule, in proportion (rounded down), the first-booking bonus
whole while anything of the booking is left; what was already spent is the shortfall."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from math import floor
from typing import Any

import httpx

from ledger.domain import ProgramRules
from ledger.domain.rules import DEFAULT_RULES_DICT

from .conftest import Api

NIGHT = Decimal("122.47")
STAY = {
    "event_id": "stay-confirmed", "type": "booking.confirmed", "member_id": "M-STAY", "booking_id": "BK-STAY",
    "product": "hotel", "amount": str(NIGHT * 5), "currency": "EUR", "occurred_at": "2026-11-20T09:30:00+01:00",
}
BONUS = "first_booking_bonus"


def _refund(n: int, amount: Decimal, booking: dict[str, Any] = STAY) -> dict[str, Any]:
    return {**booking, "event_id": f"{booking['booking_id']}-refund-{n}", "type": "booking.refunded",
            "refund_amount": str(amount), "occurred_at": f"2026-11-2{n}T12:00:00+01:00"}


def _scaled(breakdown: dict[str, int], before: Decimal, after: Decimal) -> dict[str, int]:
    """The rule the refunds must follow, written out on its own: every rule in proportion,
    rounded down; the first-booking bonus whole while anything is left."""
    return {label: (points if after > 0 else 0) if label == BONUS else floor(points * after / before)
            for label, points in breakdown.items()}


async def _post(client: httpx.AsyncClient, event: dict[str, Any], status: int = 201) -> dict[str, Any]:
    r = await client.post("/v1/booking-events", json=event)
    assert r.status_code == status, r.text
    return r.json()


async def _head(client: httpx.AsyncClient, member_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/members/{member_id}/history", params={"limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["events"]


async def test_a_five_night_stay_refunded_night_by_night_takes_back_exactly_what_it_earned(api: Api) -> None:
    async with api.client("admin") as admin:
        earned = await _post(admin, STAY)
        (earn,) = earned["events"]
        held = dict(earn["data"]["breakdown"])
        # Base, the November hotel promotion and the first-booking bonus: three rules to follow.
        assert set(held) == {"base:hotel:EUR", "promotion:off-season-autumn-2026", BONUS}, held
        assert earned["points"] == earned["pending_points"] == sum(held.values()) == 12_746
        taken: dict[str, int] = dict.fromkeys(held, 0)
        left = NIGHT * 5
        for night in range(1, 6):
            if night == 3:  # more than is left: a domain refusal, and nothing changes
                history = await _head(admin, "M-STAY")
                state = await api.container.ledger.member_state("M-STAY")
                refused = await _post(admin, _refund(9, left + Decimal("0.01")), 409)
                assert refused["title"] == "Booking state conflict" and str(left) in refused["detail"], refused
                assert await _head(admin, "M-STAY") == history
                assert await api.container.ledger.member_state("M-STAY") == state
            result = await _post(admin, _refund(night, NIGHT))
            (amended,) = result["events"]
            assert amended["type"] == "BookingAmended"
            after = _scaled(held, left, left - NIGHT)
            change = {label: after[label] - held[label] for label in held}
            assert dict(amended["data"]["breakdown"]) == change, (night, amended["data"])
            assert amended["data"]["reason"] == "refunded" and amended["data"]["amount"] == str(left - NIGHT)
            assert result["points"] == amended["data"]["points"] == sum(change.values()) < 0
            assert result["pending_points"] == sum(after.values())  # the member's pending points: this stay's
            assert amended["data"]["shortfall"] == 0
            for label, points in change.items():
                taken[label] -= points
            held, left = after, left - NIGHT
            if night < 5:
                assert held[BONUS] == 500  # whole while anything of the stay is left
        assert held == dict.fromkeys(held, 0) and left == 0
        assert taken == dict(earn["data"]["breakdown"])  # the five add up to exactly the booking, rule by rule
        refused = await _post(admin, _refund(6, Decimal("0.01")), 409)
        assert refused["title"] == "Booking state conflict", refused
        state = await api.container.ledger.member_state("M-STAY")
        lot = state.lot("booking:BK-STAY")
        assert (lot.points, lot.remaining, lot.amount, state.pending) == (0, 0, "0.00", 0)


async def test_an_amendment_up_earns_the_difference_and_down_takes_it_back(api: Api) -> None:
    at = datetime(2026, 4, 2, tzinfo=UTC)  # no promotion: base and first-booking bonus
    booking = {**STAY, "event_id": "trip-completed", "type": "booking.completed", "member_id": "M-AMEND",
               "booking_id": "BK-AMEND", "amount": "500.00", "occurred_at": "2026-04-01T09:30:00+00:00"}
    ledger = api.container.ledger
    async with api.client("ingest") as ingest:
        assert (await _post(ingest, booking))["points"] == 5_500
        for n, (amount, points, available) in enumerate([("600.00", 1_000, 6_500), ("450.00", -1_500, 5_000),
                                                         ("500.00", 500, 5_500)]):
            result = await _post(ingest, {**booking, "event_id": f"trip-amended-{n}", "type": "booking.amended",
                                          "amount": amount, "occurred_at": f"2026-04-0{n + 2}T09:00:00+00:00"})
            (amended,) = result["events"]
            assert amended["data"]["reason"] == "amended" and amended["data"]["amount"] == amount
            assert result["points"] == points
            assert dict(amended["data"]["breakdown"]) == {"base:hotel:EUR": points, BONUS: 0}
            assert (await ledger.member_state("M-AMEND")).available(at) == available
        # The same amount again changes nothing and appends nothing.
        same = await _post(ingest, {**booking, "event_id": "trip-amended-same", "type": "booking.amended",
                                    "occurred_at": "2026-04-09T09:00:00+00:00"})
        assert (same["points"], same["events"]) == (0, [])


async def test_a_refund_after_points_were_spent_takes_what_is_left_and_records_the_shortfall(api: Api) -> None:
    """The shortfall rule: what the booking's lot no longer holds was spent; it is
    written off (by default) or becomes a debt, and a second refund never counts it again."""
    for member, negative in (("M-SPENT", False), ("M-DEBT", True)):
        api.container.ledger.rules = ProgramRules.from_dict({**DEFAULT_RULES_DICT, "allow_negative_balance": negative})
        booking = {**STAY, "event_id": f"{member}-completed", "type": "booking.completed", "member_id": member,
                   "booking_id": f"BK-{member}", "amount": "500.00", "occurred_at": "2026-04-01T09:30:00+00:00"}
        async with api.client("admin") as admin:
            assert (await _post(admin, booking))["points"] == 5_500
            r = await admin.post(f"/v1/members/{member}/redemptions", headers={"Idempotency-Key": f"{member}-r"},
                                 json={"points": 5_000, "reward": {"id": "HTL-1", "kind": "hotel_discount"}})
            assert r.status_code == 201 and r.json()["available_after"] == 500, r.text
            # Half the booking back: 2,500 base points, of which only 500 are left on the lot.
            half = await _post(admin, _refund(1, Decimal("250.00"), booking))
            (first,) = half["events"]
            assert first["data"]["breakdown"] == [["base:hotel:EUR", -2_500], [BONUS, 0]]
            assert first["data"]["lots"] == [{"lot_id": f"booking:BK-{member}", "points": 500}]
            assert (first["data"]["shortfall"], first["data"]["shortfall_debited"]) == (2_000, negative)
            assert half["points"] == -500 - (2_000 if negative else 0)
            # The rest: 2,500 base and the bonus, all spent; the 2,000 counted before are not counted again.
            rest = await _post(admin, _refund(2, Decimal("250.00"), booking))
            (second,) = rest["events"]
            assert second["data"]["breakdown"] == [["base:hotel:EUR", -2_500], [BONUS, -500]]
            assert (second["data"]["lots"], second["data"]["shortfall"]) == ([], 3_000)
            state = await api.container.ledger.member_state(member)
            assert first["data"]["shortfall"] + second["data"]["shortfall"] == 5_000  # what was spent
            assert (state.debt, state.available(datetime(2026, 4, 3, tzinfo=UTC))) == ((5_000, -5_000) if negative
                                                                                       else (0, 0))
            await _post(admin, _refund(3, Decimal("0.01"), booking), 409)


async def test_a_malformed_refund_or_amendment_is_a_422_naming_its_field(api: Api) -> None:
    async with api.client("ingest") as ingest:
        await _post(ingest, STAY)
        for field, event in (
            ("refund_amount", _refund(1, Decimal(0))),
            ("refund_amount", {**_refund(1, NIGHT), "refund_amount": None}),  # never a full refund by mistake
            ("refund_amount", {**_refund(1, NIGHT), "refund_amount": 122.47}),  # money travels as text
            ("refund_amount", {**STAY, "event_id": "e-x", "refund_amount": "1.00"}),  # on a confirmation
            ("amount", {**STAY, "event_id": "e-y", "type": "booking.amended", "amount": "-1.00"}),
        ):
            r = await ingest.post("/v1/booking-events", json=event)
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
            assert [e["field"] for e in r.json()["errors"]] == [field], r.json()
        assert (await api.container.ledger.member_state("M-STAY")).version == 1  # nothing applied
