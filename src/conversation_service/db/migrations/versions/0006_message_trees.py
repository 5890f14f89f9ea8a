"""message trees: parent links, branches, the active leaf, forks, path-aware summaries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00.000000

Histories written before this revision were one line: each message becomes the child of the one
before it (whatever ``parent_id`` a client had put there, which nothing used), all of them on the
root branch (``branch_id`` = the conversation id), and the newest one becomes the active leaf.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("branch_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("branch_ancestry", _JSON, nullable=True))
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_leaf_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("active_branch_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("replaced_leaf_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("forked_from", _JSON, nullable=True))
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("covers_until_message_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE messages SET branch_id = conversation_id, parent_id = ("
        "SELECT previous.id FROM messages AS previous "
        "WHERE previous.conversation_id = messages.conversation_id "
        "AND previous.seq = messages.seq - 1)"
    )
    op.execute(
        "UPDATE conversations SET active_leaf_id = ("
        "SELECT m.id FROM messages AS m WHERE m.conversation_id = conversations.id "
        "AND m.seq = conversations.last_seq)"
    )
    op.execute("UPDATE conversations SET active_branch_id = id WHERE active_leaf_id IS NOT NULL")
    op.execute(
        "UPDATE summaries SET covers_until_message_id = ("
        "SELECT m.id FROM messages AS m WHERE m.conversation_id = summaries.conversation_id "
        "AND m.seq = summaries.covers_until_seq)"
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_branch", ["conversation_id", "branch_id", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_messages_parent", ["conversation_id", "parent_id", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_messages_branch_heads",
            ["conversation_id"],
            unique=False,
            sqlite_where=sa.text("branch_ancestry IS NOT NULL"),
            postgresql_where=sa.text("branch_ancestry IS NOT NULL"),
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_branch_heads")
        batch_op.drop_index("ix_messages_parent")
        batch_op.drop_index("ix_messages_branch")
        batch_op.drop_column("branch_ancestry")
        batch_op.drop_column("branch_id")
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.drop_column("covers_until_message_id")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("forked_from")
        batch_op.drop_column("active_branch_id")
        batch_op.drop_column("replaced_leaf_id")
        batch_op.drop_column("active_leaf_id")
