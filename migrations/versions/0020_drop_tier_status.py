"""Drop `tier_status`, a read model nothing read.

The projection runner wrote each touched member's tier status (tier, qualifying points
in the window, next tier) on every page, and nothing read it: the balance route works
the tier out from `tier_qualifying` as of the request, the tier route from the member's
state (with its tier policy). Its upsert was the runner's costliest statement after
the events' read (`bench/kafka_bench.py`: 8 µs of PostgreSQL and about 5 of Python per
booking).

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TABLE IF EXISTS tier_status")


def downgrade() -> None:
    # Empty: `ledger projections rebuild` on the older code fills it again.
    op.execute("""
CREATE TABLE tier_status (
    member_id            text PRIMARY KEY,
    tier                 text NOT NULL,
    qualifying_points    bigint NOT NULL,
    window_start         timestamptz NOT NULL,
    next_tier            text,
    points_to_next_tier  bigint,
    reevaluation_date    timestamptz,
    as_of                timestamptz NOT NULL
) WITH (fillfactor = 70)
""")
