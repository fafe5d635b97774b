"""P4, tier policies: what a member has towards each tier criterion, the tier it
qualifies for, the tier in force, and the decisions that change it; pure.

- A tier qualifies on any one of its criteria (`Tier.criteria`): tier-qualifying
  points, spend in the programme currency, hotel nights, flight or rail segments,
  bookings, counted over the policy's window ending at the instant asked about
  (`measures`). Only bookings that qualify (completed: `MemberState.qualifying`) count.
- The tier in force at an instant is the higher of the one the member's `TierChanged`
  events put in force then and the one it qualifies for then (`rank_in_force`): a
  member with no change yet (every member before tier policies) has, as before, the
  tier it qualifies for, and a member the rules of a new version qualify higher has it
  before the event that records it.
- An upgrade is at once: the command of the earn that qualifies appends a `TierChanged`
  after it (`upgrade`). A downgrade is one tier at a time, at an evaluation date plus the
  grace days, when the member did not qualify for the tier in force then, and is
  announced by a `TierWarning` `warning_days` before (`review`, the tier scheduler's).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .events import Event, PendingPointsActivated, PointsEarned, TierChanged, TierWarning
from .rules import TIER_CRITERIA, ProgramRules, TierPolicy
from .sorted_keys import SortedKeys
from .state import MemberState, evolve
from .timeutil import add_months

Have = dict[str, Decimal]  # criterion -> what the member has in the window
ZERO = Decimal(0)
_ONE_US = timedelta(microseconds=1)


def window_start(rules: ProgramRules, at: datetime) -> datetime:
    """The window counts what is dated in (start, at]: the rolling months before `at`,
    or the calendar year (UTC) of `at` so far."""
    if rules.tier_policy.window == "calendar_year":
        return datetime(at.astimezone(UTC).year, 1, 1, tzinfo=UTC) - _ONE_US
    return add_months(at, -rules.tier_window_months)


def _between(keys: SortedKeys, low: datetime, high: datetime) -> Iterator[tuple[datetime, str, int]]:
    """The keys with low < key[0] <= high, in order: the chunks wholly before are skipped."""
    i = bisect_right(keys.maxes, low, key=lambda key: key[0])
    for chunk in keys.chunks[i:]:
        for key in chunk:
            if key[0] > high:
                return
            if key[0] > low:
                yield key


def measures(state: MemberState, rules: ProgramRules, at: datetime) -> Have:
    """What the member has towards each criterion the rules use, in the window ending at
    `at`. Points are summed from the state's sums by date; the others walk the window's
    bookings, and only when a tier of the rules asks for them."""
    start = window_start(rules, at)
    have: Have = {"points": Decimal(state.qualifying.weight_between(start, at) if state.qualifying.size else 0)}
    if not rules.tier_criteria - {"points"}:
        return have
    spend, nights, segments, bookings = ZERO, 0, 0, 0
    for _, booking_id, _ in _between(state.qualifying, start, at):
        bookings += 1
        facts = state.tier_facts.get(booking_id)
        if facts is not None:
            nights += facts[1] or 0
            segments += facts[2] or 0
        if facts is not None and facts[0] is not None:
            spend += Decimal(facts[0])
        else:
            lot_id = state.bookings.get(booking_id)
            lot = state.lot(lot_id) if lot_id is not None else None
            if lot is not None and lot.currency == rules.programme_currency and lot.amount is not None:
                spend += Decimal(lot.amount)
    have.update(spend=spend, nights=Decimal(nights), segments=Decimal(segments), bookings=Decimal(bookings))
    return have


def qualified(rules: ProgramRules, have: Have) -> tuple[int, str, Decimal, Decimal]:
    """(rank, criterion, value, threshold): the highest tier (its index in the rules) any
    of whose criteria the member meets, and the first criterion met; the lowest tier
    (rank 0, by its points criterion) when none is."""
    for rank in range(len(rules.tiers) - 1, 0, -1):
        for criterion, threshold in rules.tiers[rank].criteria:
            value = have.get(criterion, ZERO)
            if value >= threshold:
                return rank, criterion, value, threshold
    return 0, "points", have.get("points", ZERO), ZERO


def rank_of(rules: ProgramRules, name: str | None) -> int:
    """A tier's rank in the rules; 0 for a tier they do not have (renamed by a later version)."""
    for rank, tier in enumerate(rules.tiers):
        if tier.name == name:
            return rank
    return 0


# The last window total asked for: a completed booking asks it twice of the same state
# and instant (for its multiplier, then for the upgrade it may qualify for), and each
# costs a calendar subtraction and a sum (about 1 us, a fifth of the decision). Only
# the objects themselves are compared: a state or rules object is never changed.
_last_total: list = [None, None, None, 0]  # [state, rules, at, total]


# Each rolling window of N months is at least 28 * N days long (a month has 28 days at
# least, and clamping a day to a shorter month only moves the start earlier).
_SHORTEST_WINDOW: dict[int, timedelta] = {}


