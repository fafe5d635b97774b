"""No planner statistics for the events' payload columns.

Autovacuum analyses `events` after every 10% of new rows; with statistics on the jsonb
`data` and `metadata` (and the `hash`) it sorts and compares 30,000 sampled payloads
each time, about a second of a core, which showed as a latency spike of the consumer
and the projections on a busy machine. No query filters or joins on these columns, so
the planner never uses what it would learn.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("data", "metadata", "hash")


def upgrade() -> None:
    op.execute("ALTER TABLE events " + ", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for c in COLUMNS))


def downgrade() -> None:
    op.execute("ALTER TABLE events " + ", ".join(f"ALTER COLUMN {c} SET STATISTICS -1" for c in COLUMNS))
