"""The programme as published data: rule set versions and dated exchange-rate sets.

Both tables are insert-only, as the events table is: an earn event names the version
it was decided under, and an auditor must be able to read that version as it was, so a
trigger refuses UPDATE, DELETE and TRUNCATE whatever the role. Each row has a position
(`id`) in publication order: a process polls max(id) of both to learn cheaply that
something was published (`ledger.rules_refresh`).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE programme_rules (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version         text        NOT NULL UNIQUE,
    effective_from  timestamptz NOT NULL UNIQUE,
    rules           jsonb       NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    published_by    text        NOT NULL
)""")
    op.execute("""
CREATE TABLE fx_rate_sets (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    effective_from  timestamptz NOT NULL UNIQUE,
    base            text        NOT NULL,
    rates           jsonb       NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    published_by    text        NOT NULL
)""")
    op.execute("""
CREATE FUNCTION programme_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'published programme data is insert-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$""")
    for table in ("programme_rules", "fx_rate_sets"):
        op.execute(f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}"
                   " FOR EACH ROW EXECUTE FUNCTION programme_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
                   " FOR EACH STATEMENT EXECUTE FUNCTION programme_refuse_change()")


def downgrade() -> None:
    op.execute("DROP TABLE fx_rate_sets")
    op.execute("DROP TABLE programme_rules")
    op.execute("DROP FUNCTION programme_refuse_change()")
