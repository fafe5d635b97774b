"""Member state and `evolve`, the fold of a member's events.

What one command costs must not grow with the member's history (a corporate traveller
has thousands of bookings). So a state keeps, beside its lots, what decisions ask of
them, kept up to date by each event:

- `lots` holds only the open lots (pending, or active with points left); a lot that is
  spent, expired to nothing or reversed moves to `closed`, which nothing walks and a
  late reversal or refund still finds by its booking (`MemberState.lot`);
- `expiry` orders the open active lots by (expires_at, lot id): redemptions take from
  its front, the expiry job takes what is due from its front, and what is available
  at a moment is the `active` total less the few lots already past their date;
- `active` and `pending` are the points on open lots of each status;
- `qualifying` holds the tier-qualifying entries by date, with sums per chunk, so the
  tier window's total is a few lookups whatever the member's history.

The maps are `immutables.Map` (a persistent hash map: a change copies O(log n) nodes
and leaves the state before it as it was) and the two orders are `SortedKeys`
(persistent, in chunks): `evolve` returns a new state and never changes the one it was
given, which the handler's cache relies on when a transaction fails. Every change to a
lot goes through `_Draft.put`, the one place that keeps the indexes in step with the
lots; `evolve` and `fold` are the same code (`_Draft.apply`), for one event or many,
but for `evolve`'s two fast paths of a new lot (`_earned`, `_activated`), which the
property tests hold to the draft.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from immutables import Map

from ._frozen import fast_init
from .events import (
    BookingAmended,
    CatalogueRewardTaken,
    DebtSettled,
    RewardDefined,
    RewardStockReturned,
    RewardStockTaken,
    MemberMergedAway,
    MemberMergedIn,
    MemberStatusChanged,
    TierChanged,
    TierWarning,
    HoldCaptured,
    HoldReleased,
    PointsHeld,
    HouseholdCreated,
    HouseholdJoined,
    HouseholdLeft,
    HouseholdMemberAdded,
    HouseholdMemberRemoved,
    HouseholdPointsRedeemed,
    MemberEnrolled,
    MemberErased,
    MemberProfileChanged,
    PointsRedeemedForHousehold,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
    EarnReversed,
    Event,
    LotTake,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
)
from .sorted_keys import SortedKeys, SortedKeysEditor
# P3: earn beyond bookings.
from .earn_state import NO_EARN, EarnState, earn_applied, earn_from_snapshot, earn_snapshot, seen
from .events import ActivityPointsEarned, AnniversaryBonusGranted, BookingEarnCounted


@fast_init
@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: str
    booking_id: str | None
    points: int
    remaining: int
    status: str  # pending | active | reversed
    expires_at: datetime | None  # set on every active lot
    qualifying: int = 0  # tier-qualifying points the booking earned
    spent: int = 0  # redeemed or debited from this lot
    expired: int = 0
    qualified_at: datetime | None = None  # since when `qualifying` counts for the tier; None: it does not
    held: int = 0  # set aside by holds: neither remaining nor spent until captured or released
    charged: int = 0  # spent or held points a take-back of the booking counted as its shortfall
    amount: str | None = None  # the booking's amount now (a decimal string), for partial refunds and amendments
    breakdown: tuple[tuple[str, int], ...] = ()  # the points per rule the booking holds now
    currency: str | None = None  # of `amount`

    # Every lot keeps: points == remaining + held + spent + expired - charged, where
    # `points` is what the lot is worth now (an amendment or a partial refund changes it).

    def spendable(self, at: datetime) -> bool:
        return self.status == "active" and self.remaining > 0 and self.expires_at is not None and self.expires_at > at


@fast_init
@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    points: int
    lots: tuple[LotTake, ...]  # held on each lot, soonest expiry first
    expires_at: datetime
    reward_id: str
    reward_kind: str


@fast_init
@dataclass(frozen=True, slots=True)
class Redemption:
    """A redemption (or a captured hold) as a reversal needs it: what of each lot it took
    is not returned yet, in the order it took them (soonest expiry first)."""

    redemption_id: str
    points: int
    lots: tuple[LotTake, ...]  # not yet reversed, per lot

    @property
    def reversible(self) -> int:
        return sum(points for _, points in self.lots)


@fast_init
@dataclass(frozen=True, slots=True)
class RewardState:
    """A catalogue reward's stream folded: its definition now, and the units of stock
    taken by open holds and by redemptions not reversed in full."""

    reward_id: str
    kind: str
    name_en: str
    name_zh_cn: str | None
    points_by_tier: tuple[tuple[str, int], ...]
    stock: int | None  # units in all; None: unlimited
    available_from: datetime | None
    available_to: datetime | None
    miles_ratio: str | None
    partner: str | None
    taken: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.stock is None else self.stock - self.taken


def _reward_defined(event: RewardDefined, taken: int) -> RewardState:
    return RewardState(event.reward_id, event.kind, event.name_en, event.name_zh_cn, event.points_by_tier,
                       event.stock, event.available_from, event.available_to, event.miles_ratio, event.partner,
                       taken)


def _reward_taken(reward: RewardState | None, change: int) -> RewardState:
    assert reward is not None, "stock moves only on a defined reward"
    taken = reward.taken + change
    assert taken >= 0 and (reward.stock is None or taken <= reward.stock), (reward, change)
    return RewardState(reward.reward_id, reward.kind, reward.name_en, reward.name_zh_cn, reward.points_by_tier,
                       reward.stock, reward.available_from, reward.available_to, reward.miles_ratio, reward.partner,
                       taken)


# (year, points sent, transfers sent, points received, transfers received, the last
# transfer received): the year's totals that the transfer limits count, UTC calendar
# year; a transfer in a later year starts them again.
TransferYear = tuple[int, int, int, int, int, str]


def transfer_year(state: MemberState, at: datetime) -> TransferYear:
    """The state's transfer totals as they stand in `at`'s year."""
    return _year_of(state.transfers, at)


_NO_ENTRIES: Map = Map()
_NO_KEYS = SortedKeys()
_NO_WEIGHTED_KEYS = SortedKeys(sums=())


@fast_init
@dataclass(frozen=True, slots=True)
class MemberState:
    member_id: str
    version: int = 0
    lots: Map = _NO_ENTRIES  # lot id -> Lot: the open lots (pending, or active with points left)
    closed: Map = _NO_ENTRIES  # lot id -> Lot: the others (spent, expired, reversed), never walked
    bookings: Map = _NO_ENTRIES  # booking id -> lot id
    expiry: SortedKeys = _NO_KEYS  # (expires_at, lot id) of each open active lot: the order of redemptions
    qualifying: SortedKeys = _NO_WEIGHTED_KEYS  # (qualified at, booking id, points), summed per chunk
    active: int = 0  # points on the open active lots, whatever their dates
    pending: int = 0  # points on the pending lots
    debt: int = 0  # a shortfall debited as a negative balance
    held: int = 0  # points on the open holds
    holds: Map = _NO_ENTRIES  # hold id -> Hold: the open holds
    holds_closed: Map = _NO_ENTRIES  # hold id -> how it ended: captured | released | expired
    redemptions: Map = _NO_ENTRIES  # redemption id -> Redemption: what a reversal may still return
    transfers: tuple[int, int, int, int, int, str] = (0, 0, 0, 0, 0, "")  # see TransferYear
    # A member's: the household it is in (one at most). A household stream's: its own id.
    household_id: str | None = None
    household_roster: tuple[str, ...] = ()  # a household stream's members: its head first, then by joining
    # A member's: ("hold" | "redemption", id) -> the catalogue reward of each open hold and
    # each redemption not reversed in full, whose unit of stock comes back with it.
    catalogue: Map = _NO_ENTRIES
    reward: RewardState | None = None  # a reward stream's: the reward and its stock
    # Members (M2): active | suspended | closed; a merged duplicate is closed, with the
    # member it was merged into.
    status: str = "active"
    merged_into: str | None = None
    # P4, tier policies. (instant, tier) of each `TierChanged`, by instant: the tier in
    # force at any moment is the last one at or before it (`tier_recorded_at`); empty
    # until the member's first change (its tier is then what it qualifies for).
    tiers: tuple[tuple[datetime, str], ...] = ()
    tier_warned: datetime | None = None  # the evaluation date of the last `TierWarning`
    # booking id -> (spend in the programme currency or None, nights, segments): what a
    # booking counts towards tiers besides its points and itself, for those that carry any.
    tier_facts: Map = _NO_ENTRIES
    earn: EarnState = NO_EARN  # P3: activities, referrals, anniversaries and cap counters

    def tier_recorded_at(self, at: datetime) -> str | None:
        """The tier the member's `TierChanged` events put in force at `at`; None before the first."""
        name = None
        for since, tier in self.tiers:
            if since > at:
                break
            name = tier
        return name

    @property
    def exists(self) -> bool:
        return self.version > 0

    def lot(self, lot_id: str) -> Lot:
        """Any lot of the member's, open or closed (KeyError for one it never had)."""
        lot = self.lots.get(lot_id)
        return lot if lot is not None else self.closed[lot_id]

    def all_lots(self) -> dict[str, Lot]:
        """Every lot, open and closed: for snapshots, audits and tests. It walks the whole
        history, so no command asks for it."""
        return {**self.lots, **self.closed}

    def overdue(self, at: datetime) -> int:
        """Points on active lots already past their date at `at` (which the expiry job
        has not reached yet): only those lots are walked, from the front of `expiry`."""
        chunks = self.expiry.chunks
        if not chunks or chunks[0][0][0] > at:
            return 0  # nothing past its date: the usual answer, asked after every command
        total = 0
        lots = self.lots
        for expires_at, lot_id in self.expiry:
            if expires_at > at:
                break
            total += lots[lot_id].remaining
        return total

    def available(self, at: datetime) -> int:
        """Spendable now: active lots not yet past their date, less any debt they owe."""
        overdue = self.overdue(at)
        return self.active - overdue - max(self.debt - overdue, 0)

    def available_and_pending(self, at: datetime) -> tuple[int, int]:
        """`(self.available(at), self.pending)`: what the handler records after every command."""
        chunks = self.expiry.chunks
        if not self.debt and (not chunks or chunks[0][0][0] > at):
            return self.active, self.pending  # no debt, nothing past its date: the usual case, first
        return self.available(at), self.pending

    def debt_owed(self, at: datetime) -> int:
        """The debt that the spendable points still owe at `at`.

        A debt is paid off by the soonest-expiring points first: when a lot reaches its
        date, what is left of it settles the debt (`DebtSettled`) and only the rest
        expires. Points already past their date that the expiry job has not reached yet
        will settle it that way, so they are counted against the debt now: available is
        the same before and after the job, and the debt is never charged twice."""
        if not self.debt:
            return 0
        return max(self.debt - self.overdue(at), 0)

    @property
    def balance(self) -> int:
        """Active points still on lots, less debt, whatever their dates (the ledger view
        until the expiry job has run)."""
        return self.active - self.debt

    def fifo(self, at: datetime) -> Iterator[Lot]:
        """The spendable lots at `at`, in the order redemptions consume them (soonest
        expiry first), lazily: a redemption walks only the lots it takes from (and any
        past their date, which come first and are skipped)."""
        lots = self.lots
        for expires_at, lot_id in self.expiry:
            if expires_at > at:
                yield lots[lot_id]

    def spendable_lots(self, at: datetime) -> list[Lot]:
        """In the order redemptions consume them: soonest expiry first."""
        return list(self.fifo(at))

    def due_lots(self, at: datetime, lots_max: int) -> list[Lot]:
        """The first `lots_max` active lots with points left whose date is at or before
        `at`, soonest first (then by lot id): what an expiry run takes."""
        due: list[Lot] = []
        lots = self.lots
        for expires_at, lot_id in self.expiry:
            if expires_at > at or len(due) == lots_max:
                break
            due.append(lots[lot_id])
        return due

    def qualifying_in_window(self, window_start: datetime, at: datetime) -> int:
        """The tier-qualifying points dated in (window_start, at]."""
        return self.qualifying.weight_between(window_start, at)

    def qualifying_entries(self) -> list[tuple[datetime, int]]:
        return [(at, points) for at, _, points in self.qualifying]


