"""Conversation use cases: create, update, archive, delete (soft or purge).

Each states its side effects on the unit of work: lifecycle callbacks to the orchestrator
(``conversation.created``, ``.archived``, ``.deleted``) when a callback URL is configured, and
``conversation.updated`` on the conversation's event log for every change.
"""

import contextlib
import uuid
from typing import Any

from sqlalchemy import insert, select, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.errors import ConversationNotFoundError
from conversation_service.events.log import EventType
from conversation_service.models.conversation import (
    ConversationCreate,
    ConversationOut,
    ConversationStatus,
    ConversationUpdate,
)
from conversation_service.services import callbacks
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import (
    COLUMNS,
    get_conversation,
    owned_by,
    purge_conversation,
    to_out,
)
from conversation_service.services.search_text import index_values
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import new_id, utcnow
from conversation_service.utils.json_merge import merge_patch


async def record_lifecycle(
    uow: UnitOfWork,
    settings: ConversationSettings,
    principal: Principal,
    conversation: ConversationOut,
    event_type: str,
) -> None:
    """Record a lifecycle callback for the orchestrator, if one is configured."""
    if not settings.orchestrator_callback_url:
        return
    spec = await callbacks.record_callback(
        uow.conn,
        settings,
        tenant_id=principal.tenant_id,
        conversation_id=conversation.id,
        event_type=event_type,
        data=conversation.model_dump(mode="json"),
        url=settings.orchestrator_callback_url,
        priority=conversation.priority.value,
    )
    await uow.record([spec])


async def create_conversation(
    uow: UnitOfWork,
    principal: Principal,
    data: ConversationCreate,
    *,
    settings: ConversationSettings,
    agents: AgentDirectory | None = None,
    forked_from: dict[str, str] | None = None,
) -> ConversationOut:
    """Create a conversation owned by the caller; its agent is validated through the
    orchestrator first when a directory is configured. ``forked_from`` is set by forks."""
    if agents is not None:
        await agents.ensure_usable(principal.tenant_id, data.agent_id)
    now = utcnow()
    stmt = (
        insert(conversations)
        .values(
            id=new_id(),
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            agent_id=data.agent_id,
            agents=[data.agent_id],
            workflow_id=data.workflow_id,
            title=data.title,
            **index_values(data.title or "", None),
            status=ConversationStatus.ACTIVE.value,
            priority=data.priority.value,
            metadata=data.metadata,
            tags=list(dict.fromkeys(data.tags)),
            memory_policy=(
                data.memory_policy.model_dump(mode="json") if data.memory_policy else None
            ),
            forked_from=forked_from,
            last_seq=0,
            message_count=0,
            token_count=0,
            created_at=now,
            updated_at=now,
        )
        .returning(*COLUMNS)
    )
    created = to_out((await uow.conn.execute(stmt)).mappings().one())
    await record_lifecycle(uow, settings, principal, created, "conversation.created")
    return created


async def update_conversation(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    patch: ConversationUpdate,
) -> ConversationOut:
    """Apply a partial update (``metadata`` merged per RFC 7396, other fields replaced) and
    publish ``conversation.updated``."""
    current = await get_conversation(uow.conn, principal, conversation_id)
    values: dict[str, Any] = {}
    fields = patch.model_fields_set
    for name in ("title", "workflow_id"):
        if name in fields:
            values[name] = getattr(patch, name)
    if "title" in fields:
        values.update(index_values(patch.title or "", None))
    if "tags" in fields:
        values["tags"] = list(dict.fromkeys(patch.tags or []))
    if "priority" in fields and patch.priority is not None:
        values["priority"] = patch.priority.value
    if "status" in fields and patch.status is not None:
        values["status"] = patch.status.value
    if "memory_policy" in fields:
        values["memory_policy"] = (
            patch.memory_policy.model_dump(mode="json") if patch.memory_policy else None
        )
    if "metadata" in fields and patch.metadata is not None:
        values["metadata"] = merge_patch(current.metadata, patch.metadata)
    if not values:
        _publish_updated(uow, current)
        return current
    values["updated_at"] = utcnow()
    stmt = (
        update(conversations)
        .where(owned_by(principal, conversation_id))
        .values(**values)
        .returning(*COLUMNS)
    )
    updated = to_out((await uow.conn.execute(stmt)).mappings().one())
    _publish_updated(uow, updated)
    return updated


def _publish_updated(uow: UnitOfWork, conversation: ConversationOut) -> None:
    uow.publish(
        conversation.id,
        EventType.CONVERSATION_UPDATED,
        {"conversation": conversation.model_dump(mode="json")},
    )


async def archive_conversation(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    *,
    settings: ConversationSettings,
) -> ConversationOut:
    """Mark a conversation archived (read-only; PATCH status=active reopens it)."""
    archived = await update_conversation(
        uow, principal, conversation_id, ConversationUpdate(status=ConversationStatus.ARCHIVED)
    )
    await record_lifecycle(uow, settings, principal, archived, "conversation.archived")
    return archived


async def delete_conversation(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    *,
    purge: bool,
    settings: ConversationSettings,
) -> None:
    """Soft-delete (hidden, recoverable by an operator) or purge (erased with all its rows)."""
    conn = uow.conn
    if settings.orchestrator_callback_url:
        with contextlib.suppress(ConversationNotFoundError):
            current = await get_conversation(conn, principal, conversation_id)
            await record_lifecycle(uow, settings, principal, current, "conversation.deleted")
    if purge:
        found = (
            await conn.execute(
                select(conversations.c.id).where(
                    conversations.c.id == conversation_id,
                    conversations.c.tenant_id == principal.tenant_id,
                    conversations.c.user_id == principal.user_id,
                )
            )
        ).one_or_none()
        if found is None:
            raise ConversationNotFoundError(f"conversation {conversation_id} not found")
        await purge_conversation(conn, conversation_id)
        return
    now = utcnow()
    result = await conn.execute(
        update(conversations)
        .where(owned_by(principal, conversation_id))
        .values(deleted_at=now, updated_at=now)
        .returning(conversations.c.id)
    )
    if result.one_or_none() is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
