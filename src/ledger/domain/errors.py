"""The ledger's error tree. Every message is written for a support agent to read."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    title = "Ledger error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidCommand(LedgerError):
    title = "Invalid command"


class CurrencyNotEarned(InvalidCommand):
    """A booking in a currency its product has no rate for, and no exchange rate in force
    converts to the programme currency; `currency` names it (and `field`, the booking
    event's field)."""

    title = "Currency not earned"

    def __init__(self, message: str, currency: str) -> None:
        super().__init__(message, currency=currency, field="currency")
        self.currency = currency


class BookingNotFound(InvalidCommand):
    title = "Booking not found"


class BookingStateConflict(InvalidCommand):
    title = "Booking state conflict"


class InsufficientPoints(LedgerError):
    title = "Insufficient points"

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(
            f"The member has {available} points available and {requested} were requested.",
            requested=requested,
            available=available,
        )
        self.requested = requested
        self.available = available


class MemberNotFound(LedgerError):
    title = "Member not found"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"No member {member_id!r} is known to the ledger.", member_id=member_id)
        self.member_id = member_id


class ConcurrencyConflict(LedgerError):
    """Another writer changed the member first; the command was not applied and may be
    sent again as it is."""

    title = "Concurrent update"


class DuplicateEvent(LedgerError):
    """The idempotency key was used before for a different request."""

    title = "Idempotency key reused"


class NotFound(LedgerError):
    """Something of the member's that the command names does not exist (404)."""

    title = "Not found"


class HoldNotFound(NotFound):
    title = "Hold not found"


class RedemptionNotFound(NotFound):
    title = "Redemption not found"


class MovementConflict(InvalidCommand):
    """The command cannot apply to the state it names: a hold that ended, a reversal of
    more than is left (409, final)."""

    title = "Movement conflict"


class LimitExceeded(InvalidCommand):
    """A programme limit refuses the command: `limit` names it (409, final)."""

    title = "Limit exceeded"

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message, limit=limit)
        self.limit = limit


class HouseholdNotFound(NotFound):
    title = "Household not found"


class HouseholdMemberNotFound(NotFound):
    title = "Household member not found"


class HouseholdChanged(ConcurrencyConflict):
    """The household's members changed between the roster a command was sent with and
    its decision: sent again on the fresh roster, it may apply (503, retryable)."""

    title = "Household changed"


class HouseholdInsufficientPoints(InsufficientPoints):
    """What all the household's members have available together is short of a redemption."""

    def __init__(self, household_id: str, requested: int, available: int) -> None:
        LedgerError.__init__(
            self, f"The household {household_id!r} has {available} points available and {requested} were requested.",
            requested=requested, available=available, household_id=household_id,
        )
        self.requested = requested
        self.available = available


class RewardNotFound(NotFound):
    title = "Reward not found"


class RewardUnavailable(InvalidCommand):
    """The catalogue reward cannot be had now: `reason` says why (409, final until the
    catalogue changes): `not_yet_available`, `no_longer_available`, `out_of_stock`, or
    `not_offered_to_tier`."""

    title = "Reward unavailable"

    def __init__(self, message: str, reason: str, **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


# Members (M2)


class MemberStatusConflict(InvalidCommand):
    """The member's status refuses the command (a suspended or closed member spends
    nothing), or the status cannot change so: `member_status` names the member's (409, final
    until the status changes)."""

    title = "Member status conflict"

    def __init__(self, message: str, member_id: str, status: str) -> None:
        # `member_status`: a problem body's `status` is its HTTP status.
        super().__init__(message, member_id=member_id, member_status=status)
        self.member_id = member_id
        self.status = status


class MemberMerged(NotFound):
    """The member was merged into another (`merged_into`), which has its points now: a
    read or a command of it answers 404 naming that member."""

    title = "Member merged"

    def __init__(self, member_id: str, merged_into: str) -> None:
        super().__init__(f"Member {member_id!r} was merged into member {merged_into!r}.", member_id=member_id,
                         merged_into=merged_into)
        self.member_id = member_id
        self.merged_into = merged_into
