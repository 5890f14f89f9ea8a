"""Message use cases: append (whoever writes), read, update metadata, delete.

``append`` is the one append of the service: the user API, the orchestrator's agent messages and
the OpenAI-compatible items all go through it, so a message gets the same side effects whichever
transport wrote it:
- a final message (``completed``) gets its processing job (language, sentiment, summary check);
  a user's is urgent, as a person is waiting;
- a user message counts as session activity (``session.started`` when it opens one) and, with a
  callback URL configured, sends the orchestrator ``message.created``: that callback is what runs
  the agent, so only people's messages send it;
- every message publishes ``message.created`` to the conversation's event log.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import feedback_table as feedback
from conversation_service.db.tables import messages_table as messages
from conversation_service.events.log import EventType
from conversation_service.models.message import MessageCreate, MessageStatus, MessageUpdate, Role
from conversation_service.services import callbacks
from conversation_service.services.auth import Principal
from conversation_service.services.feedback import own_feedback
from conversation_service.services.message_store import (
    MESSAGE_COLUMNS,
    MessageDraft,
    insert_message,
    is_always_included,
    message_json,
    user_draft,
    visible_row,
)
from conversation_service.services.outbox import JobKind, JobSpec, queue_for
from conversation_service.services.search_text import EMPTY_INDEX
from conversation_service.services.sessions import SessionActivity, get_session, touch_session
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import utcnow
from conversation_service.utils.json_merge import merge_patch


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The appended message (JSON-ready), or the stored one when an Idempotency-Key replayed."""

    message: dict[str, Any]
    replayed: bool


async def append_user_message(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    data: MessageCreate,
    *,
    settings: ConversationSettings,
    idempotency_key: str | None = None,
) -> AppendResult:
    """Append a user message from the public API; a repeated Idempotency-Key returns the first
    response and records nothing."""
    fingerprint = {"conversation_id": str(conversation_id), **data.model_dump(mode="json")}
    if "parent_id" in data.model_fields_set:
        # ``"parent_id": null`` (a new root) is another request than leaving it out.
        fingerprint["parent_id_given"] = True
    return await append(
        uow,
        principal,
        conversation_id,
        user_draft(data),
        settings=settings,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )


async def append(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    draft: MessageDraft,
    *,
    settings: ConversationSettings,
    idempotency_key: str | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> AppendResult:
    """Append a message to the principal's conversation with every side effect it implies."""
    inserted = await insert_message(
        uow.conn,
        principal,
        conversation_id,
        draft,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if inserted.replayed:
        return AppendResult(inserted.message, replayed=True)
    message = inserted.message
    message_id: uuid.UUID = message["id"]
    specs: list[JobSpec] = []
    if draft.status is MessageStatus.COMPLETED:
        specs.append(
            processing_job(
                settings,
                principal.tenant_id,
                conversation_id,
                message_id,
                urgent=draft.role is Role.USER,
            )
        )
    if draft.role is Role.USER:
        session_id, started = await touch_session(
            uow.conn, principal, conversation_id, activity(draft.metadata)
        )
        if started:
            session = await get_session(uow.conn, session_id)
            uow.publish(
                conversation_id,
                EventType.SESSION_STARTED,
                {"session": session.model_dump(mode="json")},
            )
        if settings.orchestrator_callback_url:
            specs.append(
                await callbacks.record_callback(
                    uow.conn,
                    settings,
                    tenant_id=principal.tenant_id,
                    conversation_id=conversation_id,
                    event_type="message.created",
                    data={"conversation_id": str(conversation_id), "message": message},
                    url=settings.orchestrator_callback_url,
                    urgent=True,
                )
            )
    await uow.record(specs)  # every outbox row of the append in one insert
    uow.publish(conversation_id, EventType.MESSAGE_CREATED, {"message": message})
    return AppendResult(message, replayed=False)


def processing_job(
    settings: ConversationSettings,
    tenant_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    urgent: bool = False,
    dedupe: bool = False,
) -> JobSpec:
    """The processing job of a message whose content is final (language, tokens, sentiment,
    the summary check). ``dedupe`` makes it one per message, ever, for paths that can repeat."""
    return JobSpec(
        kind=JobKind.PROCESS_MESSAGE,
        queue=queue_for(JobKind.PROCESS_MESSAGE, urgent=urgent),
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        message_id=message_id,
        max_attempts=settings.job_max_attempts,
        dedupe_key=f"process:{message_id}" if dedupe else None,
    )


def activity(metadata: dict[str, Any]) -> SessionActivity:
    """Channel, client and locale of a message's session, from its metadata."""

    def text(key: str, limit: int) -> str | None:
        value = metadata.get(key)
        return value[:limit] if isinstance(value, str) and value else None

    return SessionActivity(
        channel=text("channel", 64), client=text("client", 256), locale=text("locale", 35)
    )


async def get_message(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> dict[str, Any]:
    """One visible message of one of the caller's conversations, with the caller's feedback
    (JSON-ready)."""
    message = message_json(await visible_row(uow.conn, principal, conversation_id, message_id))
    message["feedback"] = await own_feedback(uow.conn, principal, message_id)
    return message


async def update_message_metadata(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    patch: MessageUpdate,
) -> dict[str, Any]:
    """Merge-patch a message's metadata (RFC 7396) and publish ``message.updated``."""
    current = await visible_row(uow.conn, principal, conversation_id, message_id)
    metadata = merge_patch(current["metadata"], patch.metadata)
    stmt = (
        update(messages)
        .where(messages.c.id == message_id, messages.c.conversation_id == conversation_id)
        .values(
            metadata=metadata,
            always_include=is_always_included(current["role"], metadata),
            updated_at=utcnow(),
        )
        .returning(*MESSAGE_COLUMNS)
    )
    message = message_json((await uow.conn.execute(stmt)).mappings().one())
    uow.publish(conversation_id, EventType.MESSAGE_UPDATED, {"message": message})
    return message


async def delete_message(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """Delete a message: its content is erased and it disappears from every read.

    The row stays as a tombstone so ``seq`` remains gap-free for clients that resume by seq.
    Publishes ``message.deleted``.
    """
    current = await visible_row(uow.conn, principal, conversation_id, message_id)
    now = utcnow()
    await uow.conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.conversation_id == conversation_id)
        .values(
            content="",
            content_parts=None,
            metadata={},
            always_include=False,
            **EMPTY_INDEX,
            deleted_at=now,
            updated_at=now,
        )
    )
    # Feedback rated what is now erased: it goes too (and leaves the agent's aggregates).
    await uow.conn.execute(delete(feedback).where(feedback.c.message_id == message_id))
    await uow.conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(
            message_count=conversations.c.message_count - 1,
            token_count=conversations.c.token_count - (current["token_count"] or 0),
            updated_at=now,
        )
    )
    uow.publish(conversation_id, EventType.MESSAGE_DELETED, {"message_id": str(message_id)})