# Lots and states are built directly rather than through `dataclasses.replace`, which
# inspects the dataclass's fields on every call: every command and every replayed
# event goes through here.


def _counts(lot: Lot, remaining: int, held: int, spent: int, expired: int, charged: int, points: int | None = None,
            status: str | None = None) -> Lot:
    """The lot with its counters (and its worth, or status) changed: every change of a
    lot's points goes through here, so that the identity the `Lot` states holds."""
    assert min(remaining, held, spent, expired, charged) >= 0, (lot, remaining, held, spent, expired, charged)
    return Lot(
        lot.lot_id, lot.booking_id, lot.points if points is None else points, remaining,
        lot.status if status is None else status, lot.expires_at, lot.qualifying, spent, expired, lot.qualified_at,
        held, charged, lot.amount, lot.breakdown, lot.currency,
    )


def _taken(lot: Lot, amount: int, spent: bool) -> Lot:
    """The lot after `amount` points were taken from it: spent (redeemed or debited), or
    taken back by a reversal (the lot is then worth that much less)."""
    assert 0 < amount <= lot.remaining, (lot.lot_id, amount, lot.remaining)
    if spent:
        return _counts(lot, lot.remaining - amount, lot.held, lot.spent + amount, lot.expired, lot.charged)
    return _counts(lot, lot.remaining - amount, lot.held, lot.spent, lot.expired, lot.charged, lot.points - amount)


