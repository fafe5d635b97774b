"""Complaint compensation (P3): the history of a member filtered by support case
(`GET /v1/members/{id}/history?case_id=`) reads this partial index, which holds only the
adjustments that carry a case: a page costs an index range scan, whatever the member's
history.

Revision ID: 0015
Revises: 0013
"""

from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_case_id ON events (stream_id, (data->>'case_id'), stream_version)"
               " WHERE type = 'PointsAdjusted' AND data ? 'case_id'")


def downgrade() -> None:
    op.execute("DROP INDEX events_case_id")
