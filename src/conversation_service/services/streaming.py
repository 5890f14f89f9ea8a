"""Agent-side streaming: messages that grow by deltas, their completion, failure and idle expiry.

Deltas never touch the database. Each one is recorded in the Redis hash ``cs:partial:{<conversation
id>}:<message id>`` under its index (``HSETNX``: a re-sent index is harmless) and published as
``message.delta`` in the same Lua call (``EventPublisher.publish_deltas``), which also records the
last delta time in the hash (the idle sweep's index ``cs:streaming`` is written apart, see
``events.store``). The partial content is the message's initial content followed by the delta texts
in index order. It is persisted when the message completes, fails or is found idle; until then it
lives in Redis (persistence on), which survives API restarts. It is not flushed to the database
periodically: losing Redis itself loses the partial text of replies in flight, which then end
``incomplete`` with what the database holds.

The hash's marker field ``~c`` (the conversation id) says the stream is open. ``complete``,
``fail`` and the idle sweep remove it atomically with reading the deltas ("seal"), so nothing
can slip in between; a delta for a sealed or unknown stream is checked against the database,
which reopens a stream that Redis lost but the database still calls ``streaming``.

Idle streams end ``incomplete`` (``mark_incomplete``, run by ``services.stream_expiry``).
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import (
    ConversationNotFoundError,
    MessageNotFoundError,
    MessageNotStreamingError,
)
from conversation_service.events.log import (
    Delta,
    EventPublisher,
    EventType,
    StreamNotOpenError,
    StreamOwnerMismatchError,
)
from conversation_service.events.store import StreamStore
from conversation_service.models.message import MessageOut, MessageStatus, Role
from conversation_service.models.streaming import AgentMessageCreate, StreamComplete
from conversation_service.services import message_store
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import tenant_of
from conversation_service.services.messages import append, processing_job
from conversation_service.services.search_text import index_values
from conversation_service.services.unit_of_work import UnitOfWork, Units
from conversation_service.utils.clock import utcnow
from conversation_service.utils.json_merge import merge_patch

log = logging.getLogger(__name__)

SNAPSHOT_MESSAGES = 50
IDLE_ERROR = "stream idle timeout"

_STATE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.role,
    messages.c.content,
    messages.c.status,
    messages.c.metadata,
    messages.c.token_count,
    messages.c.language,
)


async def principal_of(conn: AsyncConnection, conversation_id: uuid.UUID) -> Principal:
    """The owner of a conversation (tenant and user), for writes made on their behalf."""
    row = (
        await conn.execute(
            select(conversations.c.tenant_id, conversations.c.user_id).where(
                conversations.c.id == conversation_id, conversations.c.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return Principal(tenant_id=row.tenant_id, user_id=row.user_id)


async def create_agent_message(
    uow: UnitOfWork,
    store: StreamStore,
    conversation_id: uuid.UUID,
    data: AgentMessageCreate,
    *,
    settings: ConversationSettings,
) -> dict[str, Any]:
    """Append an agent/tool/system message (``streaming`` or ``completed``) as JSON.

    A streaming one gets its stream opened in Redis after the commit (deltas reopen it from the
    database state if that fails), before ``message.created`` is published.
    """
    principal = await principal_of(uow.conn, conversation_id)
    draft = message_store.MessageDraft(
        role=Role(data.role),
        content=data.content,
        metadata=data.metadata,
        status=MessageStatus(data.status),
        parent_id=data.parent_id,
        parent_given="parent_id" in data.model_fields_set,
        agent_id=data.agent_id if data.role in (Role.ASSISTANT, Role.TOOL) else None,
    )
    result = await append(uow, principal, conversation_id, draft, settings=settings)
    message_id = result.message["id"]

    async def open_stream() -> None:
        try:
            await store.open(conversation_id, message_id)
        except (RedisError, OSError) as exc:
            log.warning("stream not opened", extra={"message_id": message_id, "error": str(exc)})

    if draft.status is MessageStatus.STREAMING:
        uow.after_commit(open_stream)
    return result.message


async def append_deltas(
    units: Units,
    publisher: EventPublisher,
    store: StreamStore,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    deltas: Sequence[Delta],
) -> list[str | None]:
    """Record and publish deltas; returns the event id per delta (None for a repeat).

    The database is read only when Redis does not know the stream (lost or sealed).
    """
    try:
        return await publisher.publish_deltas(conversation_id, message_id, deltas)
    except StreamOwnerMismatchError as exc:
        raise MessageNotFoundError(f"message {message_id} not found") from exc
    except StreamNotOpenError:
        pass
    async with units.read() as uow:
        row = await _load_state(uow.conn, conversation_id, message_id, lock=False)
    if row["status"] != MessageStatus.STREAMING.value:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    await store.open(conversation_id, message_id)
    try:
        return await publisher.publish_deltas(conversation_id, message_id, deltas)
    except (StreamNotOpenError, StreamOwnerMismatchError) as exc:
        raise MessageNotStreamingError(f"message {message_id} is no longer streaming") from exc


async def _load_state(
    conn: AsyncConnection, conversation_id: uuid.UUID, message_id: uuid.UUID, *, lock: bool
) -> RowMapping:
    stmt = (
        select(*_STATE_COLUMNS)
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(
            messages.c.id == message_id,
            messages.c.conversation_id == conversation_id,
            messages.c.deleted_at.is_(None),
            conversations.c.deleted_at.is_(None),
        )
    )
    if lock:
        stmt = stmt.with_for_update(of=messages)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        raise MessageNotFoundError(f"message {message_id} not found")
    return row


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """A message after complete/fail; ``changed`` is false for a repeated call (no event)."""

    message: MessageOut
    changed: bool
    error: str | None = None


async def _finish(
    conn: AsyncConnection,
    row: RowMapping,
    *,
    content: str,
    status: MessageStatus,
    metadata: dict[str, Any],
    only_if_streaming: bool = False,
) -> MessageOut | None:
    tokens = await message_store.count_message_tokens(row["role"], content)
    now = utcnow()
    where = [messages.c.id == row["id"]]
    if only_if_streaming:
        where.append(messages.c.status == MessageStatus.STREAMING.value)
    updated = (
        (
            await conn.execute(
                update(messages)
                .where(*where)
                .values(
                    content=content,
                    status=status.value,
                    metadata=metadata,
                    tokens_cl100k=tokens["cl100k_base"],
                    tokens_o200k=tokens["o200k_base"],
                    token_count=tokens["o200k_base"],
                    always_include=message_store.is_always_included(row["role"], metadata),
                    **index_values(content, row["language"]),
                    updated_at=now,
                )
                .returning(*message_store.MESSAGE_COLUMNS)
            )
        )
        .mappings()
        .one_or_none()
    )
    if updated is None:
        return None
    difference = tokens["o200k_base"] - (row["token_count"] or 0)
    await conn.execute(
        update(conversations)
        .where(conversations.c.id == row["conversation_id"])
        .values(token_count=conversations.c.token_count + difference, updated_at=now)
    )
    return message_store.to_out(updated)


_COMPLETABLE = frozenset(
    {MessageStatus.STREAMING.value, MessageStatus.PENDING.value, MessageStatus.INCOMPLETE.value}
)
_FAILABLE = frozenset({MessageStatus.STREAMING.value, MessageStatus.PENDING.value})


async def complete_message(
    uow: UnitOfWork,
    store: StreamStore,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    data: StreamComplete,
    *,
    settings: ConversationSettings,
) -> StreamOutcome:
    """Persist the final content (the body's, or the partial one) and mark it completed; the
    reply is then processed like any final message and ``message.completed`` is published.

    Completing an ``incomplete`` message (the agent came back after the idle timeout) is
    allowed; completing a completed one again changes nothing.
    """
    row = await _load_state(uow.conn, conversation_id, message_id, lock=True)
    if row["status"] == MessageStatus.COMPLETED.value:
        return StreamOutcome(await _current(uow.conn, message_id), changed=False)
    if row["status"] not in _COMPLETABLE:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    partial = await store.seal(conversation_id, message_id)
    content = data.content if data.content is not None else row["content"] + partial.text
    metadata = row["metadata"]
    if data.metadata is not None:
        metadata = merge_patch(metadata, data.metadata)
    message = await _finish(
        uow.conn, row, content=content, status=MessageStatus.COMPLETED, metadata=metadata
    )
    assert message is not None
    # The row was read under a join on the live conversation, so its tenant is there.
    tenant = await tenant_of(uow.conn, conversation_id)
    await uow.record([processing_job(settings, tenant, conversation_id, message_id, dedupe=True)])
    outcome = StreamOutcome(message, changed=True)
    _announce(uow, store, outcome)
    return outcome


async def fail_message(
    uow: UnitOfWork,
    store: StreamStore,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    error: str,
) -> StreamOutcome:
    """Mark a streaming message failed, keeping its partial content and the error, and publish
    ``message.failed``."""
    row = await _load_state(uow.conn, conversation_id, message_id, lock=True)
    if row["status"] == MessageStatus.FAILED.value:
        return StreamOutcome(await _current(uow.conn, message_id), changed=False, error=error)
    if row["status"] not in _FAILABLE:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    partial = await store.seal(conversation_id, message_id)
    metadata = {**row["metadata"], "error": error}
    message = await _finish(
        uow.conn,
        row,
        content=row["content"] + partial.text,
        status=MessageStatus.FAILED,
        metadata=metadata,
    )
    assert message is not None
    outcome = StreamOutcome(message, changed=True, error=error)
    _announce(uow, store, outcome)
    return outcome


def _announce(uow: UnitOfWork, store: StreamStore, outcome: StreamOutcome) -> None:
    """After the commit: forget the stream's Redis state, publish the completion or failure."""
    message = outcome.message

    async def close_stream() -> None:
        try:
            await store.close(message.conversation_id, message.id)
        except (RedisError, OSError) as exc:
            # The sweep drops the leftover entry later (its conditional update matches nothing).
            log.warning(
                "stream state not cleared",
                extra={"message_id": str(message.id), "error": str(exc)},
            )

    uow.after_commit(close_stream)
    payload: dict[str, Any] = {"message": message.model_dump(mode="json")}
    if message.status is MessageStatus.COMPLETED:
        event_type = EventType.MESSAGE_COMPLETED
    else:
        event_type = EventType.MESSAGE_FAILED
        payload["error"] = outcome.error
    uow.publish(message.conversation_id, event_type, payload)


async def _current(conn: AsyncConnection, message_id: uuid.UUID) -> MessageOut:
    row = (
        (
            await conn.execute(
                select(*message_store.MESSAGE_COLUMNS).where(messages.c.id == message_id)
            )
        )
        .mappings()
        .one()
    )
    return message_store.to_out(row)


async def mark_incomplete(
    uow: UnitOfWork, store: StreamStore, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> MessageOut | None:
    """Mark an idle streaming message ``incomplete`` with its partial content and publish
    ``message.failed`` (None if it no longer streams: another replica won, or it completed
    meanwhile).

    Raises ``MessageNotFoundError`` when this database does not hold the message.
    """
    conn = uow.conn
    row = (
        (
            await conn.execute(
                select(*_STATE_COLUMNS).where(
                    messages.c.id == message_id, messages.c.conversation_id == conversation_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise MessageNotFoundError(f"message {message_id} not found")
    if row["status"] != MessageStatus.STREAMING.value:
        return None
    partial = await store.seal(conversation_id, message_id)
    message = await _finish(
        conn,
        row,
        content=row["content"] + partial.text,
        status=MessageStatus.INCOMPLETE,
        metadata=row["metadata"],
        only_if_streaming=True,
    )
    if message is not None:
        _announce(uow, store, StreamOutcome(message, changed=True, error=IDLE_ERROR))
    return message
