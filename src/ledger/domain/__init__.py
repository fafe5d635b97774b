"""The pure domain: no I/O, no clock, no framework. Standard library only, and
`immutables` (a persistent map: data, not I/O) for the member state."""

from .commands import (
    AdjustPoints,
    AmendBooking,
    CaptureHold,
    ExpireHolds,
    PlaceHold,
    ReleaseHold,
    ReverseRedemption,
    TransferPoints,
    CancelBooking,
    Command,
    CompleteBooking,
    ConfirmBooking,
    ExpirePoints,
    RedeemPoints,
    RefundBooking,
    HOUSEHOLD_STREAM_PREFIX,
    AddHouseholdMember,
    CreateHousehold,
    RedeemForHousehold,
    RemoveHouseholdMember,
    household_stream_id,
    is_household_stream,
)
from .decider import decide, decide_streams, grace_lot_id, net_earned, transfer_lot_id
from .errors import (
    BookingNotFound,
    BookingStateConflict,
    ConcurrencyConflict,
    DuplicateEvent,
    InsufficientPoints,
    HoldNotFound,
    InvalidCommand,
    LedgerError,
    LimitExceeded,
    MemberNotFound,
    MovementConflict,
    NotFound,
    RedemptionNotFound,
    HouseholdChanged,
    HouseholdInsufficientPoints,
    HouseholdMemberNotFound,
    HouseholdNotFound,
)
from .events import (
    BookingAmended,
    DebtSettled,
    HoldCaptured,
    HoldReleased,
    PointsHeld,
    PointsTransferredIn,
    PointsTransferredOut,
    RedemptionReversed,
    EarnReversed,
    Event,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    HouseholdCreated,
    HouseholdJoined,
    HouseholdLeft,
    HouseholdMemberAdded,
    HouseholdMemberRemoved,
    HouseholdPointsRedeemed,
    PointsRedeemedForHousehold,
    from_data,
    to_data,
)
from .rules import DEFAULT_RULES, ProgramRules, SegmentRules, TransferLimits
from .sorted_keys import SortedKeys
from .state import SNAPSHOT_FORMAT, Hold, Lot, MemberState, Redemption, build_state, evolve, fold, from_snapshot, to_snapshot
from .tiers import TierStatus, tier_in_window, tier_status

__all__ = [name for name in dir() if not name.startswith("_")]
