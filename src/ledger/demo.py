"""`ledger demo`: a realistic programme to look at in the first minutes.

Members join over two years and book flights, hotels, packages, rail and cars in
their home currency (now and then in another), book ahead and travel later (pending
points that activate on completion), cancel some bookings, ask for refunds of a few
completed ones, redeem points for rewards and get goodwill adjustments from support.

Everything goes through the real ledger (`Ledger.handle_batch`), so every event is a
real one with its rule version, breakdown and hash chain. The commands are made
beforehand from a seeded random generator and folded through the pure domain while
they are made, so that a redemption asks only for what the member can spend then and
nothing is refused. The same seed and end date give the same programme, and the
commands carry idempotency keys, so a second run adds nothing.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from ledger.domain import (
    AdjustPoints,
    CancelBooking,
    Command,
    CompleteBooking,
    ConfirmBooking,
    LedgerError,
    MemberState,
    ProgramRules,
    RedeemPoints,
    RefundBooking,
    decide,
    evolve,
)
from ledger.handlers import Applied, CommandRequest, Duplicate, Ledger

MEMBERS_MAX = 100_000
BATCH_COMMANDS = 1_000
HISTORY_DAYS = 730
SOURCE = "demo"

# Home markets, weighted, with a rough price of one EUR in each currency.
CURRENCIES: dict[str, tuple[int, Decimal]] = {
    "EUR": (40, Decimal("1")), "GBP": (14, Decimal("0.86")), "USD": (14, Decimal("1.08")),
    "CHF": (5, Decimal("0.95")), "SEK": (5, Decimal("11.4")), "NOK": (3, Decimal("11.6")),
    "DKK": (3, Decimal("7.46")), "PLN": (4, Decimal("4.3")), "JPY": (4, Decimal("162")),
    "AUD": (3, Decimal("1.65")), "CAD": (3, Decimal("1.47")), "SGD": (2, Decimal("1.45")),
}
# product: (weight, EUR price range, days booked ahead, trip length in days)
PRODUCTS: dict[str, tuple[int, tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "flight": (35, (60, 1_400), (3, 120), (1, 1)),
    "hotel": (30, (70, 1_100), (1, 90), (1, 7)),
    "package": (10, (450, 4_000), (20, 180), (5, 14)),
    "rail": (15, (15, 220), (0, 30), (1, 1)),
    "car": (10, (40, 700), (1, 60), (2, 10)),
}
# (share of members, bookings per year)
TRAVELLERS = [(0.5, (1, 3)), (0.35, (4, 8)), (0.15, (10, 24))]
REWARDS = [("FLT-VOUCHER-50", "voucher"), ("HTL-DISC-20", "hotel_discount"), ("MILES-5000", "airline_miles"),
           ("LOUNGE-PASS", "travel_product"), ("SEAT-UPGRADE", "upgrade")]
GOODWILL = ["Flight delayed more than 3 hours", "Room not as booked", "Seat not as booked",
            "Lost luggage on the outbound flight", "Missing points from a partner booking"]
P_CANCEL, P_REFUND, P_COMPLETED_ONLY, P_REDEEM, P_GOODWILL, P_CORRECTION = 0.10, 0.04, 0.5, 0.3, 0.06, 0.01


@dataclass(frozen=True, slots=True)
class _Intent:
    """A command to make at `at`; `make` sees the member's state then (for redemptions
    and corrections) and may return None (nothing to redeem)."""

    at: datetime
    seq: int
    make: Callable[[MemberState], Command | None] = field(compare=False)


@dataclass
class DemoOutcome:
    members: int
    commands: int
    applied: int
    duplicates: int
    rejected: int
    events: Counter[str]
    currencies: Counter[str]
    first_at: datetime | None
    last_at: datetime | None


def _amount(rng: random.Random, product: str, currency: str) -> Decimal:
    low, high = PRODUCTS[product][1]
    eur = Decimal(round(rng.triangular(low, high, low + (high - low) / 4), 2))
    value = eur * CURRENCIES[currency][1]
    return value.quantize(Decimal("1") if currency == "JPY" else Decimal("0.01"))


def _member_intents(rng: random.Random, member: str, start: datetime, end: datetime) -> list[_Intent]:
    span_s = (end - start).total_seconds()
    joined = start + timedelta(seconds=rng.uniform(0, 0.6) * span_s)
    share, cut, rate_range = rng.random(), 0.0, TRAVELLERS[-1][1]
    for part, rates in TRAVELLERS:
        cut += part
        if share <= cut:
            rate_range = rates
            break
    years = (end - joined).total_seconds() / (365 * 86_400)
    bookings = max(1, round(rng.uniform(*rate_range) * years))
    home = rng.choices(list(CURRENCIES), weights=[w for w, _ in CURRENCIES.values()])[0]
    intents: list[_Intent] = []
    seq = 0

    def add(at: datetime, make: Callable[[MemberState], Command | None]) -> None:
        nonlocal seq
        if at <= end:
            intents.append(_Intent(at, seq, make))
            seq += 1

    for b in range(bookings):
        booked = joined + timedelta(seconds=rng.uniform(0, (end - joined).total_seconds()))
        booked = booked.replace(microsecond=0)
        product = rng.choices(list(PRODUCTS), weights=[p[0] for p in PRODUCTS.values()])[0]
        currency = home if rng.random() < 0.85 else rng.choice(list(CURRENCIES))
        amount = _amount(rng, product, currency)
        booking = f"{member}-B{b:03d}"
        ahead, length = PRODUCTS[product][2], PRODUCTS[product][3]
        trip_end = booked + timedelta(days=rng.randint(*ahead) + rng.randint(*length), hours=rng.randint(1, 12))
        completed_only = product in ("rail", "car") and rng.random() < P_COMPLETED_ONLY
        if not completed_only:
            add(booked, lambda _s, bk=booking, p=product, a=amount, c=currency, t=booked:
                ConfirmBooking(member, t, bk, p, a, c))
        if not completed_only and rng.random() < P_CANCEL:
            cancelled = booked + (trip_end - booked) * rng.uniform(0.05, 0.9)
            add(cancelled, lambda _s, bk=booking, t=cancelled: CancelBooking(member, t, bk))
            continue
        add(trip_end, lambda _s, bk=booking, p=product, a=amount, c=currency, t=trip_end:
            CompleteBooking(member, t, bk, p, a, c))
        if rng.random() < P_REFUND:
            refunded = trip_end + timedelta(days=rng.randint(1, 20))
            add(refunded, lambda _s, bk=booking, t=refunded: RefundBooking(member, t, bk))
        elif rng.random() < P_REDEEM:
            redeem_at = trip_end + timedelta(days=rng.randint(1, 60), hours=rng.randint(0, 23))
            reward = rng.choice(REWARDS)
            fraction = rng.uniform(0.3, 1.0)
            add(redeem_at, lambda s, t=redeem_at, r=reward, f=fraction, n=b:
                _redemption(s, t, f"{member}-R{n:03d}", r, f))
        if rng.random() < P_GOODWILL:
            when = trip_end + timedelta(days=rng.randint(1, 14))
            points = rng.choice([250, 500, 750, 1_000, 2_000])
            reason = rng.choice(GOODWILL)
            add(when, lambda _s, t=when, p=points, r=reason, n=b:
                AdjustPoints(member, t, f"{member}-A{n:03d}", p, r, "demo-support"))
        elif rng.random() < P_CORRECTION:
            when = trip_end + timedelta(days=rng.randint(1, 30))
            add(when, lambda s, t=when, n=b: _correction(s, t, f"{member}-C{n:03d}"))
    return intents


def _redemption(state: MemberState, at: datetime, rid: str, reward: tuple[str, str], fraction: float) -> Command | None:
    available = state.available(at)
    points = int(available * fraction) // 100 * 100
    if points < 500:
        return None
    return RedeemPoints(state.member_id, at, rid, points, *reward)


def _correction(state: MemberState, at: datetime, aid: str) -> Command | None:
    points = min(state.available(at), 500) // 50 * 50
    if points < 50:
        return None
    return AdjustPoints(state.member_id, at, aid, -points, "Duplicate partner credit reversed", "demo-support")


def demo_requests(rules: ProgramRules, *, members: int, seed: int, until: date) -> list[CommandRequest]:
    """Every member's commands, in time order, each one accepted by the domain."""
    assert 1 <= members <= MEMBERS_MAX
    end = datetime.combine(until, time(0), UTC)
    start = end - timedelta(days=HISTORY_DAYS)
    rng = random.Random(seed)
    streams: list[list[tuple[datetime, str, int, CommandRequest]]] = []
    for m in range(members):
        member = f"DEMO{seed}-{m:05d}"
        state = MemberState(member)
        stream = []
        for intent in sorted(_member_intents(rng, member, start, end), key=lambda i: (i.at, i.seq)):
            command = intent.make(state)
            if command is None:
                continue
            try:
                events = decide(state, command, rules)
            except LedgerError:
                continue  # the generator's mistake (e.g. a cancel after completion): leave it out
            for event in events:
                state = evolve(state, event)
            key = f"demo:{seed}:{member}:{intent.seq}"
            request = CommandRequest(command, idempotency_key=key,
                                     request_hash=hashlib.sha256(repr(command).encode()).hexdigest(),
                                     metadata={"source": SOURCE})
            stream.append((intent.at, member, intent.seq, request))
        streams.append(stream)
    return [item[3] for item in heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2]))]


async def load_demo(ledger: Ledger, rules: ProgramRules, *, members: int, seed: int, until: date,
                    progress: Callable[[int, int], None] | None = None) -> DemoOutcome:
    requests = demo_requests(rules, members=members, seed=seed, until=until)
    outcome = DemoOutcome(members, len(requests), 0, 0, 0, Counter(), Counter(), None, None)
    for i in range(0, len(requests), BATCH_COMMANDS):
        batch = requests[i:i + BATCH_COMMANDS]
        for request, result in zip(batch, await ledger.handle_batch(batch), strict=True):
            if isinstance(result, Applied):
                outcome.applied += 1
                outcome.events.update(e.event.type for e in result.events)
            elif isinstance(result, Duplicate):
                outcome.duplicates += 1
            else:
                outcome.rejected += 1
            currency = getattr(request.command, "currency", None)
            if currency:
                outcome.currencies[currency] += 1
        if progress is not None:
            progress(min(i + BATCH_COMMANDS, len(requests)), len(requests))
    if requests:
        outcome.first_at, outcome.last_at = requests[0].command.occurred_at, requests[-1].command.occurred_at
    return outcome
