"""The reward catalogue's read model: a row per catalogue reward, its definition now and
the units of its stock taken (by open holds and by redemptions not reversed in full).

The rewards are streams of their own (`reward/<id>`) from this revision on, so no
event before it feeds the table: it starts empty.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE rewards (
    reward_id       text PRIMARY KEY,
    kind            text NOT NULL,
    name_en         text NOT NULL,
    name_zh_cn      text,
    points_by_tier  jsonb NOT NULL,
    stock           bigint,
    taken           bigint NOT NULL,
    available_from  timestamptz,
    available_to    timestamptz,
    miles_ratio     text,
    partner         text,
    updated_at      timestamptz NOT NULL
)""")


def downgrade() -> None:
    op.execute("DROP TABLE rewards")
