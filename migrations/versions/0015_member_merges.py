"""Members' merges: the redirect of a merged member's id to the member it was merged
into (written in the transaction of the merge, read by the write path and the reads),
and the balances' lifetime totals of points a merge moved in and out.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE member_redirects (
    member_id    text PRIMARY KEY,
    merged_into  text NOT NULL,
    merged_at    timestamptz NOT NULL
)""")
    op.execute("ALTER TABLE balances ADD COLUMN lifetime_merged_in bigint NOT NULL DEFAULT 0,"
               " ADD COLUMN lifetime_merged_out bigint NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE balances DROP COLUMN lifetime_merged_in, DROP COLUMN lifetime_merged_out")
    op.execute("DROP TABLE member_redirects")
