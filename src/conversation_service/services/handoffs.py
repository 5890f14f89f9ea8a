"""Handoffs: another agent takes a conversation over.

``hand_off`` validates the target through the orchestrator (as conversation creation does),
then, under the conversation's row lock: refuses with 409 when ``from_agent_id`` no longer holds
it (so of two racing handoffs from one agent exactly one wins; without it handoffs apply one
after the other), sets the current ``agent_id`` and appends it to ``agents``, records the handoff
in history as a ``system`` message with ``metadata.type = "handoff"`` (through the one append),
moves tracked context's ``active_agent``, publishes ``conversation.agent_changed`` and records the
signed ``conversation.agent_changed`` callback. With an ``Idempotency-Key`` a retry returns the
first response and changes nothing.
"""

import uuid
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.errors import ConflictError, ConversationNotFoundError
from conversation_service.events.log import EventType
from conversation_service.models.handoff import AgentChangedData, HandoffIn
from conversation_service.models.message import Role
from conversation_service.services import callbacks, context_tracker, idempotency
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import (
    get_conversation_for_service,
    tenant_of,
)
from conversation_service.services.message_store import MessageDraft
from conversation_service.services.messages import append
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import utcnow

# The user an orchestrator's Idempotency-Key is scoped to (never a real user id: ``~``).
ORCHESTRATOR: Final = "~orchestrator"


class AgentMismatchError(ConflictError):
    """``from_agent_id`` no longer holds the conversation."""

    code = "agent-mismatch"
    title = "Another agent holds the conversation"


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """The ``HandoffOut`` body (JSON-ready); ``replayed`` when an Idempotency-Key repeated."""

    body: dict[str, Any]
    replayed: bool


async def hand_off(
    uow: UnitOfWork,
    conversation_id: uuid.UUID,
    data: HandoffIn,
    *,
    settings: ConversationSettings,
    agents: AgentDirectory | None,
    idempotency_key: str | None = None,
) -> HandoffResult:
    """Hand the conversation to ``data.to_agent_id`` with every side effect it implies."""
    conn = uow.conn
    tenant = await tenant_of(conn, conversation_id)
    scope = None
    if idempotency_key is not None:
        request = {"op": "handoff", "conversation_id": str(conversation_id)}
        scope = idempotency.IdempotencyScope.build(
            Principal(tenant_id=tenant, user_id=ORCHESTRATOR),
            idempotency_key,
            {**request, **data.model_dump(mode="json")},
        )
        replay = await idempotency.find_replay(conn, scope)
        if replay is not None:
            return HandoffResult(replay, replayed=True)
    if agents is not None:
        await agents.ensure_usable(tenant, data.to_agent_id)
    c = conversations.c
    held = (
        await conn.execute(
            select(c.tenant_id, c.user_id, c.agent_id, c.agents)
            .where(c.id == conversation_id, c.deleted_at.is_(None))
            .with_for_update()
        )
    ).one_or_none()
    if held is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    if data.from_agent_id is not None and data.from_agent_id != held.agent_id:
        raise AgentMismatchError(
            f"{held.agent_id} holds the conversation, not {data.from_agent_id}",
            extra={"current_agent_id": held.agent_id},
        )
    previous: str = held.agent_id
    took_part = list(dict.fromkeys([*(held.agents or [previous]), data.to_agent_id]))
    await conn.execute(
        update(conversations)
        .where(c.id == conversation_id)
        .values(agent_id=data.to_agent_id, agents=took_part, updated_at=utcnow())
    )
    principal = Principal(tenant_id=held.tenant_id, user_id=held.user_id)
    line = await append(
        uow, principal, conversation_id, _handoff_line(previous, data), settings=settings
    )
    await context_tracker.patch_tracked_context(
        uow,
        conversation_id,
        {"active_agent": data.to_agent_id},
        if_match=None,
        changed_by="handoff",
        settings=settings,
    )
    conversation = await get_conversation_for_service(conn, conversation_id)
    changed = AgentChangedData(
        conversation_id=str(conversation_id),
        from_agent_id=previous,
        to_agent_id=data.to_agent_id,
        agents=took_part,
        reason=data.reason,
        context=data.context,
        message_id=str(line.message["id"]),
    ).model_dump(mode="json")
    uow.publish(conversation_id, EventType.CONVERSATION_AGENT_CHANGED, changed)
    if settings.orchestrator_callback_url:
        spec = await callbacks.record_callback(
            conn,
            settings,
            tenant_id=held.tenant_id,
            conversation_id=conversation_id,
            event_type=EventType.CONVERSATION_AGENT_CHANGED.value,
            data=changed,
            url=settings.orchestrator_callback_url,
            priority=conversation.priority.value,
        )
        await uow.record([spec])
    body = {
        "conversation": conversation.model_dump(mode="json"),
        "message": line.message,
        "from_agent_id": previous,
        "to_agent_id": data.to_agent_id,
    }
    if scope is not None:
        await idempotency.record_response(
            conn, scope, conversation_id=conversation_id, status_code=200, response=body
        )
    return HandoffResult(body, replayed=False)


def _handoff_line(previous: str, data: HandoffIn) -> MessageDraft:
    text = f"Conversation handed off from {previous} to {data.to_agent_id}"
    metadata: dict[str, Any] = {
        "type": "handoff",
        "from_agent_id": previous,
        "to_agent_id": data.to_agent_id,
    }
    if data.reason is not None:
        text += f": {data.reason}"
        metadata["reason"] = data.reason
    if data.context is not None:
        metadata["context"] = data.context
    return MessageDraft(role=Role.SYSTEM, content=text, metadata=metadata)