def _expired(lot: Lot, points: int) -> Lot:
    return _counts(lot, lot.remaining - points, lot.held, lot.spent, lot.expired + points, lot.charged)


class _Draft:
    """A state being changed by events, leaving the state it started from as it was;
    `finish` freezes it. The maps change through their mutations (`Map.mutate`, copy on
    write: in place for what this draft made, a path of the trie for the rest) and the
    orders through their editors (the list of chunks copied once, not per event)."""

    __slots__ = ("member_id", "version", "lots", "closed", "bookings", "expiry", "qualifying", "active", "pending",
                 "debt", "held", "holds", "holds_closed", "redemptions", "transfers", "household_id",
                 "household_roster", "catalogue", "reward", "status", "merged_into", "tiers", "tier_warned",
                 "tier_facts", "earn")

    def __init__(self, state: MemberState) -> None:
        self.member_id = state.member_id
        self.version = state.version
        self.lots, self.closed, self.bookings = state.lots.mutate(), state.closed.mutate(), state.bookings.mutate()
        self.expiry, self.qualifying = state.expiry.edit(), state.qualifying.edit()
        self.active, self.pending, self.debt = state.active, state.pending, state.debt
        self.held, self.transfers = state.held, state.transfers
        # Changed by few events: mutated only when one is (`Map.mutate` costs a little on every draft).
        self.holds, self.holds_closed, self.redemptions = state.holds, state.holds_closed, state.redemptions
        self.household_id, self.household_roster = state.household_id, state.household_roster
        self.catalogue, self.reward = state.catalogue, state.reward
        self.status, self.merged_into = state.status, state.merged_into
        self.tiers, self.tier_warned, self.tier_facts = state.tiers, state.tier_warned, state.tier_facts
        self.earn = state.earn

    def finish(self) -> MemberState:
        return MemberState(self.member_id, self.version, self.lots.finish(), self.closed.finish(),
                           self.bookings.finish(), self.expiry.finish(), self.qualifying.finish(), self.active,
                           self.pending, self.debt, self.held, self.holds, self.holds_closed, self.redemptions,
                           self.transfers, self.household_id, self.household_roster, self.catalogue, self.reward,
                           self.status, self.merged_into, self.tiers, self.tier_warned, self.tier_facts,
                           self.earn)

    def lot(self, lot_id: str) -> Lot:
        lot = self.lots.get(lot_id)
        return lot if lot is not None else self.closed[lot_id]

    def put(self, old: Lot | None, new: Lot) -> None:
        """`new` in the place of `old` (None: a lot not seen before). With `_add` and
        `_drop`, the one place that moves lots between `lots` and `closed` and keeps
        `expiry`, `qualifying` and the totals in step with them."""
        if old is None:
            self._add(new)
        elif (new.status == "active" and old.status == "active" and new.remaining > 0 and old.remaining > 0
              and new.expires_at == old.expires_at and new.qualified_at == old.qualified_at
              and new.qualifying == old.qualifying):
            # Points taken and the lot still open (a redemption's usual case): it keeps its
            # place in both orders.
            self.active += new.remaining - old.remaining
            self.lots[new.lot_id] = new
        else:
            self._drop(old)
            self._add(new)

    def _add(self, lot: Lot) -> None:
        lot_id = lot.lot_id
        status = lot.status
        if status == "active" and lot.remaining > 0:
            assert lot.expires_at is not None, f"active lot {lot_id!r} without an expiry date"
            self.expiry.insert((lot.expires_at, lot_id))
            self.active += lot.remaining
            self.lots[lot_id] = lot
        elif status == "pending":
            self.pending += lot.remaining
            self.lots[lot_id] = lot
        else:
            self.closed[lot_id] = lot
        if lot.qualified_at is not None:
            self.qualifying.insert((lot.qualified_at, lot.booking_id, lot.qualifying))

    def _drop(self, lot: Lot) -> None:
        """What `_add` did for `lot`, undone."""
        lot_id = lot.lot_id
        status = lot.status
        if status == "active" and lot.remaining > 0:
            self.expiry.remove((lot.expires_at, lot_id))
            self.active -= lot.remaining
            del self.lots[lot_id]
        elif status == "pending":
            self.pending -= lot.remaining
            del self.lots[lot_id]
        else:
            del self.closed[lot_id]
        if lot.qualified_at is not None:
            self.qualifying.remove((lot.qualified_at, lot.booking_id, lot.qualifying))

    def _existing(self, lot_id: str) -> Lot | None:
        """A lot of this id that a new one replaces (never, for lots that `decide` made)."""
        return self.lots.get(lot_id) or self.closed.get(lot_id)

    def _take(self, takes: Iterable[LotTake], *, spent: bool) -> None:
        for lot_id, amount in takes:
            lot = self.lot(lot_id)
            self.put(lot, _taken(lot, amount, spent))

    def apply(self, event: Event) -> None:
        self.version += 1
        match event:
            case PointsEarned():
                lot = Lot(
                    event.lot_id, event.booking_id, event.points, event.points, event.status, event.expires_at,
                    event.qualifying_points, 0, 0, event.occurred_at if event.status == "active" else None,
                    0, 0, event.amount, event.breakdown, event.currency,
                )
                self.put(self._existing(lot.lot_id), lot)
                self.bookings[event.booking_id] = event.lot_id
                facts = _tier_facts(event)
                if facts is not None:
                    self.tier_facts = self.tier_facts.set(event.booking_id, facts)
                self.earn = seen(self.earn, event.occurred_at)
            case PendingPointsActivated():
                lot = self.lot(event.lot_id)
                self.put(lot, Lot(
                    lot.lot_id, lot.booking_id, lot.points, lot.remaining, "active", event.expires_at,
                    event.qualifying_points, lot.spent, lot.expired, event.occurred_at, lot.held, lot.charged,
                    lot.amount, lot.breakdown, lot.currency,
                ))
            case PointsRedeemed():
                self._take(event.lots, spent=True)
                self._redeemed(event.redemption_id, event.points, event.lots)
            case PointsExpired():
                lot = self.lot(event.lot_id)
                self.put(lot, _expired(lot, event.points))
            case DebtSettled():
                # Spent, as a redemption's points are: a refund of the lot's booking later takes
                # back what paid the debt as its shortfall, so the debt comes back.
                assert event.points <= self.debt, (event.points, self.debt)
                lot = self.lot(event.lot_id)
                self.put(lot, _taken(lot, event.points, True))
                self.debt -= event.points
            case PointsAdjusted():
                if event.points > 0:
                    assert event.lot_id is not None
                    self.put(self._existing(event.lot_id),
                             Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at))
                else:
                    self._take(event.lots, spent=True)
            case EarnReversed():
                self._take(event.lots, spent=False)
                lot = self.lot(self.bookings[event.booking_id])
                # The shortfall (spent or held points the booking no longer pays for) is charged
                # to the lot, which is then worth only what expired from it.
                self.put(lot, Lot(
                    lot.lot_id, lot.booking_id, lot.points - event.shortfall, lot.remaining, "reversed",
                    lot.expires_at, lot.qualifying, lot.spent, lot.expired, None, lot.held,
                    lot.charged + event.shortfall, lot.amount, lot.breakdown, lot.currency,
                ))
                self.debt += event.shortfall if event.shortfall_debited else 0
            case BookingAmended():
                self._amended(event)
            case PointsHeld():
                for lot_id, points in event.lots:
                    lot = self.lot(lot_id)
                    self.put(lot, _counts(lot, lot.remaining - points, lot.held + points, lot.spent, lot.expired,
                                          lot.charged))
                self.held += event.points
                self.holds = self.holds.set(event.hold_id, Hold(
                    event.hold_id, event.points, event.lots, event.expires_at, event.reward_id, event.reward_kind))
            case HoldCaptured():
                for lot_id, points in event.lots:
                    lot = self.lot(lot_id)
                    self.put(lot, _counts(lot, lot.remaining, lot.held - points, lot.spent + points, lot.expired,
                                          lot.charged))
                self.held -= event.points
                self._close_hold(event.hold_id, "captured")
                self._redeemed(event.redemption_id, event.points, event.lots)
                reward_id = self.catalogue.get(("hold", event.hold_id))
                if reward_id is not None:  # the held unit is the redemption's now
                    self.catalogue = self.catalogue.delete(("hold", event.hold_id)).set(
                        ("redemption", event.redemption_id), reward_id)
            case HoldReleased():
                self._returned(event.lots, event.expired, event.forfeited, from_held=True)
                self.held -= event.points
                self.debt -= event.debt_repaid
                if event.hold_id in self.holds:  # else captured just before, by the same command
                    self._close_hold(event.hold_id, event.reason)
                    if ("hold", event.hold_id) in self.catalogue:
                        self.catalogue = self.catalogue.delete(("hold", event.hold_id))
            case RedemptionReversed():
                self._returned(event.lots, event.expired, event.forfeited, from_held=False)
                self.debt -= event.debt_repaid
                for lot_id, points in event.regranted:
                    lot = self.lot(lot_id)
                    self.put(lot, _counts(lot, lot.remaining, lot.held, lot.spent - points, lot.expired, lot.charged,
                                          lot.points - points))
                if event.grace_lot_id is not None:
                    regranted = sum(points for _, points in event.regranted)
                    self.put(self._existing(event.grace_lot_id),
                             Lot(event.grace_lot_id, None, regranted, regranted, "active", event.expires_at))
                redemption = self.redemptions[event.redemption_id]
                left = dict(redemption.lots)
                for lot_id, points in (*event.lots, *event.expired, *event.forfeited, *event.regranted):
                    left[lot_id] -= points
                self.redemptions = self.redemptions.set(event.redemption_id, Redemption(
                    redemption.redemption_id, redemption.points, tuple((k, v) for k, v in left.items() if v > 0)))
                if not any(left.values()) and ("redemption", event.redemption_id) in self.catalogue:
                    # Reversed in full: its unit of stock went back in the same command.
                    self.catalogue = self.catalogue.delete(("redemption", event.redemption_id))
            case PointsTransferredOut():
                self._take(event.lots, spent=True)
                year, sent, count, received, received_count, last = _year_of(self.transfers, event.occurred_at)
                self.transfers = (year, sent + event.points, count + 1, received, received_count, last)
            case PointsTransferredIn():
                self.put(self._existing(event.lot_id),
                         Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at))
                year, sent, count, received, received_count, last = _year_of(self.transfers, event.occurred_at)
                if last != event.transfer_id:  # one transfer credits one lot per source lot: counted once
                    received_count += 1
                self.transfers = (year, sent, count, received + event.points, received_count, event.transfer_id)
            case PointsRedeemedForHousehold():
                self._take(event.lots, spent=True)
                self._redeemed(event.redemption_id, event.points, event.lots)
            case HouseholdCreated():
                self.household_id, self.household_roster = event.household_id, (event.head_member_id,)
            case HouseholdMemberAdded():
                self.household_roster = (*self.household_roster, event.member_id)
            case HouseholdMemberRemoved():
                self.household_roster = tuple(m for m in self.household_roster if m != event.member_id)
            case HouseholdJoined():
                self.household_id = event.household_id
            case HouseholdLeft():
                self.household_id = None
            case HouseholdPointsRedeemed():
                # Kept by redemption id, so that an id is used once per household.
                self._redeemed(event.redemption_id, event.points, event.shares)
            case CatalogueRewardTaken():
                self.catalogue = self.catalogue.set((event.movement, event.movement_id), event.reward_id)
            case RewardDefined():
                self.reward = _reward_defined(event, self.reward.taken if self.reward is not None else 0)
            case RewardStockTaken():
                self.reward = _reward_taken(self.reward, 1)
            case RewardStockReturned():
                self.reward = _reward_taken(self.reward, -1)
            # Members (M2)
            case MemberStatusChanged():
                self.status = event.to_status
            case MemberMergedAway():
                self._merged_away(event)
            case MemberMergedIn():
                self._merged_in(event)
            case TierChanged():
                self.tiers = tuple(sorted((*self.tiers, (event.occurred_at, event.to_tier)), key=_first))
            case TierWarning():
                self.tier_warned = event.evaluation_at
            case ActivityPointsEarned() | AnniversaryBonusGranted():
                if event.lot_id is not None:
                    self.put(self._existing(event.lot_id),
                             Lot(event.lot_id, None, event.points, event.points, "active", event.expires_at))
                self.earn = earn_applied(self.earn, event)
            case BookingEarnCounted():
                self.earn = earn_applied(self.earn, event)
            # Members (M1): the profile is sealed personal data, kept in no state (nor
            # snapshot); the read model `member_profiles` holds the sealed fields.
            case MemberEnrolled() | MemberProfileChanged() | MemberErased():
                pass
            case _:
                raise AssertionError(f"unknown event {event!r}")

    def _merged_away(self, event: MemberMergedAway) -> None:
        """Every lot leaves with the merge (the survivor's `MemberMergedIn` has them): the
        duplicate keeps none, nor its bookings, debt or redemptions."""
        self.lots, self.closed, self.bookings = Map().mutate(), Map().mutate(), Map().mutate()
        self.expiry, self.qualifying = _NO_KEYS.edit(), _NO_WEIGHTED_KEYS.edit()
        self.active = self.pending = 0
        self.debt = 0
        self.redemptions, self.catalogue = _NO_ENTRIES, _NO_ENTRIES
        self.status, self.merged_into = "closed", event.merged_into

    def _merged_in(self, event: MemberMergedIn) -> None:
        for row in event.moved_lots:
            lot = lot_from_row(row)
            self.put(self._existing(lot.lot_id), lot)
        for booking_id, lot_id in event.bookings:
            self.bookings[booking_id] = lot_id
        self.debt += event.debt
        for redemption_id, points, lots in event.redemptions:
            self.redemptions = self.redemptions.set(redemption_id, Redemption(redemption_id, points, lots))
        for kind, movement_id, reward_id in event.catalogue:
            self.catalogue = self.catalogue.set((kind, movement_id), reward_id)

    def _redeemed(self, redemption_id: str, points: int, lots: tuple[LotTake, ...]) -> None:
        self.redemptions = self.redemptions.set(redemption_id, Redemption(redemption_id, points, lots))

    def _close_hold(self, hold_id: str, how: str) -> None:
        self.holds = self.holds.delete(hold_id)
        self.holds_closed = self.holds_closed.set(hold_id, how)

    def _returned(self, restored: tuple[LotTake, ...], expired: tuple[LotTake, ...],
                  forfeited: tuple[LotTake, ...], *, from_held: bool) -> None:
        """Points back from a hold (`from_held`) or a redemption to the lots they left:
        spendable again, expired, or forfeited (off the shortfall the lot was charged)."""
        for takes, back, lost, uncharged in ((restored, 1, 0, 0), (expired, 0, 1, 0), (forfeited, 0, 0, 1)):
            for lot_id, points in takes:
                lot = self.lot(lot_id)
                held, spent = (lot.held - points, lot.spent) if from_held else (lot.held, lot.spent - points)
                self.put(lot, _counts(lot, lot.remaining + back * points, held, spent, lot.expired + lost * points,
                                      lot.charged - uncharged * points))

    def _amended(self, event: BookingAmended) -> None:
        lot = self.lot(self.bookings[event.booking_id])
        taken = sum(points for _, points in event.lots)
        # A decrease takes what is on the lot and charges the shortfall: the lot is worth
        # that much less. Points of it that already expired are not taken again, so a
        # decrease may be worth less to the lot than to the booking (`event.points`).
        remaining = lot.remaining - taken if event.points < 0 else lot.remaining + event.points
        worth = lot.points - taken - event.shortfall if event.points < 0 else lot.points + event.points
        breakdown = dict(lot.breakdown)
        for label, change in event.breakdown:
            breakdown[label] = breakdown.get(label, 0) + change
        qualifying = lot.qualifying + event.qualifying_points
        self.put(lot, Lot(
            lot.lot_id, lot.booking_id, worth, remaining, lot.status, lot.expires_at, qualifying,
            lot.spent, lot.expired, lot.qualified_at, lot.held, lot.charged + event.shortfall, event.amount,
            tuple(breakdown.items()), lot.currency,
        ))
        self.debt += event.shortfall if event.shortfall_debited else 0


