"""Fork: a new conversation holding a copy of one path of another.

The fork is created by ``services.conversations.create_conversation`` (same user and agent, the
source's title unless one is given, its metadata, tags, priority and memory policy), so it sends
``conversation.created`` like any new conversation, with ``forked_from`` set. The path up to the
named message (default: the active leaf) is copied live message by live message with new ids,
``seq`` from 1, one run, contents, metadata, token counts, language and sentiment kept. A reply
still streaming in the source is copied as it stands, ``incomplete``: its stream stays with the
source. Summaries, sessions and tracked context are not copied: they are the source's history.
The source is not changed.
"""

import uuid
from typing import Any

from sqlalchemy import insert, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ValidationError
from conversation_service.models.conversation import ConversationCreate, ConversationOut, ForkCreate
from conversation_service.models.message import MessageStatus
from conversation_service.services import message_tree
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import get_conversation
from conversation_service.services.conversations import create_conversation
from conversation_service.services.message_store import MESSAGE_COLUMNS
from conversation_service.services.search_text import index_values
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import new_id, utcnow

_COPY_COLUMNS = (
    *MESSAGE_COLUMNS,
    messages.c.tenant_id,
    messages.c.tokens_cl100k,
    messages.c.tokens_o200k,
    messages.c.always_include,
)
_COPY_READS = message_tree.segment_statements(_COPY_COLUMNS)
# Rows copied per read and insert: bounded memory whatever the path's length.
COPY_BATCH = 500
_OPEN = {MessageStatus.PENDING.value, MessageStatus.STREAMING.value}


async def fork_conversation(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    data: ForkCreate,
    *,
    settings: ConversationSettings,
) -> ConversationOut:
    """Fork one of the caller's conversations at a message (default: its active leaf)."""
    source = await get_conversation(uow.conn, principal, conversation_id)
    path = await message_tree.resolve_path(
        uow.conn, principal, conversation_id, data.message_id, name="message_id"
    )
    if path.leaf_id is None:
        raise ValidationError("the conversation has no message to fork from")
    fork = await create_conversation(
        uow,
        principal,
        ConversationCreate(
            agent_id=source.agent_id,
            title=data.title if data.title is not None else source.title,
            workflow_id=source.workflow_id,
            metadata=source.metadata,
            tags=source.tags,
            priority=source.priority,
            memory_policy=source.memory_policy,
        ),
        settings=settings,
        forked_from={"conversation_id": str(conversation_id), "message_id": str(path.leaf_id)},
    )
    seq, tokens, parent, last_at = 0, 0, None, None
    after = 0
    while True:
        rows = await message_tree.path_rows(
            uow.conn,
            conversation_id,
            path,
            after=after,
            before=path.segments[-1].high + 1,
            ascending=True,
            limit=COPY_BATCH,
            statements=_COPY_READS,
        )
        if not rows:
            break
        copies: list[dict[str, Any]] = []
        for row in rows:
            seq += 1
            copy = _copy(row, fork.id, seq, parent)
            parent, last_at = copy["id"], row["created_at"]
            tokens += row["token_count"] or 0
            copies.append(copy)
        await uow.conn.execute(insert(messages), copies)
        after = rows[-1]["seq"]
    await uow.conn.execute(
        update(conversations)
        .where(conversations.c.id == fork.id)
        .values(
            last_seq=seq,
            message_count=seq,
            token_count=tokens,
            last_message_at=last_at,
            active_leaf_id=parent,
            active_branch_id=fork.id if parent is not None else None,
            updated_at=utcnow(),
        )
    )
    return await get_conversation(uow.conn, principal, fork.id)


def _copy(
    row: Any, conversation_id: uuid.UUID, seq: int, parent_id: uuid.UUID | None
) -> dict[str, Any]:
    status = row["status"]
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "tenant_id": row["tenant_id"],
        "seq": seq,
        "role": row["role"],
        "agent_id": row["agent_id"],
        "content": row["content"],
        "content_parts": row["content_parts"],
        "status": MessageStatus.INCOMPLETE.value if status in _OPEN else status,
        "metadata": row["metadata"],
        "token_count": row["token_count"],
        "tokens_cl100k": row["tokens_cl100k"],
        "tokens_o200k": row["tokens_o200k"],
        "always_include": row["always_include"],
        "language": row["language"],
        "sentiment_label": row["sentiment_label"],
        "sentiment_score": row["sentiment_score"],
        "sentiment_model": row["sentiment_model"],
        "parent_id": parent_id,
        "branch_id": conversation_id,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        # Searchable like the original (search reads these columns, not the content).
        **index_values(row["content"] or "", row["language"]),
    }
