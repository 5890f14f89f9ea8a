"""conversations and messages

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:19:06.144415
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conversation_service.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("workflow_id", sa.String(length=128), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "memory_policy", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("token_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("sentiment_label", sa.String(length=16), nullable=True),
        sa.Column("sentiment_score", sa.Float(), nullable=True),
        sa.Column(
            "created_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_message_at",
            conversation_service.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "deleted_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_owner", ["tenant_id", "user_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_owner_agent", ["tenant_id", "user_id", "agent_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_owner_status", ["tenant_id", "user_id", "status", "id"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_owner_updated",
            ["tenant_id", "user_id", "updated_at", "id"],
            unique=False,
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column(
            "response", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "created_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "locked_until", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_idempotency_keys_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_conversation", ["conversation_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "content_parts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("sentiment_label", sa.String(length=16), nullable=True),
        sa.Column("sentiment_score", sa.Float(), nullable=True),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "deleted_at", conversation_service.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Containment filters (tag, metadata.<key>=<value>) use the GIN operator class.
        op.create_index(
            "ix_conversations_tags_gin", "conversations", ["tags"], postgresql_using="gin"
        )
        op.create_index(
            "ix_conversations_metadata_gin", "conversations", ["metadata"], postgresql_using="gin"
        )


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_conversations_metadata_gin", table_name="conversations")
        op.drop_index("ix_conversations_tags_gin", table_name="conversations")
    op.drop_table("messages")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_conversation")

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_owner_updated")
        batch_op.drop_index("ix_conversations_owner_status")
        batch_op.drop_index("ix_conversations_owner_agent")
        batch_op.drop_index("ix_conversations_owner")

    op.drop_table("conversations")
