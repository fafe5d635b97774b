"""What-if replays of a draft rule set, pure: each earn of a window priced again from
what its own event records, beside the points it actually carries.

An earn is priced from its event alone, so that a replay needs no member's state and
is the same whenever it runs:
- a booking (`PointsEarned`): its product, amount and currency; the converted amount
  when it earned by conversion (the draft earns on it in the programme currency unless
  the draft has a rate for the booking's own currency, in which case that rate wins, as
  for a live earn); the tier the event records (the lowest tier of the draft when the
  event has none, or names a tier the draft does not have); first booking when the
  event's breakdown has the `first_booking_bonus` entry; the promotions of the draft on
  the event's day (UTC);
- an activity (`ActivityPointsEarned`): the draft's points for its type (and role, for
  a referral), nothing when the event's breakdown says the booking had earned its bonus
  already (`once_per_booking:...`);
- an anniversary (`AnniversaryBonusGranted`): the draft's bonus for its year (nothing for
  a member closed then: the `member_closed` entry).

Caps count what a member was granted in a period: state the event does not carry. What
a cap withheld from an earn (its negative `cap:<source>:<period>` entries) is withheld
again from the simulated earn, at most what the draft grants from that source; the
draft's own caps are not applied (a draft that only changes caps changes nothing here).

A take-back of a replayed booking (a cancellation, refund or amendment: `EarnReversed`,
`BookingAmended`) takes back from the simulated earn in the proportion it took from the
actual one: `taken * simulated // actual` (toward zero), so that a draft equal to the
rules takes back exactly what was taken back, and a draft that doubles an earn doubles
its take-backs.

Every sum is keyed by product, tier or rule label (bounded by the rules), never by
member or event: the memory of a replay does not grow with the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .earn_rules import CLOSED, booking_source
from .errors import CurrencyNotEarned, InvalidCommand
from .rulebook import RuleBook
from .rules import ProgramRules

FIRST_BOOKING = "first_booking_bonus"
NO_TIER = "none"
Breakdown = tuple[tuple[str, int], ...]


def _with_caps(breakdown: list[tuple[str, int]], actual: Sequence[Sequence[Any]], source_of: Any) -> Breakdown:
    """`breakdown` with what the actual earn's caps withheld, each at most what the
    breakdown grants from the cap's source."""
    for label, withheld in actual:
        if not label.startswith("cap:") or withheld >= 0:
            continue
        source = label.split(":")[1]
        granted = sum(p for lab, p in breakdown if source_of(lab) == source)
        breakdown.append((label, max(withheld, -max(granted, 0))))
    return tuple(breakdown)


def _activity_source(label: str) -> str:
    return label.split(":")[1] if label.startswith(("activity:", "once_per_booking:")) else label.split(":", 1)[0]


def price_booking(rules: ProgramRules, *, at: datetime, product: str, amount: Decimal, currency: str,
                  converted: Decimal | None, tier: str | None, actual: Sequence[Sequence[Any]]) -> Breakdown | None:
    """The breakdown of a booking's earn under `rules` (see the module); None when the
    rules earn nothing on it (a product they have no rates for, or a currency they have
    no rate for and no exchange rate in force converts)."""
    rates = rules.earn_rates.get(product)
    if rates is None:
        return None
    if currency not in rates:
        if converted is not None and rules.programme_currency in rates:
            amount, currency = converted, rules.programme_currency
        else:
            try:
                fx = rules.conversion(product, amount, currency)
            except CurrencyNotEarned:
                return None
            assert fx is not None
            amount, currency = fx[0], rules.programme_currency
    if tier is None or tier not in rules._tier_bonuses:
        tier = rules.tiers[0].name
    first = any(label == FIRST_BOOKING for label, _ in actual)
    try:
        _, _, breakdown = rules.compute_earn(product=product, amount=amount, currency=currency, tier=tier,
                                             first_booking=first, at=at)
    except InvalidCommand:
        return None
    return _with_caps(list(breakdown), actual, booking_source)


