"""Member state snapshots: a process's folded member states, saved for the next one.

A snapshot stands for the fold of a member's events up to `version` (with the hash of
that event, which the next append chains to). Loading a member reads its snapshot and
only the events after it, instead of its whole history. Snapshots are a cache: the
events stay the record, a snapshot in another `format` (the fold changed) is ignored,
and deleting them all is always safe.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE member_snapshots ("
        " member_id text PRIMARY KEY,"
        " version integer NOT NULL CHECK (version > 0),"
        " last_hash bytea NOT NULL,"
        " format smallint NOT NULL,"
        " state jsonb NOT NULL,"
        " taken_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE member_snapshots")
