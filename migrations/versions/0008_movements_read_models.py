"""Read models of the movements: points on open holds, transfers in the lifetime totals,
and the holds themselves.

`balances.held` is what open holds set aside (`available` leaves it out);
`lifetime_transferred_in` and `lifetime_transferred_out` count transfers. The `holds`
table is one row per hold with how it stands (open, captured, released, expired); the
hold-expiry scheduler walks the open ones due by time through `holds_open_due`.

Before this revision the projection passed over the movements' events: a database
that has any needs `ledger projections rebuild` once.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE balances ADD COLUMN held bigint NOT NULL DEFAULT 0,"
               " ADD COLUMN lifetime_transferred_in bigint NOT NULL DEFAULT 0,"
               " ADD COLUMN lifetime_transferred_out bigint NOT NULL DEFAULT 0")
    op.execute("""
CREATE TABLE holds (
    member_id   text NOT NULL,
    hold_id     text NOT NULL,
    points      bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    status      text NOT NULL,
    PRIMARY KEY (member_id, hold_id)
)""")
    # Open holds by due time: the scheduler's question, "which members have holds open past
    # their time"; the ended holds, which pile up, are not in it.
    op.execute("CREATE INDEX holds_open_due ON holds (expires_at, member_id) WHERE status = 'open'")


def downgrade() -> None:
    op.execute("DROP TABLE holds")
    op.execute("ALTER TABLE balances DROP COLUMN held, DROP COLUMN lifetime_transferred_in,"
               " DROP COLUMN lifetime_transferred_out")
