"""Members (M1): data keys, the email index and the profiles' read model.

- `member_keys`: each member's data key, wrapped by the master key (see
  `ledger.crypto`). Erasure sets `wrapped_key` to NULL and `destroyed_at`: every value
  sealed under that key, wherever it is stored, is unreadable from then on. A row with a
  destroyed key stays as the record that the member was erased, so that no new key is
  made for them.
- `member_email_index`: the keyed hash (HMAC-SHA256) of each member's normalised email,
  never the email, so that support finds a member by email without a scan. Several
  members may share an email (duplicate accounts); erasure deletes the member's rows.
- `member_profiles`: a read model (fed by the projection runner from the member events,
  rebuilt with the others): each member's profile as sealed values by field.

No event before this revision is a member event, so the read model starts empty.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE member_keys (
    member_id     text PRIMARY KEY,
    wrapped_key   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz,
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
)""")
    op.execute("""
CREATE TABLE member_email_index (
    email_hash  bytea NOT NULL,
    member_id   text NOT NULL,
    PRIMARY KEY (email_hash, member_id)
)""")
    op.execute("CREATE INDEX member_email_index_member ON member_email_index (member_id)")
    op.execute("""
CREATE TABLE member_profiles (
    member_id          text PRIMARY KEY,
    fields             jsonb NOT NULL,
    marketing_consent  boolean NOT NULL,
    enrolled_at        timestamptz,
    updated_at         timestamptz NOT NULL,
    erased_at          timestamptz,
    position           bigint NOT NULL
)""")


def downgrade() -> None:
    op.execute("DROP TABLE member_profiles")
    op.execute("DROP TABLE member_email_index")
    op.execute("DROP TABLE member_keys")