def price_activity(rules: ProgramRules, *, kind: str, role: str, actual: Sequence[Sequence[Any]]) -> Breakdown:
    rule = rules.activities.get(kind)
    earned = 0 if rule is None else rule.referred_points if role == "referred" else rule.points
    breakdown = [(f"activity:{kind}", earned)]
    if any(label.startswith("once_per_booking:") for label, _ in actual):
        breakdown.append((f"once_per_booking:{kind}", -earned))
    return _with_caps(breakdown, actual, _activity_source)


def price_anniversary(rules: ProgramRules, *, year: int, actual: Sequence[Sequence[Any]]) -> Breakdown:
    earned = rules.anniversary.points(year) if rules.anniversary is not None else 0
    if any(label == CLOSED for label, _ in actual):  # the member was closed: it earned nothing, whatever the rules
        return ((f"anniversary:{year}", earned), (CLOSED, -earned))
    return _with_caps([(f"anniversary:{year}", earned)], actual, lambda label: label.split(":", 1)[0])


def scaled(taken: int, simulated: int, actual: int) -> int:
    """What a take-back of `taken` (signed) of an earn of `actual` points takes of the
    same earn at `simulated` points: in proportion, toward zero; 0 of an earn of 0."""
    if actual == 0:
        return 0
    value = abs(taken) * simulated // actual
    return value if taken >= 0 else -value


