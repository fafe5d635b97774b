"""The customer value segments' read model: a row per booking (when it earned, its
currency and its amount now) and each member's first event.

The segments' window moves with the clock, so the read sums the bookings of the window
at the time it is asked (`projections.segment_queries`) rather than a stored total. The
window index lets that sum read only the window's bookings, an index-only scan, however
many years of bookings the table holds.

Before this revision the projection passed over the bookings for the segments: a
database with events needs `ledger projections rebuild` once.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE segment_bookings (
    member_id   text NOT NULL,
    booking_id  text NOT NULL,
    earned_at   timestamptz NOT NULL,
    currency    text NOT NULL,
    amount      numeric NOT NULL,
    PRIMARY KEY (member_id, booking_id)
)""")
    op.execute("CREATE INDEX segment_bookings_window ON segment_bookings (earned_at)"
               " INCLUDE (member_id, currency, amount)")
    op.execute("""
CREATE TABLE segment_members (
    member_id  text PRIMARY KEY,
    first_at   timestamptz NOT NULL
)""")


def downgrade() -> None:
    op.execute("DROP TABLE segment_members")
    op.execute("DROP TABLE segment_bookings")
