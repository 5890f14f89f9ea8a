"""search over history (PostgreSQL GIN, SQLite FTS5) and feedback on replies

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06 12:00:00.000000

Messages and conversations get two search columns each, written by the service (see
``services.search_text``): ``search_stems`` (stems in the message's language) and
``search_words`` (folded words). PostgreSQL indexes them with GIN over an expression; SQLite
with external-content FTS5 tables kept in step by triggers. Existing rows are indexed here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conversation_service.db.types
from conversation_service.services.search_text import index_values

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The one expression both the index and every search query use (PostgreSQL only matches an
# expression index when the query repeats it exactly).
PG_VECTOR = (
    "(setweight(to_tsvector('simple'::regconfig, search_stems), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, search_words), 'B'))"
)
_BATCH = 1000


def _sqlite_fts(table: str) -> list[str]:
    # ``table`` is one of this module's constants, never input.
    fts = f"{table}_fts"
    old = (
        f"INSERT INTO {fts}({fts}, rowid, search_stems, search_words) "  # noqa: S608
        "VALUES ('delete', old.rowid, old.search_stems, old.search_words);"
    )
    new = (
        f"INSERT INTO {fts}(rowid, search_stems, search_words) "  # noqa: S608
        "VALUES (new.rowid, new.search_stems, new.search_words);"
    )
    return [
        # A test schema reset drops the tables but not a virtual table the ORM does not know.
        f"DROP TABLE IF EXISTS {fts}",
        f"CREATE VIRTUAL TABLE {fts} USING fts5(search_stems, search_words, content='{table}', "
        "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
        f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN {new} END",
        f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN {old} END",
        f"CREATE TRIGGER {fts}_au AFTER UPDATE OF search_stems, search_words ON {table} "
        f"BEGIN {old} {new} END",
    ]


def _backfill(table: str, text_column: str, language_column: str | None) -> None:
    bind = op.get_bind()
    rows = sa.table(
        table,
        sa.column("id", sa.Uuid()),
        sa.column(text_column, sa.Text()),
        sa.column("search_stems", sa.Text()),
        sa.column("search_words", sa.Text()),
        *([sa.column(language_column, sa.String())] if language_column else []),
    )
    last = None
    while True:
        stmt = sa.select(rows).order_by(rows.c.id).limit(_BATCH)
        if last is not None:
            stmt = stmt.where(rows.c.id > last)
        batch = bind.execute(stmt).mappings().all()
        if not batch:
            return
        for row in batch:
            language = row[language_column] if language_column else None
            values = index_values(row[text_column] or "", language)
            bind.execute(sa.update(rows).where(rows.c.id == row["id"]).values(**values))
        last = batch[-1]["id"]


def upgrade() -> None:
    """Apply this revision."""
    for table in ("messages", "conversations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in ("search_stems", "search_words"):
                batch_op.add_column(
                    sa.Column(column, sa.Text(), server_default=sa.text("''"), nullable=False)
                )
    _backfill("messages", "content", "language")
    _backfill("conversations", "title", None)
    if op.get_bind().dialect.name == "postgresql":
        for table in ("messages", "conversations"):
            op.execute(f"CREATE INDEX ix_{table}_search_gin ON {table} USING gin ({PG_VECTOR})")
    else:
        for table in ("messages", "conversations"):
            for statement in _sqlite_fts(table):
                op.execute(statement)
            op.execute(f"INSERT INTO {table}_fts({table}_fts) VALUES ('rebuild')")  # noqa: S608
    op.create_table(
        "message_feedback",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=True),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "created_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_message_feedback_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_feedback_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "user_id", name=op.f("pk_message_feedback")),
    )
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_feedback_agent", ["tenant_id", "agent_id", "updated_at"], unique=False
        )
        batch_op.create_index("ix_message_feedback_conversation", ["conversation_id"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("message_feedback")
    if op.get_bind().dialect.name == "postgresql":
        for table in ("messages", "conversations"):
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_search_gin")
    else:
        for table in ("messages", "conversations"):
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {table}_fts")
    for table in ("conversations", "messages"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("search_words")
            batch_op.drop_column("search_stems")