# (spend in the programme currency as a decimal string or None, nights, segments)
TierFacts = tuple[str | None, int | None, int | None]


def _first(pair: tuple[datetime, str]) -> datetime:
    return pair[0]


def _tier_facts(event: PointsEarned) -> TierFacts | None:
    """What an earn counts towards tiers besides its points, its amount and itself: the
    spend it recorded in the programme currency (or the amount it converted to, for an
    event from before tier policies), its nights and segments; None if nothing."""
    spend = event.spend if event.spend is not None else event.converted_amount
    if spend is None and event.nights is None and event.segments is None:
        return None
    return (spend, event.nights, event.segments)


def _year_of(transfers: TransferYear, at: datetime) -> TransferYear:
    year = at.astimezone(timezone.utc).year
    return transfers if transfers[0] == year else (year, 0, 0, 0, 0, "")


def evolve(state: MemberState, event: Event) -> MemberState:
    """The state after one event; `state` is left as it was."""
    if type(event) is PointsEarned and event.points > 0:
        return _earned(state, event)
    if type(event) is PendingPointsActivated:
        return _activated(state, event)
    if type(event) is TierChanged:
        return _tier_changed(state, event)
    return _evolve_in_draft(state, event)


# Events `evolve` applies without a draft: a command's events that are all of these are
# evolved one by one rather than folded (see `evolve_all`).
_DRAFTLESS = frozenset({PointsEarned, PendingPointsActivated, TierChanged})


