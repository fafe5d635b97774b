"""The household roster read model: who is in which household pool, and since when.

The household balance is the sum of its members' balances; reading the roster from
this table (fed by the projection runner in the same transaction as `balances`)
rather than from the event store makes that sum one query over one snapshot of the
read models, at the position the answer states.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE household_members (
    household_id  text NOT NULL,
    member_id     text NOT NULL,
    role          text NOT NULL,
    joined_at     timestamptz NOT NULL,
    PRIMARY KEY (household_id, member_id)
)""")


def downgrade() -> None:
    op.execute("DROP TABLE household_members")