def points_in_window(state: MemberState, rules: ProgramRules, at: datetime) -> int:
    """The tier-qualifying points in the window ending at `at`."""
    last = _last_total
    if last[0] is state and last[1] is rules and last[2] == at:
        return last[3]
    keys = state.qualifying
    if not keys.size:
        total = 0
    elif keys.maxes[-1][0] <= at and rules.tier_policy.window != "calendar_year" and keys.chunks[0][0][0] > at - (
            _SHORTEST_WINDOW.get(rules.tier_window_months) or _shortest(rules.tier_window_months)):
        # Every entry in the window (a member whose qualifying history is shorter than
        # the window's shortest length): the sum of the chunks' sums, without the window
        # start's calendar arithmetic (half a microsecond on every earn).
        total = sum(keys.sums)  # type: ignore[arg-type]
    else:
        total = keys.weight_between(window_start(rules, at), at)
    last[0], last[1], last[2], last[3] = state, rules, at, total
    return total


def _shortest(months: int) -> timedelta:
    return _SHORTEST_WINDOW.setdefault(months, timedelta(days=28 * months))


# The last recorded tier's rank asked for, as (state, rules, at, rank): a completed
# booking of a member with a tier change asks it twice of the same state and instant
# (for its multiplier, then for its upgrade), each a walk of its changes and the tiers.
_last_recorded: tuple = (None, None, None, 0)


def recorded_rank(state: MemberState, rules: ProgramRules, at: datetime) -> int:
    """The rank of the tier the member's `TierChanged` events put in force at `at` (0
    before the first)."""
    if not state.tiers:
        return 0
    global _last_recorded
    last = _last_recorded
    if last[0] is state and last[1] is rules and last[2] == at:
        return last[3]
    rank = rank_of(rules, state.tier_recorded_at(at))
    _last_recorded = (state, rules, at, rank)
    return rank


def rank_in_force(state: MemberState, rules: ProgramRules, at: datetime) -> int:
    recorded = recorded_rank(state, rules, at)
    if recorded == len(rules.tiers) - 1:
        return recorded  # the top: nothing to qualify for above it
    if rules.tier_points_only:
        # Every earn asks this: under rules on points only (every rule set before tier
        # policies), the window's total from the state's sums by date and the thresholds,
        # without the dictionary of what the member has (`qualified` of `measures`).
        total = points_in_window(state, rules, at)
        rank = 0
        for n, tier in enumerate(rules.tiers):
            if tier.threshold <= total:
                rank = n
        return max(recorded, rank)
    return max(recorded, qualified(rules, measures(state, rules, at))[0])


def tier_in_force(state: MemberState, rules: ProgramRules, at: datetime) -> str:
    """The name of the tier in force at `at`: what sets an earn's multiplier and prices
    a catalogue reward."""
    return rules.tiers[rank_in_force(state, rules, at)].name


def upgrade(before: MemberState, event: PointsEarned | PendingPointsActivated, rules: ProgramRules) -> list[Event]:
    """A `TierChanged` if `event` (a booking counting towards tiers from its
    `occurred_at`) qualifies the member for a tier above the one its tier changes put in
    force (the lowest before the first); else nothing. So the recorded tier is never
    below the one qualified for after a completed booking, which is what a review
    lands softly from (a member qualified higher by a new version's rules, or from
    before tier policies, gets its tier recorded by its next completed booking). Under
    rules that qualify on points only, the event's points are added to the window's
    (no state after it is made: every completed booking asks this)."""
    at = event.occurred_at
    rank = recorded_rank(before, rules, at)
    if rank == len(rules.tiers) - 1:
        return []
    if rules.tier_points_only:
        total = event.qualifying_points + points_in_window(before, rules, at)
        if total < rules.tiers[rank + 1].threshold:
            return []  # the usual answer: not even the next tier
        to, criterion, value, threshold = qualified(rules, {"points": Decimal(total)})
    else:
        to, criterion, value, threshold = qualified(rules, measures(evolve(before, event), rules, at))
    if to <= rank:
        return []
    return [TierChanged(at, rules.tiers[rank].name, rules.tiers[to].name, "upgrade", criterion, str(value),
                        str(threshold), rules.version, None)]


# Evaluation dates: anchored to the first of the month of the last change (monthly), to
# the first of January of its year (calendar_year_end) or to the change itself
# (anniversary), every `step` months after the anchor.


def _anchor(policy: TierPolicy, since: datetime) -> tuple[datetime, int]:
    since = since.astimezone(UTC)
    if policy.evaluation == "monthly":
        return datetime(since.year, since.month, 1, tzinfo=UTC), 1
    if policy.evaluation == "calendar_year_end":
        return datetime(since.year, 1, 1, tzinfo=UTC), 12
    return since, 12


def last_evaluation(policy: TierPolicy, since: datetime, cut: datetime) -> datetime | None:
    """The latest evaluation date after `since` and at or before `cut`; None if none."""
    anchor, step = _anchor(policy, since)
    cut = cut.astimezone(UTC)
    k = ((cut.year - anchor.year) * 12 + cut.month - anchor.month) // step
    for _ in range(3):  # the month count is off by at most one step either way
        if k >= 1 and add_months(anchor, k * step) > cut:
            k -= 1
    if k < 1:
        return None
    return add_months(anchor, k * step)


