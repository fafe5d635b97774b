"""Event store, idempotency, projections, API keys, Kafka offsets and rejected messages.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version > 0),
    type            text        NOT NULL,
    schema_version  smallint    NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    hash            bytea       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- The event store is append-only for real: no role, however privileged its
-- application code, can rewrite history through SQL.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- One row per source message (booking event id, Idempotency-Key header, Kafka
-- message): a duplicate returns the stored result and appends nothing.
CREATE TABLE commands (
    idempotency_key text PRIMARY KEY,
    request_hash    text        NOT NULL,
    stream_id       text        NOT NULL,
    result          jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projection_checkpoints (
    name      text PRIMARY KEY,
    position  bigint NOT NULL DEFAULT 0
);
INSERT INTO projection_checkpoints (name) VALUES ('read_models');

CREATE TABLE balances (
    member_id          text PRIMARY KEY,
    available          bigint NOT NULL DEFAULT 0,
    pending            bigint NOT NULL DEFAULT 0,
    lifetime_earned    bigint NOT NULL DEFAULT 0,
    lifetime_redeemed  bigint NOT NULL DEFAULT 0,
    lifetime_expired   bigint NOT NULL DEFAULT 0,
    lifetime_adjusted  bigint NOT NULL DEFAULT 0,
    lifetime_reversed  bigint NOT NULL DEFAULT 0,
    debt               bigint NOT NULL DEFAULT 0,
    last_activity      timestamptz NOT NULL,
    position           bigint NOT NULL
);

CREATE TABLE tier_qualifying (
    member_id   text NOT NULL,
    booking_id  text NOT NULL,
    earned_at   timestamptz NOT NULL,
    points      bigint NOT NULL,
    PRIMARY KEY (member_id, booking_id)
);

CREATE TABLE tier_status (
    member_id            text PRIMARY KEY,
    tier                 text NOT NULL,
    qualifying_points    bigint NOT NULL,
    window_start         timestamptz NOT NULL,
    next_tier            text,
    points_to_next_tier  bigint,
    reevaluation_date    timestamptz,
    as_of                timestamptz NOT NULL
);

CREATE TABLE expiry_lots (
    member_id   text NOT NULL,
    lot_id      text NOT NULL,
    status      text NOT NULL,
    points      bigint NOT NULL,
    remaining   bigint NOT NULL,
    expires_at  timestamptz,
    PRIMARY KEY (member_id, lot_id)
);
CREATE INDEX expiry_lots_due ON expiry_lots (expires_at) WHERE status = 'active' AND remaining > 0;

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE kafka_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE rejected_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text NOT NULL,
    topic           text,
    partition       integer,
    "offset"        bigint,
    key             text,
    value           bytea NOT NULL,
    reason          text NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    retried_at      timestamptz,
    UNIQUE (topic, partition, "offset")
);
"""

DOWNGRADE = """
DROP TABLE rejected_messages, kafka_offsets, api_keys, expiry_lots, tier_status, tier_qualifying,
    balances, projection_checkpoints, commands;
DROP TRIGGER events_no_truncate ON events;
DROP TABLE events;
DROP FUNCTION events_refuse_change();
"""


def _statements(script: str) -> list[str]:
    """One statement per chunk: the asyncpg driver prepares each, and a prepared
    statement holds a single command. Chunks end at a line ending in ';' outside of
    a $$-quoted function body."""
    statements, chunk, quoted = [], [], False
    for line in script.splitlines():
        chunk.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if line.rstrip().endswith(";") and not quoted:
            statements.append("\n".join(chunk).strip())
            chunk = []
    assert not "\n".join(chunk).strip(), "the script ends with a complete statement"
    return statements


def upgrade() -> None:
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
