"""The domain alone, no I/O: what one command costs on a member's state against the
length of the member's history, and what loading that state costs.

For a member with N events (four completed bookings to one redemption, spread over
600 days, as bench/history_bench.py seeds over HTTP) and one with 10, it times what the
handler does per command (decide, evolve, available_and_pending) for an earn, a
redemption and an expiry run with nothing due, each on the same state; then `fold` of
the whole history and a snapshot's round trip through JSON; then, as core_bench's
append does, a new member's ten earns (half pending, then completed) per event.

    .venv/bin/python bench/state_bench.py [--events 10000] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ledger.domain import (  # noqa: E402
    DEFAULT_RULES,
    CompleteBooking,
    ConfirmBooking,
    ExpirePoints,
    MemberState,
    RedeemPoints,
    decide,
    evolve,
    fold,
    from_snapshot,
    to_snapshot,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def history(member: str, events: int) -> list:
    """The events of `events` commands ending at NOW, decided one at a time."""
    state, out = MemberState(member), []
    start = NOW - timedelta(days=600)
    step = (NOW - start) / events
    for i in range(events):
        at = start + step * i
        if i % 5 == 4:
            command = RedeemPoints(member, at, f"rd-{i}", 100, "R", "voucher")
        else:
            command = CompleteBooking(member, at, f"bk-{i}", "hotel", Decimal("120.00"), "EUR")
        new = decide(state, command, DEFAULT_RULES)
        state = fold(member, new, state)
        out += new
    return out


def per_command_us(state: MemberState, make: Callable[[int], object], repeat: int) -> float:
    """Median of `repeat` runs of what the handler does with one command."""
    times = []
    for i in range(repeat):
        command = make(i)
        t = time.perf_counter()
        events = decide(state, command, DEFAULT_RULES)
        new = evolve(state, events[0]) if len(events) == 1 else fold(state.member_id, events, state)
        new.available_and_pending(command.occurred_at)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e6


def best_ms(run: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2_000)
    args = parser.parse_args()

    rows = []
    states = {}
    for n in (args.events, 10):
        events = history(f"m{n}", n)
        state = states[n] = fold(f"m{n}", events)
        at = NOW + timedelta(minutes=1)
        rows.append((n, {
            "earn": per_command_us(state, lambda i: CompleteBooking(
                state.member_id, at, f"new-{i}", "hotel", Decimal("180.00"), "EUR"), args.repeat),
            "redeem": per_command_us(state, lambda i: RedeemPoints(
                state.member_id, at, f"new-rd-{i}", 10, "MILES-10", "airline_miles"), args.repeat),
            "expire (none due)": per_command_us(state, lambda i: ExpirePoints(state.member_id, at, 1_000),
                                                args.repeat),
            "fold (ms)": best_ms(lambda: fold(f"m{n}", events)),
            "snapshot out (ms)": best_ms(lambda: orjson.dumps(to_snapshot(state))),
            "snapshot in (ms)": best_ms(
                lambda data=orjson.dumps(to_snapshot(state)): from_snapshot("m", state.version, orjson.loads(data))),
        }))
    (long_n, long), (short_n, short) = rows
    print(f"{'per command, µs (median)':<26} {long_n:>10} {short_n:>10} {'ratio':>7}")
    for name in long:
        print(f"{name:<26} {long[name]:>10.2f} {short[name]:>10.2f} {long[name] / short[name]:>7.1f}")

    # core_bench's append: new members, ten earns each, 30% confirmed first.
    members = max(args.repeat // 10, 50)
    commands = []
    for m in range(members):
        for r in range(10):
            at = NOW - timedelta(days=300 - 30 * r)
            cls = ConfirmBooking if (m + r) % 3 == 0 else CompleteBooking
            commands.append((f"c{m}", cls(f"c{m}", at, f"b{m}-{r}", "flight", Decimal("250.00"), "EUR")))
            if cls is ConfirmBooking:
                commands.append((f"c{m}", CompleteBooking(f"c{m}", at + timedelta(days=3), f"b{m}-{r}", "flight",
                                                           Decimal("250.00"), "EUR")))

    def small_members() -> None:
        current: dict[str, MemberState] = {}
        for member, command in commands:
            state = current.get(member) or MemberState(member)
            events = decide(state, command, DEFAULT_RULES)
            state = current[member] = evolve(state, events[0])
            state.available_and_pending(command.occurred_at)

    print(f"{'new members, per earn':<26} {best_ms(small_members) * 1e3 / len(commands):>10.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
