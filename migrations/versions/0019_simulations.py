"""What-if simulations of a draft rule set (`ledger.simulations`).

`simulations`: one row per simulation asked for, with its request (the draft rule set
and the window), its status (queued, running, done, failed), its progress (the
position of the event log reached, out of the head it started at), its result once
done (the sums by product, tier and rule: bounded by the rules), or its error. The
Idempotency-Key of the request that asked for it is unique, with a hash of the
request, so that a retry answers the same simulation.

Nothing here is an event: a simulation reads the event log and writes only this row.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE simulations (
    simulation_id    text PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    request          jsonb NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    request_hash     text NOT NULL,
    requested_by     text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    position         bigint NOT NULL DEFAULT 0,
    head             bigint,
    events_read      bigint NOT NULL DEFAULT 0,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
)""")
    op.execute("CREATE INDEX simulations_queued ON simulations (seq) WHERE status = 'queued'")


def downgrade() -> None:
    op.execute("DROP TABLE simulations")
