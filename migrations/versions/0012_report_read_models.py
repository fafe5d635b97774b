"""Read models of the programme reports: the liability (outstanding points) and the
activity (points issued, redeemed, expired, adjusted, clawed back) as additive deltas.

- `expiry_lots.product` and `expiry_lots.tier`: the product a lot was earned on and
  the member's tier when it was credited, what a later event taking from the lot needs
  and does not carry (with the lot's status and date, which the table has).
- `liability_days` / `liability_moments`: the change of outstanding points by (UTC day
  or exact instant, status, expiry month, tier); the moments' rows are appended (a
  key's figure is the sum of its rows). The liability as of an instant is the
  sum of the days before its day plus the moments of its day up to it.
- `activity_days`: points by (UTC day, kind, product, source).

Before this revision the projection passed over every event for these tables: a
database that has any needs `ledger projections rebuild` once.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL in the rows of lots made before this revision, until the rebuild it asks for.
    op.execute("ALTER TABLE expiry_lots ADD COLUMN product text, ADD COLUMN tier text")
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


def downgrade() -> None:
    op.execute("DROP TABLE activity_days, liability_moments, liability_days")
    op.execute("ALTER TABLE expiry_lots DROP COLUMN product, DROP COLUMN tier")