class Replay:
    """The sums of one replay. Each earn's rules are `book.at(occurred_at)`: a book of the
    draft alone (with the published exchange rates) for a simulation; the published book
    itself reproduces what was issued (a difference of zero)."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        # A book of one version (a draft): its rules price every earn that needs no
        # exchange rate, without looking the instant up.
        self._draft = book.versions[0].rules if len(book.versions) == 1 else None
        self.earns = 0
        self.not_earned = 0  # bookings the draft earns nothing on
        self.by_product: dict[str, list[int]] = {}
        self.by_tier: dict[str, list[int]] = {}
        self.by_rule: dict[str, list[int]] = {}
        self.earned = [0, 0]  # [actual, simulated]
        self.taken_back = [0, 0]
        self.take_backs = 0
        self.outstanding = [0, 0]  # of what the window earned, still outstanding at its end

    def _add(self, product: str, tier: str, points: int, breakdown: Iterable[Sequence[Any]], simulated: Breakdown,
             outstanding: tuple[bool, bool]) -> int:
        total = 0
        by_rule = self.by_rule
        for label, p in simulated:
            total += p
            row = by_rule.get(label)
            if row is None:
                row = by_rule[label] = [0, 0]
            row[1] += p
        for label, p in breakdown:
            row = by_rule.get(label)
            if row is None:
                row = by_rule[label] = [0, 0]
            row[0] += p
        row = self.by_product.get(product)
        if row is None:
            row = self.by_product[product] = [0, 0]
        row[0] += points
        row[1] += total
        row = self.by_tier.get(tier)
        if row is None:
            row = self.by_tier[tier] = [0, 0]
        row[0] += points
        row[1] += total
        self.earns += 1
        self.earned[0] += points
        self.earned[1] += total
        if outstanding[0]:
            self.outstanding[0] += points
        if outstanding[1]:
            self.outstanding[1] += total
        return total

    def _booking(self, at: datetime, product: str, amount: str, currency: str, converted: str | None,
                 tier: str | None, breakdown: Sequence[Sequence[Any]]) -> Breakdown | None:
        return price_booking(self.book.at(at), at=at, product=product, amount=Decimal(amount), currency=currency,
                             converted=None if converted is None else Decimal(converted), tier=tier, actual=breakdown)

    def booking(self, at: datetime, product: str, amount: str, currency: str, converted: str | None,
                tier: str | None, points: int, breakdown: Sequence[Sequence[Any]],
                outstanding: tuple[bool, bool]) -> int:
        """Adds one booking's earn; returns its simulated points."""
        # The common case spelt out (every earn of a replay comes here): a draft alone,
        # a rate for the booking's own currency, a tier the draft has. It gives what
        # `price_booking` gives, in one pass over the event's breakdown.
        rules = self._draft
        rates = None if rules is None else rules.earn_rates.get(product)
        if rates is not None and currency in rates and tier in rules._tier_bonuses:  # type: ignore[union-attr]
            first = capped = False
            for label, _ in breakdown:
                if label == FIRST_BOOKING:
                    first = True
                elif label.startswith("cap:"):
                    capped = True
            _, _, simulated = rules.compute_earn(  # type: ignore[union-attr]
                product=product, amount=Decimal(amount), currency=currency, tier=tier, first_booking=first, at=at)
            if capped:
                simulated = _with_caps(list(simulated), breakdown, booking_source)
            return self._add(product, tier, points, breakdown, simulated, outstanding)  # type: ignore[arg-type]
        priced = self._booking(at, product, amount, currency, converted, tier, breakdown)
        if priced is None:
            self.not_earned += 1
            priced = ()
        return self._add(product, tier or NO_TIER, points, breakdown, priced, outstanding)

    def price_booking(self, at: datetime, product: str, amount: str, currency: str, converted: str | None,
                      tier: str | None, breakdown: Sequence[Sequence[Any]]) -> int:
        """A booking's simulated points, added to no sum (for its take-backs)."""
        simulated = self._booking(at, product, amount, currency, converted, tier, breakdown)
        return 0 if simulated is None else sum(p for _, p in simulated)

    def activity(self, at: datetime, kind: str, role: str, points: int, breakdown: Sequence[Sequence[Any]],
                 outstanding: tuple[bool, bool]) -> int:
        simulated = price_activity(self.book.at(at), kind=kind, role=role, actual=breakdown)
        return self._add(f"activity:{kind}", NO_TIER, points, breakdown, simulated, outstanding)

    def anniversary(self, at: datetime, year: int, points: int, breakdown: Sequence[Sequence[Any]],
                    outstanding: tuple[bool, bool]) -> int:
        simulated = price_anniversary(self.book.at(at), year=year, actual=breakdown)
        return self._add("anniversary", NO_TIER, points, breakdown, simulated, outstanding)

    def take_back(self, taken: int, earned: tuple[int, int], outstanding: tuple[bool, bool]) -> None:
        """A take-back (signed: a refund is negative) of a replayed booking whose earn was
        `earned` (actual, simulated) points."""
        simulated = scaled(taken, earned[1], earned[0])
        self.take_backs += 1
        self.taken_back[0] += taken
        self.taken_back[1] += simulated
        if outstanding[0]:
            self.outstanding[0] += taken
        if outstanding[1]:
            self.outstanding[1] += simulated

    def result(self, *, cost_per_point: tuple[Decimal, Decimal], currency: str) -> dict[str, Any]:
        """The sums as the API shows them: actual, simulated and their difference."""

        def row(sums: Sequence[int]) -> dict[str, int]:
            return {"actual": sums[0], "simulated": sums[1], "difference": sums[1] - sums[0]}

        def rows(by: dict[str, list[int]], name: str) -> list[dict[str, Any]]:
            return [{name: key, **row(sums)} for key, sums in sorted(by.items())]

        net = [self.earned[0] + self.taken_back[0], self.earned[1] + self.taken_back[1]]
        actual_value = self.outstanding[0] * cost_per_point[0]
        simulated_value = self.outstanding[1] * cost_per_point[1]
        return {
            "earns": self.earns,
            "not_earned": self.not_earned,
            "take_backs": self.take_backs,
            "earned": row(self.earned),
            "taken_back": row(self.taken_back),
            "net": row(net),
            "by_product": rows(self.by_product, "product"),
            "by_tier": rows(self.by_tier, "tier"),
            "by_rule": rows(self.by_rule, "rule"),
            "liability": {
                **row(self.outstanding),
                "currency": currency,
                "actual_value": format(actual_value.quantize(Decimal("0.01")), "f"),
                "simulated_value": format(simulated_value.quantize(Decimal("0.01")), "f"),
                "difference_value": format((simulated_value - actual_value).quantize(Decimal("0.01")), "f"),
            },
        }