def evolve_all(state: MemberState, events: list[Event]) -> MemberState:
    """The state after a command's events: `evolve` of each when there are two at most
    and each has a fast path (an earn and the upgrade it qualifies for: 15% of the Kafka
    consumer's commands, which went through a draft's copy and finish of the state),
    else `fold` (an expiry run: one draft copies the member's lots once, where `evolve`
    would copy them per event)."""
    if len(events) == 1:
        return evolve(state, events[0])
    if len(events) == 2 and type(events[0]) in _DRAFTLESS and type(events[1]) in _DRAFTLESS:
        return evolve(evolve(state, events[0]), events[1])
    return fold(state.member_id, events, state)


def _evolve_in_draft(state: MemberState, event: Event) -> MemberState:
    draft = _Draft(state)
    draft.apply(event)
    return draft.finish()


# `_earned` and `_activated` are `evolve` of the commonest events (every booking earns,
# many activate later) without a draft, for their usual case: half the cost for a
# member of a few lots (about 1.3 us less per event), which is most of the work of the
# Kafka consumer and the batch path. Anything else goes through the draft. Both must
# give what `_Draft.apply` gives: the property tests hold every state of a chain of
# `evolve` to `fold` (which goes through the draft) and to `build_state` of its lots.


def _earned(state: MemberState, event: PointsEarned) -> MemberState:
    lot_id = event.lot_id
    if lot_id in state.lots or lot_id in state.closed:  # a lot replaced: never, for the lots `decide` makes
        return _evolve_in_draft(state, event)
    lots, bookings = state.lots, state.bookings.set(event.booking_id, lot_id)
    tier_facts = state.tier_facts
    if event.nights is not None or event.segments is not None or event.spend is not None or event.converted_amount:
        tier_facts = tier_facts.set(event.booking_id, _tier_facts(event))
    if event.status == "active" and event.expires_at is not None:
        lot = Lot(lot_id, event.booking_id, event.points, event.points, "active", event.expires_at,
                  event.qualifying_points, 0, 0, event.occurred_at, 0, 0, event.amount, event.breakdown,
                  event.currency)
        return MemberState(
            state.member_id, state.version + 1, lots.set(lot_id, lot), state.closed, bookings,
            state.expiry.insert((event.expires_at, lot_id)),
            state.qualifying.insert((event.occurred_at, event.booking_id, event.qualifying_points)),
            state.active + event.points, state.pending, state.debt, state.held, state.holds, state.holds_closed,
            state.redemptions, state.transfers, state.household_id, state.household_roster, state.catalogue,
            state.reward, state.status, state.merged_into, state.tiers, state.tier_warned, tier_facts,
            seen(state.earn, event.occurred_at),
        )
    if event.status != "pending":  # an active lot without a date: the draft refuses it
        return _evolve_in_draft(state, event)
    lot = Lot(lot_id, event.booking_id, event.points, event.points, "pending", event.expires_at,
              event.qualifying_points, 0, 0, None, 0, 0, event.amount, event.breakdown, event.currency)
    return MemberState(state.member_id, state.version + 1, lots.set(lot_id, lot), state.closed, bookings,
                       state.expiry, state.qualifying, state.active, state.pending + event.points, state.debt,
                       state.held, state.holds, state.holds_closed, state.redemptions, state.transfers,
                       state.household_id, state.household_roster, state.catalogue, state.reward, state.status,
                       state.merged_into, state.tiers, state.tier_warned, tier_facts,
                       seen(state.earn, event.occurred_at))


