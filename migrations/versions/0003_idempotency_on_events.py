"""Idempotency keys move onto the event rows.

A command's key is stored on the first event it appended, under a unique index, and
what its caller was told (the request fingerprint, how many events, the balances
after) goes in that event's metadata under "command". The batch path then writes one
row per event instead of an event row plus a `commands` row, which was a third of the
server's work per command.

`commands` stays, read-only: it holds the records written before this revision, and
lookups still consult it, so a source message applied before the upgrade is still
recognised as a duplicate after it.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: a catalogue change, no table rewrite and no
    # UPDATE, so the append-only trigger is not involved.
    op.execute("ALTER TABLE events ADD COLUMN idempotency_key text")
    op.execute(
        "CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX events_idempotency_key")
    op.execute("ALTER TABLE events DROP COLUMN idempotency_key")
