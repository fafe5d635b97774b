"""P4, tier policies: the tier in force of each member with a tier change (its latest
`TierChanged`), for the tier scheduler.

No event before this revision is a `TierChanged`, so the table starts empty.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE member_tiers (
    member_id      text PRIMARY KEY,
    tier           text NOT NULL,
    since          timestamptz NOT NULL,
    direction      text NOT NULL,
    rules_version  text NOT NULL
)""")


def downgrade() -> None:
    op.execute("DROP TABLE member_tiers")
