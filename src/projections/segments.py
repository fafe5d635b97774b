"""The customer value segments' read model: each member's bookings with their amount now,
and each member's first event.

The segments' window ("the last 12 months") moves with the clock, so nothing summed
over it can be stored: a row per booking (when it earned, in which currency, for how
much now) lets a read at any `now` sum the window (`projections.segment_queries`).
A booking's amount follows its partial refunds and amendments (`BookingAmended` carries
the amount after the change); a cancelled or refunded booking (`EarnReversed`) stays
with an amount of 0, which no read counts. A booking pending until the trip counts from
when it was booked, as its points do toward nothing yet: the spend is committed.
`segment_members` holds when each member's first event happened (the tenure).

A merge (M2) leaves the duplicate's booking rows where they are: the survivor's events
do not say when those bookings earned, so the survivor's segment counts its own
bookings only, and a later take-back of a moved booking changes no row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from ledger.domain import BookingAmended, EarnReversed, MemberMergedIn, PointsEarned
from ledger.store import StoredEvent

if TYPE_CHECKING:
    from .models import KnownRows

BOOKING_COLUMNS = ("member_id", "booking_id", "earned_at", "currency", "amount")
MEMBER_COLUMNS = ("member_id", "first_at")
_BOOKING_EVENTS = frozenset((PointsEarned, BookingAmended, EarnReversed, MemberMergedIn))
# Amounts stay the decimal strings the events carry, sent as text and cast by the server:
# a Decimal made and encoded by the client cost 1 µs a booking (`kafka_bench`'s profile).
_ZERO = "0"


class SegmentBookings:
    """The bookings' and the members' changes of one page.

    A booking earned in this page is a whole row to insert (and later events of the page
    change its amount); a booking earned before it is only a new amount to set."""

    def __init__(self, bookings_table: str = "segment_bookings", members_table: str = "segment_members") -> None:
        self.bookings_table = bookings_table
        self.members_table = members_table
        # (member, booking) -> [earned at, currency, amount]; earned at None: earned
        # before this page, only the amount changes.
        self.bookings: dict[tuple[str, str], list] = {}
        self.first_at: dict[str, datetime] = {}
        # (member, booking) of the bookings a merge moved to the member: no row of its.
        self.moved_in: set[tuple[str, str]] = set()

    def apply(self, stored: StoredEvent) -> None:
        e, m = stored.event, stored.stream_id
        first = self.first_at.get(m)
        if first is None or e.occurred_at < first:
            self.first_at[m] = e.occurred_at
        if type(e) not in _BOOKING_EVENTS:
            return
        match e:
            case PointsEarned():
                self.bookings[(m, e.booking_id)] = [e.occurred_at, e.currency, e.amount]
            case BookingAmended():
                self._amount(m, e.booking_id, e.amount)
            case EarnReversed():
                self._amount(m, e.booking_id, _ZERO)
            case MemberMergedIn():
                self.moved_in.update((m, booking_id) for booking_id, _ in e.bookings)

    def _amount(self, member: str, booking_id: str, amount: str) -> None:
        if (member, booking_id) in self.moved_in:
            return
        row = self.bookings.get((member, booking_id))
        if row is None:
            self.bookings[(member, booking_id)] = [None, None, amount]
        else:
            row[2] = amount

    def completed(self, keep: str | None = None) -> tuple[list[tuple], list[tuple]]:
        """The booking rows and the member rows (in their `COLUMNS` order) of the members
        whose every event has been applied: all but `keep` (see `Balances.completed`)."""
        bookings, kept = [], {}
        for key, row in self.bookings.items():
            if key[0] == keep:
                kept[key] = row
            else:
                assert row[0] is not None, "a replay sees every booking earned"
                bookings.append((key[0], key[1], row[0], row[1], Decimal(row[2])))
        self.bookings = kept
        self.moved_in = {key for key in self.moved_in if key[0] == keep}
        first_kept = {keep: self.first_at.pop(keep)} if keep is not None and keep in self.first_at else {}
        members = list(self.first_at.items())
        self.first_at = first_kept
        return bookings, members

    async def write(self, conn: asyncpg.Connection, known: KnownRows | None = None) -> None:
        """Write the page's rows; with `known` (the live runner's), only the members'
        first events that are earlier than one written before (what is stored is at
        most what was written, which `known` keeps)."""
        first_at = self.first_at
        if known is not None:
            bounds = known.table(self.members_table)
            first_at = {}
            for m, at in self.first_at.items():
                bound = bounds.get(m)
                if bound is not None:
                    bounds.move_to_end(m)
                    if bound <= at:
                        continue
                bounds[m] = at
                first_at[m] = at
        earned = [(m, b, *row) for (m, b), row in self.bookings.items() if row[0] is not None]
        changed = [(m, b, row[2]) for (m, b), row in self.bookings.items() if row[0] is None]
        if earned:
            await conn.execute(
                f"INSERT INTO {self.bookings_table} (member_id, booking_id, earned_at, currency, amount)"
                " SELECT m, b, e, c, a::numeric FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])"
                " AS u(m, b, e, c, a)",
                *zip(*earned, strict=True),
            )
        if changed:
            await conn.execute(
                f"UPDATE {self.bookings_table} b SET amount = u.amount::numeric"
                " FROM unnest($1::text[], $2::text[], $3::text[]) AS u(member_id, booking_id, amount)"
                " WHERE b.member_id = u.member_id AND b.booking_id = u.booking_id",
                *zip(*changed, strict=True),
            )
        if first_at:
            # A later page's events may have happened earlier (occurred_at is the source's
            # time): the earliest stays; the WHERE leaves the row alone (no new row
            # version) when it is not earlier, as it mostly is not.
            await conn.execute(
                f"INSERT INTO {self.members_table} AS s (member_id, first_at)"
                " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
                " ON CONFLICT (member_id) DO UPDATE SET first_at = EXCLUDED.first_at"
                " WHERE EXCLUDED.first_at < s.first_at",
                list(first_at), list(first_at.values()),
            )
        self.bookings.clear()
        self.first_at.clear()
        self.moved_in.clear()
