"""Rejected messages double as the dead-letter topic's outbox.

A row is written in the same transaction as the consumed offsets, so a rejection is
never lost; it is published to the dead-letter topic after the commit, and
`dlq_published_at` records that it was (a crash in between publishes it on restart).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE rejected_messages ADD COLUMN dlq_published_at timestamptz")
    op.execute("CREATE INDEX rejected_messages_unpublished ON rejected_messages (id) WHERE dlq_published_at IS NULL")
    op.execute("CREATE INDEX rejected_messages_pending ON rejected_messages (id) WHERE retried_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX rejected_messages_pending")
    op.execute("DROP INDEX rejected_messages_unpublished")
    op.execute("ALTER TABLE rejected_messages DROP COLUMN dlq_published_at")