def next_evaluation(policy: TierPolicy, since: datetime, cut: datetime) -> datetime:
    """The first evaluation date after both `since` and `cut`."""
    last = last_evaluation(policy, since, cut)
    anchor, step = _anchor(policy, since)
    k = 1 if last is None else ((last.year - anchor.year) * 12 + last.month - anchor.month) // step + 1
    return add_months(anchor, k * step)


def _nearest(rules: ProgramRules, rank: int, have: Have) -> tuple[str, Decimal, Decimal]:
    """The criterion of a tier the member is nearest to meeting (the highest share of its
    threshold): what a downgrade names as its why."""
    best = max(rules.tiers[rank].criteria, key=lambda c: have.get(c[0], ZERO) / c[1] if c[1] else Decimal(1))
    return best[0], have.get(best[0], ZERO), best[1]


def review(state: MemberState, now: datetime, rules: ProgramRules) -> list[Event]:
    """The tier scheduler's decision for one member at `now`: a downgrade of one tier
    when an evaluation date has passed since the tier in force was put in force, plus
    the grace days, and the member did not qualify for it at the end of the grace (the
    window ending then); else a warning when the next such date is `warning_days` away
    or less, the member does not qualify now, and it was not warned of that date yet.
    Deterministic for a given state and `now`'s evaluation date, so two runners or a
    rerun append the same or (on the state after it) nothing."""
    if not state.tiers:
        return []  # no change recorded: the tier is what it qualifies for, as before tier policies
    since, name = state.tiers[-1]
    rank = rank_of(rules, name)
    if rank == 0 or since > now:
        return []
    policy = rules.tier_policy
    grace = timedelta(days=policy.grace_days)
    cut = now - grace
    evaluated = last_evaluation(policy, since, cut)
    if evaluated is not None:
        have = measures(state, rules, evaluated + grace)
        if qualified(rules, have)[0] < rank:
            criterion, value, threshold = _nearest(rules, rank, have)
            return [TierChanged(now, name, rules.tiers[rank - 1].name, "downgrade", criterion, str(value),
                                str(threshold), rules.version, evaluated)]
    upcoming = next_evaluation(policy, since, cut)
    downgrade_at = upcoming + grace
    if (policy.warning_days and now >= downgrade_at - timedelta(days=policy.warning_days)
            and state.tier_warned != upcoming and qualified(rules, measures(state, rules, now))[0] < rank):
        return [TierWarning(now, name, rules.tiers[rank - 1].name, upcoming, downgrade_at, rules.version)]
    return []


@dataclass(frozen=True)
class Need:
    criterion: str
    have: Decimal
    threshold: Decimal
    need: Decimal  # what is still missing: 0 when met
    by: datetime | None


@dataclass(frozen=True)
class TierOutlook:
    """What the tier route shows: the tier in force, what keeps it by when, and what
    reaches the next one."""

    tier: str
    since: datetime | None
    qualifies_for: str
    window_start: datetime
    keep: tuple[Need, ...]
    keep_by: datetime | None  # the next date a downgrade could happen; None at the lowest tier
    next_tier: str | None
    reach: tuple[Need, ...]
    reach_by: datetime | None  # the end of the calendar-year window; None for a rolling one


def outlook(state: MemberState, rules: ProgramRules, at: datetime) -> TierOutlook:
    have = measures(state, rules, at)
    rank = rank_in_force(state, rules, at)
    q = qualified(rules, have)[0]
    policy = rules.tier_policy
    since = None
    for changed_at, _ in state.tiers:
        if changed_at <= at:
            since = changed_at
    keep_by = None
    if rank > 0:
        grace = timedelta(days=policy.grace_days)
        keep_by = next_evaluation(policy, since or at, at - grace) + grace
    reach_by = None
    if policy.window == "calendar_year":
        reach_by = datetime(at.astimezone(UTC).year + 1, 1, 1, tzinfo=UTC)

    def needs(r: int, by: datetime | None) -> tuple[Need, ...]:
        out = []
        for criterion, threshold in rules.tiers[r].criteria:
            value = have.get(criterion, ZERO)
            out.append(Need(criterion, value, threshold, max(threshold - value, ZERO), by))
        return tuple(out)

    nxt = rank + 1 if rank + 1 < len(rules.tiers) else None
    return TierOutlook(
        tier=rules.tiers[rank].name, since=since, qualifies_for=rules.tiers[q].name,
        window_start=window_start(rules, at), keep=needs(rank, keep_by) if rank > 0 else (), keep_by=keep_by,
        next_tier=rules.tiers[nxt].name if nxt is not None else None,
        reach=needs(nxt, reach_by) if nxt is not None else (), reach_by=reach_by,
    )


assert set(TIER_CRITERIA) == {"points", "spend", "nights", "segments", "bookings"}
