"""multi-agent conversations: who spoke, who took part, workflow listing

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.String(length=128), nullable=True))
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        # Null on rows written before this revision: read as ``[agent_id]``.
        batch_op.add_column(
            sa.Column(
                "agents", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
        batch_op.create_index(
            "ix_conversations_owner_workflow",
            ["tenant_id", "user_id", "workflow_id", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_conversations_tenant_workflow", ["tenant_id", "workflow_id", "id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_tenant_workflow")
        batch_op.drop_index("ix_conversations_owner_workflow")
        batch_op.drop_column("agents")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("agent_id")