def _tier_changed(state: MemberState, event: TierChanged) -> MemberState:
    tiers = state.tiers
    change = (event.occurred_at, event.to_tier)
    if not tiers or tiers[-1][0] <= event.occurred_at:
        tiers = (*tiers, change)  # what the draft's stable sort gives for a change dated last
    else:
        tiers = tuple(sorted((*tiers, change), key=_first))
    return MemberState(
        state.member_id, state.version + 1, state.lots, state.closed, state.bookings, state.expiry, state.qualifying,
        state.active, state.pending, state.debt, state.held, state.holds, state.holds_closed, state.redemptions,
        state.transfers, state.household_id, state.household_roster, state.catalogue, state.reward, state.status,
        state.merged_into, tiers, state.tier_warned, state.tier_facts, state.earn,
    )


def _activated(state: MemberState, event: PendingPointsActivated) -> MemberState:
    lot = state.lots.get(event.lot_id)
    if (lot is None or lot.status != "pending" or lot.remaining <= 0 or lot.qualified_at is not None
            or event.expires_at is None):
        return _evolve_in_draft(state, event)
    active = Lot(lot.lot_id, lot.booking_id, lot.points, lot.remaining, "active", event.expires_at,
                 event.qualifying_points, lot.spent, lot.expired, event.occurred_at, lot.held, lot.charged,
                 lot.amount, lot.breakdown, lot.currency)
    return MemberState(
        state.member_id, state.version + 1, state.lots.set(lot.lot_id, active), state.closed, state.bookings,
        state.expiry.insert((event.expires_at, lot.lot_id)),
        state.qualifying.insert((event.occurred_at, lot.booking_id, event.qualifying_points)),
        state.active + lot.remaining, state.pending - lot.remaining, state.debt, state.held, state.holds,
        state.holds_closed, state.redemptions, state.transfers, state.household_id, state.household_roster,
        state.catalogue, state.reward, state.status, state.merged_into, state.tiers, state.tier_warned,
        state.tier_facts, state.earn,
    )


