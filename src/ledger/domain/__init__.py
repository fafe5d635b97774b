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
    REWARD_STREAM_PREFIX,
    DefineReward,
    HoldReward,
    RedeemReward,
    is_reward_stream,
    reward_stream_id,
)
from .decider import decide, decide_streams, grace_lot_id, net_earned, transfer_lot_id
from .errors import (
    BookingNotFound,
    BookingStateConflict,
    CurrencyNotEarned,
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
    RewardNotFound,
    RewardUnavailable,
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
    CatalogueRewardTaken,
    RewardDefined,
    RewardStockReturned,
    RewardStockTaken,
    from_data,
    to_data,
)
from .rules import DEFAULT_FX_BASE, DEFAULT_FX_RATES, DEFAULT_RULES, DEFAULT_RULES_DICT, FxRates, ProgramRules, SegmentRules, TransferLimits
from .rulebook import EPOCH, RuleBook, Rules, RuleVersion, as_book, in_force
from .sorted_keys import SortedKeys
from .catalogue import member_tier, miles_for, price_for, unavailable
from .state import SNAPSHOT_FORMAT, Hold, Lot, MemberState, Redemption, RewardState, build_state, evolve, fold, from_snapshot, to_snapshot
from .tiers import TierStatus, tier_in_window, tier_status
# Members (M1)
from .events import MemberEnrolled, MemberErased, MemberProfileChanged
from .members import (
    MEMBER_COMMANDS,
    PROFILE_FIELDS,
    REMOVED,
    ChangeProfile,
    EnrolMember,
    EraseMember,
    MemberExists,
    MemberNotEnrolled,
    ProfileErased,
    normalise_email,
)

__all__ = [name for name in dir() if not name.startswith("_")]
