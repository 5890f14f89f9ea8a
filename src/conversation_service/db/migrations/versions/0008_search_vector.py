"""search reads newest first: a stored search vector and a (tenant, created_at) index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 15:30:00.000000

PostgreSQL only. Migration 0007 indexed messages with GIN over an expression, so every candidate
a weighted query (``'run':A``) had to recheck was re-tokenised from its text: a query of two
common words over a million messages spent seconds there. The vector is now a stored generated
column (computed by PostgreSQL from the two search columns the service writes, so no writer
changes) with the GIN index over it, and ``ix_messages_tenant_created`` lets the planner read a
tenant's messages newest first and stop at the ranking window when matches are common.

Adding a stored column rewrites the messages table: plan the upgrade of a large database for a
quiet hour. SQLite is unchanged (FTS5 already walks newest first); it gets the btree index only,
as the ORM declares it for both engines.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_VECTOR = (
    "(setweight(to_tsvector('simple'::regconfig, search_stems), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, search_words), 'B'))"
)


def upgrade() -> None:
    """Apply this revision."""
    # Not in a batch: on SQLite a batch may copy the table, renumbering the rowids FTS5 maps.
    op.create_index("ix_messages_tenant_created", "messages", ["tenant_id", "created_at"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS {PG_VECTOR} "
        "STORED"
    )
    op.execute("DROP INDEX IF EXISTS ix_messages_search_gin")
    op.execute("CREATE INDEX ix_messages_search_vector_gin ON messages USING gin (search_vector)")


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_search_vector_gin")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
        op.execute(f"CREATE INDEX ix_messages_search_gin ON messages USING gin ({PG_VECTOR})")
    op.drop_index("ix_messages_tenant_created", table_name="messages")
