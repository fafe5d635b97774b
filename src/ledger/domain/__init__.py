"""The pure domain: no I/O, no clock, no framework. Standard library only, and
`immutables` (a persistent map: data, not I/O) for the member state."""

from .commands import (
    AdjustPoints,
    CancelBooking,
    Command,
    CompleteBooking,
    ConfirmBooking,
    ExpirePoints,
    RedeemPoints,
    RefundBooking,
)
from .decider import decide, decide_streams, net_earned
from .errors import (
    BookingNotFound,
    BookingStateConflict,
    ConcurrencyConflict,
    DuplicateEvent,
    InsufficientPoints,
    InvalidCommand,
    LedgerError,
    MemberNotFound,
)
from .events import (
    DebtSettled,
    EarnReversed,
    Event,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    from_data,
    to_data,
)
from .rules import DEFAULT_RULES, ProgramRules
from .sorted_keys import SortedKeys
from .state import SNAPSHOT_FORMAT, Lot, MemberState, build_state, evolve, fold, from_snapshot, to_snapshot
from .tiers import TierStatus, tier_in_window, tier_status

__all__ = [name for name in dir() if not name.startswith("_")]
