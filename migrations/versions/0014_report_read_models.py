"""Read models of the programme reports: the liability (outstanding points) and the
activity (points issued, redeemed, expired, adjusted, clawed back) as additive deltas.

- `report_lots`: each lot's bucket (pending, expiry month), product and tier, what a
  later event taking from the lot needs and does not carry.
- `liability_days` / `liability_moments`: the change of outstanding points by (UTC day
  or exact instant, status, expiry month, tier); the moments' rows are appended (a
  key's figure is the sum of its rows). The liability as of an instant is the
  sum of the days before its day plus the moments of its day up to it.
- `activity_days`: points by (UTC day, kind, product, source).

These tables and the segments' form the reports projection group, with a checkpoint of
its own (`reports`), which starts from the first event: the segments' tables, fed by the
member group until this revision, are emptied, and the reports' runner fills them all
again as it catches up (or `ledger projections rebuild`, faster on a long history).

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE report_lots (
    member_id     text NOT NULL,
    lot_id        text NOT NULL,
    pending       boolean NOT NULL,
    expiry_month  text NOT NULL,
    product       text NOT NULL,
    tier          text NOT NULL,
    PRIMARY KEY (member_id, lot_id)
)""")
    op.execute("""
CREATE TABLE liability_days (
    day           date NOT NULL,
    status        text NOT NULL,
    expiry_month  text NOT NULL,
    tier          text NOT NULL,
    points        bigint NOT NULL,
    PRIMARY KEY (day, status, expiry_month, tier)
)""")
    op.execute("""
CREATE TABLE liability_moments (
    day           date NOT NULL,
    at            bigint[] NOT NULL,
    status        text[] NOT NULL,
    expiry_month  text[] NOT NULL,
    tier          text[] NOT NULL,
    points        bigint[] NOT NULL
)""")
    # A row per page and day, appended: no key per moment to look up and update.
    op.execute("CREATE INDEX liability_moments_day ON liability_moments (day)")
    op.execute("""
CREATE TABLE activity_days (
    day      date NOT NULL,
    kind     text NOT NULL,
    product  text NOT NULL,
    source   text NOT NULL,
    points   bigint NOT NULL,
    PRIMARY KEY (day, kind, product, source)
)""")
    # Their rows are updated by every page with changes on their day: room on each table
    # page for the new version keeps the updates off the index (as migration 0006 did for
    # the balances).
    op.execute("ALTER TABLE liability_days SET (fillfactor = 70)")
    op.execute("ALTER TABLE activity_days SET (fillfactor = 70)")
    op.execute("TRUNCATE segment_bookings, segment_members")
    op.execute("INSERT INTO projection_checkpoints (name, position) VALUES ('reports', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM projection_checkpoints WHERE name = 'reports'")
    op.execute("DROP TABLE activity_days, liability_moments, liability_days, report_lots")
    # The segments' rows were the reports group's: the member group feeds them again
    # from the start after `ledger projections rebuild`.
    op.execute("TRUNCATE segment_bookings, segment_members")
