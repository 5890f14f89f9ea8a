"""Versioned, non-destructive summaries: each version covers history up to a seq."""

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import RowMapping, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import summaries_table as summaries
from conversation_service.models.memory import SummaryOut
from conversation_service.services import message_tree
from conversation_service.utils.clock import new_id, utcnow
from conversation_service.utils.memory_utils import count_tokens, message_tokens

# The summary reaches the model as a leading system message, framed like this.
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


def to_out(row: Mapping[str, Any] | RowMapping) -> SummaryOut:
    """API shape of a summary row."""
    return SummaryOut(
        text=row["content"],
        version=row["version"],
        covers_until_seq=row["covers_until_seq"],
        token_count=row["token_count"],
        method=row["method"],
        created_at=row["created_at"],
    )


async def latest_summary(conn: AsyncConnection, conversation_id: uuid.UUID) -> RowMapping | None:
    """The newest summary version of a conversation (one index probe)."""
    stmt = (
        select(summaries)
        .where(summaries.c.conversation_id == conversation_id)
        .order_by(summaries.c.version.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).mappings().one_or_none()


def summary_message_tokens(content: str, encoding: str) -> int:
    """Tokens of the summary as the leading system message it becomes."""
    return message_tokens("system", SUMMARY_PREFIX + content, encoding)


async def add_summary(
    conn: AsyncConnection,
    *,
    conversation_id: uuid.UUID,
    tenant_id: str,
    content: str,
    covers_until_seq: int,
    covers_until_message_id: uuid.UUID | None = None,
    method: str,
) -> dict[str, Any]:
    """Store a new version after the newest one; earlier versions are kept. Without
    ``covers_until_message_id`` it covers the active path up to ``covers_until_seq``."""
    if covers_until_message_id is None:
        leaf = await conn.scalar(
            select(conversations.c.active_leaf_id).where(conversations.c.id == conversation_id)
        )
        path = await message_tree.path_of(conn, conversation_id, leaf) if leaf else None
        if path is not None:
            covers_until_message_id = await message_tree.message_at(
                conn, conversation_id, path, covers_until_seq
            )
    current = await conn.scalar(
        select(func.max(summaries.c.version)).where(summaries.c.conversation_id == conversation_id)
    )
    values: dict[str, Any] = {
        "id": new_id(),
        "conversation_id": conversation_id,
        "tenant_id": tenant_id,
        "version": (current or 0) + 1,
        "covers_until_seq": covers_until_seq,
        "covers_until_message_id": covers_until_message_id,
        "content": content,
        "token_count": count_tokens(content, "o200k_base"),
        "tokens_cl100k": summary_message_tokens(content, "cl100k_base"),
        "tokens_o200k": summary_message_tokens(content, "o200k_base"),
        "method": method,
        "created_at": utcnow(),
    }
    await conn.execute(insert(summaries).values(**values))
    return values
