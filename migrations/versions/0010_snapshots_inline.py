"""Member snapshots kept as text, inline and uncompressed.

A snapshot of a member with ten lots is about 2.4 KB of JSON since the lots carry their
booking's terms (amount, currency, per-rule breakdown), just past the size at which
PostgreSQL compresses a row (TOAST, about 2 KB). Reading 20,000 such snapshots by member
id and loading them cost 90 µs each as compressed jsonb, 37 µs as inline text: a
consumer restarted cold loads one per member it meets, and its produce-to-queryable p99
rose with them. Nothing queries inside a snapshot, so jsonb's parsing on every write and
its output on every read bought nothing; `toast_tuple_target` keeps rows up to a page
inline (larger ones are still toasted).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE member_snapshots ALTER COLUMN state TYPE text USING state::text")
    op.execute("ALTER TABLE member_snapshots SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE member_snapshots RESET (toast_tuple_target)")
    op.execute("ALTER TABLE member_snapshots ALTER COLUMN state TYPE jsonb USING state::jsonb")
