"""API keys can be rotated: a name belongs to one current key at a time.

`ledger keys rotate NAME` issues a new key under the same name (adjustments record
the key's name as their actor, so the name is what stays stable) and marks the old
one replaced. A plain UNIQUE on `name` would refuse the new key, so the uniqueness
moves to the keys not replaced: a revoked key that nobody rotated still holds its
name, which `ledger keys create` refuses to reuse. The reference to the successor is
checked at commit, so a rotation can hand the name over before the new key exists.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE api_keys ADD COLUMN replaced_by text REFERENCES api_keys (key_id)"
               " DEFERRABLE INITIALLY DEFERRED")
    op.execute("ALTER TABLE api_keys DROP CONSTRAINT api_keys_name_key")
    op.execute("CREATE UNIQUE INDEX api_keys_current_name ON api_keys (name) WHERE replaced_by IS NULL")


def downgrade() -> None:
    # Rotated keys share their name with their successor; they go before UNIQUE returns.
    op.execute("DELETE FROM api_keys WHERE replaced_by IS NOT NULL")
    op.execute("DROP INDEX api_keys_current_name")
    op.execute("ALTER TABLE api_keys ADD CONSTRAINT api_keys_name_key UNIQUE (name)")
    op.execute("ALTER TABLE api_keys DROP COLUMN replaced_by")