def fold(member_id: str, events: Iterable[Event], state: MemberState | None = None) -> MemberState:
    """`evolve` over `events`, starting from `state` (or a new member), in one draft: what
    loads a member from its history, and what the handler uses for a command with
    several events. tests/unit/test_properties.py checks that it gives the state the
    chain of `evolve` gives."""
    state = state or MemberState(member_id)
    draft = _Draft(state)
    for event in events:
        draft.apply(event)
    if draft.version == state.version:
        return state  # no events: the very same state, as evolving nothing gives
    return draft.finish()


def build_state(member_id: str, version: int, lots: Iterable[Lot], bookings: Iterable[tuple[str, str]] = (),
                debt: int = 0, holds: Iterable[Hold] = (), holds_closed: Iterable[tuple[str, str]] = (),
                redemptions: Iterable[Redemption] = (),
                transfers: TransferYear = (0, 0, 0, 0, 0, ""), household_id: str | None = None,
                household_roster: Iterable[str] = (), catalogue: Iterable[tuple[tuple[str, str], str]] = (),
                reward: RewardState | None = None, status: str = "active",
                merged_into: str | None = None, tiers: Iterable[tuple[datetime, str]] = (),
                tier_warned: datetime | None = None,
                tier_facts: Iterable[tuple[str, TierFacts]] = (), earn: EarnState = NO_EARN) -> MemberState:
    """A state from its lots (in any order, each id once), with `expiry`, `qualifying`
    and the totals worked out from them in bulk: what a snapshot loads into, and how a
    test makes a state by hand. It gives the state `put` would give lot by lot."""
    open_lots: dict[str, Lot] = {}
    closed: dict[str, Lot] = {}
    expiry: list[tuple[datetime, str]] = []
    qualifying: list[tuple[datetime, str | None, int]] = []
    active = pending = 0
    for lot in lots:
        assert lot.lot_id not in open_lots and lot.lot_id not in closed, f"lot {lot.lot_id!r} given twice"
        if lot.status == "active" and lot.remaining > 0:
            assert lot.expires_at is not None, f"active lot {lot.lot_id!r} without an expiry date"
            expiry.append((lot.expires_at, lot.lot_id))
            active += lot.remaining
            open_lots[lot.lot_id] = lot
        elif lot.status == "pending":
            pending += lot.remaining
            open_lots[lot.lot_id] = lot
        else:
            closed[lot.lot_id] = lot
        if lot.qualified_at is not None:
            qualifying.append((lot.qualified_at, lot.booking_id, lot.qualifying))
    open_holds = {hold.hold_id: hold for hold in holds}
    return MemberState(member_id, version, Map(open_lots), _map(closed), Map(bookings), SortedKeys.of(expiry),
                       SortedKeys.of(qualifying, weighted=True), active, pending, debt,
                       sum(hold.points for hold in open_holds.values()), _map(open_holds), _map(holds_closed),
                       _map({r.redemption_id: r for r in redemptions}), tuple(transfers),  # type: ignore[arg-type]
                       household_id, tuple(household_roster), _map(catalogue), reward, status, merged_into,
                       tuple(sorted(tiers, key=_first)), tier_warned, _map(tier_facts), earn)


def _map(items: Any) -> Map:
    """`Map(items)`, the shared empty one when there are none: most members have no
    holds, redemptions, catalogue movements or closed lots, and a snapshot's load built
    five empty maps each."""
    return Map(items) if items else _NO_ENTRIES


