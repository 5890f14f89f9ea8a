"""Message rows: the one rendering of a message, drafts, the insert with the next seq, token
counts, and the visibility rule every message read goes through (use cases: ``services.messages``).

The append's SQL (next seq, parent, run, active leaf under the conversation's row lock) is
``services.message_insert``; the tree reads are ``services.message_tree``.
"""

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, RowMapping, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import MessageNotFoundError
from conversation_service.models.message import (
    MessageCreate,
    MessageOut,
    MessageStatus,
    Role,
)
from conversation_service.services import idempotency
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import owned_by, require_owned
from conversation_service.services.message_insert import insert_with_next_seq, record_run
from conversation_service.services.search_text import index_values
from conversation_service.utils.clock import new_id, utcnow
from conversation_service.utils.memory_utils import SUPPORTED_ENCODINGS, message_tokens

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.seq,
    messages.c.role,
    messages.c.agent_id,
    messages.c.content,
    messages.c.content_parts,
    messages.c.status,
    messages.c.metadata,
    messages.c.token_count,
    messages.c.language,
    messages.c.sentiment_label,
    messages.c.sentiment_score,
    messages.c.sentiment_model,
    messages.c.parent_id,
    messages.c.created_at,
    messages.c.updated_at,
)


def message_json(m: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """The API shape of a message row: the one rendering of a message.

    Ids stay ``UUID`` and times aware UTC ``datetime``: every serializer of the service is orjson
    with ``OPT_UTC_Z`` (responses, the event log, JSON columns), which writes them as Pydantic
    does (``…T12:00:00.5Z``), in C; converting them in Python was most of a history page's cost.
    """
    label = m["sentiment_label"]
    return {
        "id": m["id"],
        "conversation_id": m["conversation_id"],
        "seq": m["seq"],
        "role": m["role"],
        "agent_id": m["agent_id"],
        "content": m["content"],
        "content_parts": m["content_parts"],
        "status": m["status"],
        "metadata": m["metadata"],
        "token_count": m["token_count"],
        "language": m["language"],
        "sentiment": (
            {"label": label, "score": m["sentiment_score"], "model": m["sentiment_model"]}
            if label is not None
            else None
        ),
        "parent_id": m["parent_id"],
        "created_at": m["created_at"],
        "updated_at": m["updated_at"],
        # The reader's own feedback: filled in by the reads that join it (history, one message).
        "feedback": None,
    }


def to_out(m: Mapping[str, Any] | RowMapping) -> MessageOut:
    """``message_json`` as the API model."""
    return MessageOut.model_validate(message_json(m))


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A message to append, whoever wrote it (user API, orchestrator, OpenAI-compatible API)."""

    role: Role
    content: str
    content_parts: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: MessageStatus = MessageStatus.COMPLETED
    # The message it follows (None: a new root); ignored unless ``parent_given``: a draft
    # without a parent follows the conversation's active leaf, as clients did before trees.
    parent_id: uuid.UUID | None = None
    parent_given: bool = False
    # Who wrote an assistant or tool message; None: the conversation's current agent.
    agent_id: str | None = None

    @property
    def inherits_agent(self) -> bool:
        """Whether the insert sets ``agent_id`` to the conversation's current agent."""
        return self.agent_id is None and self.role in (Role.ASSISTANT, Role.TOOL)


def user_draft(data: MessageCreate) -> MessageDraft:
    """The draft of a user message as the public API received it."""
    return MessageDraft(
        role=Role.USER,
        content=data.content,
        content_parts=(
            [part.model_dump(mode="json", exclude_none=True) for part in data.content_parts]
            if data.content_parts is not None
            else None
        ),
        metadata=data.metadata,
        parent_id=data.parent_id,
        parent_given="parent_id" in data.model_fields_set,
    )


# What a message row holds before its processing job has run.
UNPROCESSED: Final[dict[str, Any]] = {
    "language": None,
    "sentiment_label": None,
    "sentiment_score": None,
    "sentiment_model": None,
}


async def row_for(
    principal: Principal,
    conversation_id: uuid.UUID,
    draft: MessageDraft,
    message_id: uuid.UUID,
    now: datetime,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The ``INSERT_COLUMNS`` of a new message, token counts included."""
    tokens = await count_message_tokens(draft.role.value, draft.content)
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "tenant_id": principal.tenant_id,
        "role": draft.role.value,
        "agent_id": draft.agent_id,
        "content": draft.content,
        "content_parts": draft.content_parts,
        "status": draft.status.value,
        "metadata": draft.metadata,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "updated_at": now,
        "tokens_cl100k": tokens["cl100k_base"],
        "tokens_o200k": tokens["o200k_base"],
        "token_count": tokens["o200k_base"],
        "always_include": is_always_included(draft.role.value, draft.metadata),
        **index_values(draft.content, None),  # neutral until processing detects the language
    }


@dataclass(frozen=True, slots=True)
class Inserted:
    """A message as stored (JSON-ready), or the first response when a key was replayed."""

    message: dict[str, Any]
    replayed: bool


async def insert_message(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    draft: MessageDraft,
    *,
    idempotency_key: str | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Inserted:
    """Insert a message with the next seq of the principal's conversation.

    With an ``idempotency_key``, ``fingerprint`` (the request as received) decides whether a
    repeat is a replay (same request) or a misuse (different request).
    """
    scope = None
    if idempotency_key is not None:
        scope = idempotency.IdempotencyScope.build(principal, idempotency_key, fingerprint or {})
        replay = await idempotency.find_replay(conn, scope)
        if replay is not None:
            return Inserted(message=replay, replayed=True)
    now = utcnow()
    values = await row_for(principal, conversation_id, draft, new_id(), now, idempotency_key)
    placed = await insert_with_next_seq(
        conn,
        principal,
        conversation_id,
        values,
        now,
        parent=(draft.parent_given, draft.parent_id),
        inherit_agent=draft.inherits_agent,
    )
    if placed.branch_id == values["id"]:
        await record_run(conn, values["id"], placed.parent_id)
    message = message_json(
        {
            **values,
            **UNPROCESSED,
            "seq": placed.seq,
            "agent_id": placed.agent_id,
            "parent_id": placed.parent_id,
        }
    )
    if scope is not None:
        await idempotency.record_response(
            conn, scope, conversation_id=conversation_id, status_code=201, response=message
        )
    return Inserted(message=message, replayed=False)


# Content up to this size is counted inline; longer content is counted in a worker thread so
# the event loop keeps serving other requests meanwhile.
_INLINE_COUNT_CHARS = 4096


async def count_message_tokens(role: str, content: str) -> dict[str, int]:
    """Exact per-message tokens (with chat overhead) for every supported encoding."""

    def count() -> dict[str, int]:
        return {
            encoding: message_tokens(role, content, encoding) for encoding in SUPPORTED_ENCODINGS
        }

    if len(content) <= _INLINE_COUNT_CHARS:
        return count()
    return await asyncio.to_thread(count)


def is_always_included(role: str, metadata: dict[str, Any]) -> bool:
    """System messages and messages pinned in metadata are in every context window; a handoff
    line is a system message of history, not an instruction, so it ages out like any turn."""
    if metadata.get("pinned") is True:
        return True
    return role == Role.SYSTEM.value and metadata.get("type") != "handoff"


def visible(principal: Principal, conversation_id: uuid.UUID) -> list[ColumnElement[bool]]:
    # Joining the owner check into the page query keeps a history read to one round trip.
    return [
        messages.c.conversation_id == conversation_id,
        messages.c.deleted_at.is_(None),
        conversations.c.id == messages.c.conversation_id,
        owned_by(principal, conversation_id),
    ]


async def visible_row(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> RowMapping:
    stmt = (
        select(*MESSAGE_COLUMNS)
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(*visible(principal, conversation_id), messages.c.id == message_id)
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        await require_owned(conn, principal, conversation_id)
        raise MessageNotFoundError(f"message {message_id} not found")
    return row
