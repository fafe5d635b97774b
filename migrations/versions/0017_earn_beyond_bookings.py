"""Earn beyond bookings (P3).

- Complaint compensation: the history of a member filtered by support case
  (`GET /v1/members/{id}/history?case_id=`) reads a partial index holding only the
  adjustments that carry a case, so a page costs an index range scan whatever the
  member's history.
- Anniversaries: a read model per member (since when it is active, the next year not
  granted, when it falls due) that the anniversary scheduler walks by `due_at`. No
  event before this revision is an activity or an anniversary, but bookings earned: it
  starts from each member's first booking earn, and the projection runner merges what
  comes after (the earliest `since` wins, whatever it applies twice).

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_case_id ON events (stream_id, (data->>'case_id'), stream_version)"
               " WHERE type = 'PointsAdjusted' AND data ? 'case_id'")
    op.execute("""
CREATE TABLE member_anniversaries (
    member_id   text PRIMARY KEY,
    since       timestamptz NOT NULL,
    next_year   integer NOT NULL,
    due_at      timestamptz NOT NULL
)""")
    op.execute("""
INSERT INTO member_anniversaries (member_id, since, next_year, due_at)
SELECT stream_id, min(occurred_at), 1, (min(occurred_at) AT TIME ZONE 'UTC' + interval '1 year') AT TIME ZONE 'UTC'
FROM events WHERE type = 'PointsEarned' GROUP BY stream_id""")
    op.execute("CREATE INDEX member_anniversaries_due ON member_anniversaries (due_at, member_id)")


def downgrade() -> None:
    op.execute("DROP TABLE member_anniversaries")
    op.execute("DROP INDEX events_case_id")