# Bumped whenever `evolve` (or the state's shape) changes what a history folds to: a
# snapshot in another format is ignored and the member is folded from its events.
# 2: lots carry `qualified_at`, and the tier entries, totals and expiry order are
# worked out from them.
# 3: lots carry what holds, partial refunds and amendments change; holds, redemptions
# and the year's transfers. Households added `household_id` and `household_roster`
# without a new format: a snapshot without them was saved before any history could
# hold a household event, so their defaults are what its history folds to. The reward
# catalogue added `catalogue` and `reward` the same way, and members' status and merges
# `status` and `merged_into`.
# 4: tier policies: the tier changes, the last warning and the tier facts of bookings.
# 5: the earn state of earn beyond bookings (`earn`: activities, anniversaries, cap counters).
SNAPSHOT_FORMAT = 5


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def lot_row(lot: Lot) -> tuple[Any, ...]:
    """A lot as a row of JSON values (its snapshot's form): what a merge event carries."""
    return (lot.lot_id, lot.booking_id, lot.points, lot.remaining, lot.status, _iso(lot.expires_at), lot.qualifying,
            lot.spent, lot.expired, _iso(lot.qualified_at), lot.held, lot.charged, lot.amount,
            tuple(tuple(pair) for pair in lot.breakdown), lot.currency)


def lot_from_row(row: Any) -> Lot:
    (lot_id, booking_id, points, remaining, status, expires_at, qualifying, spent, expired, qualified_at, held,
     charged, amount, breakdown, currency) = row
    return Lot(lot_id, booking_id, points, remaining, status, _moment(expires_at), qualifying, spent, expired,
               _moment(qualified_at), held, charged, amount, tuple((a, b) for a, b in breakdown), currency)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def to_snapshot(state: MemberState) -> dict[str, Any]:
    """A state as JSON-ready data (without its member id and version, kept beside it):
    what `from_snapshot` turns back into an equal state."""
    return {
        "lots": [[lot.lot_id, lot.booking_id, lot.points, lot.remaining, lot.status, _iso(lot.expires_at),
                  lot.qualifying, lot.spent, lot.expired, _iso(lot.qualified_at), lot.held, lot.charged, lot.amount,
                  [list(pair) for pair in lot.breakdown], lot.currency]
                 for lots in (state.lots, state.closed) for lot in lots.values()],
        "bookings": list(state.bookings.items()),
        "debt": state.debt,
        "holds": [[h.hold_id, h.points, [list(pair) for pair in h.lots], h.expires_at.isoformat(), h.reward_id,
                   h.reward_kind] for h in state.holds.values()],
        "holds_closed": list(state.holds_closed.items()),
        "redemptions": [[r.redemption_id, r.points, [list(pair) for pair in r.lots]]
                        for r in state.redemptions.values()],
        "transfers": list(state.transfers),
        "household_id": state.household_id,
        "household_roster": list(state.household_roster),
        "catalogue": [[kind, movement_id, reward_id] for (kind, movement_id), reward_id in state.catalogue.items()],
        "reward": None if state.reward is None else _reward_snapshot(state.reward),
        "status": state.status,
        "merged_into": state.merged_into,
        "tiers": [[at.isoformat(), tier] for at, tier in state.tiers],
        "tier_warned": _iso(state.tier_warned),
        "tier_facts": [[booking_id, list(facts)] for booking_id, facts in state.tier_facts.items()],
        "earn": earn_snapshot(state.earn),
    }


def _reward_snapshot(r: RewardState) -> list[Any]:
    return [r.reward_id, r.kind, r.name_en, r.name_zh_cn, [list(pair) for pair in r.points_by_tier], r.stock,
            _iso(r.available_from), _iso(r.available_to), r.miles_ratio, r.partner, r.taken]


def _reward_from_snapshot(data: list[Any] | None) -> RewardState | None:
    if data is None:
        return None
    reward_id, kind, name_en, name_zh_cn, prices, stock, available_from, available_to, ratio, partner, taken = data
    return RewardState(reward_id, kind, name_en, name_zh_cn, _pairs(prices), stock, _moment(available_from),
                       _moment(available_to), ratio, partner, taken)


def _pairs(items: list[list[Any]]) -> tuple[tuple[str, int], ...]:
    # A list display, not a generator, and no conversions (the JSON gives the str and the
    # int): a consumer restarting loads a snapshot per member, each lot with its breakdown.
    return tuple([(a, b) for a, b in items])


def from_snapshot(member_id: str, version: int, data: dict[str, Any]) -> MemberState:
    # The dates and breakdowns converted inline rather than by `_moment` and `_pairs`: a
    # restarted consumer loads one snapshot per member it meets, and with the shared
    # empty maps (`_map`) a member of about ten lots loads in 340,000 instructions
    # rather than 365,000 (cachegrind).
    parse = datetime.fromisoformat
    lots = [Lot(lot_id, booking_id, points, remaining, status, None if expires_at is None else parse(expires_at),
                qualifying, spent, expired, None if qualified_at is None else parse(qualified_at), held, charged,
                amount, tuple([(a, b) for a, b in breakdown]), currency)
            for (lot_id, booking_id, points, remaining, status, expires_at, qualifying, spent, expired, qualified_at,
                 held, charged, amount, breakdown, currency) in data["lots"]]
    holds = (Hold(hold_id, points, _pairs(lots), datetime.fromisoformat(expires_at), reward_id, reward_kind)
             for hold_id, points, lots, expires_at, reward_id, reward_kind in data["holds"])
    redemptions = (Redemption(redemption_id, points, _pairs(lots)) for redemption_id, points, lots in data["redemptions"])
    return build_state(member_id, version, lots, data["bookings"], data["debt"], holds,
                       [tuple(item) for item in data["holds_closed"]], redemptions, tuple(data["transfers"]),
                       # Absent from the snapshots saved before households: no history then had them.
                       data.get("household_id"), data.get("household_roster", ()),
                       # Absent from those saved before the catalogue, for the same reason.
                       [((kind, movement_id), reward_id) for kind, movement_id, reward_id in data.get("catalogue", ())],
                       _reward_from_snapshot(data.get("reward")),
                       # Absent from those saved before members' status and merges, likewise.
                       data.get("status", "active"), data.get("merged_into"),
                       [(datetime.fromisoformat(at), tier) for at, tier in data["tiers"]], _moment(data["tier_warned"]),
                       [(booking_id, tuple(facts)) for booking_id, facts in data["tier_facts"]],
                       earn_from_snapshot(data.get("earn")))
