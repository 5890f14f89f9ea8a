"""Import (``POST /api/v1/conversations/import``): an export's NDJSON creates the conversations
anew for the caller, with new ids and ``metadata.imported_from = {"conversation_id": …}``.

Each ``conversation`` line goes through the create use case (its agent is validated, the
``conversation.created`` callback is recorded); each ``message`` line after it is inserted in
order with its role, author, content and status, and gets its processing job (language, search
stems, sentiment). Imported messages are history, not turns: they send no ``message.created``
callback (which would run the agent) and open no session. ``session``, ``summary``,
``tracked_context`` and ``feedback`` lines are accepted and not imported (they describe the
source's activity; summaries are recomputed by the worker).

Idempotent per caller and source conversation id: a source the caller already imported (found by
``metadata.imported_from.conversation_id`` among the caller's conversations, deleted ones too) is
answered with its existing id and creates nothing. The whole body is one transaction: a line that
is not valid refuses the request (422, naming the line) and nothing is created.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.errors import ValidationError
from conversation_service.models.conversation import ConversationCreate
from conversation_service.models.imports import (
    ImportedConversation,
    ImportedMessage,
    exported_content_parts,
)
from conversation_service.models.message import MessageStatus
from conversation_service.services import conversations as conversation_cases
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import Principal
from conversation_service.services.message_store import MessageDraft, insert_message
from conversation_service.services.messages import processing_job
from conversation_service.services.unit_of_work import UnitOfWork

KNOWN_TYPES = frozenset(
    {"conversation", "message", "session", "summary", "tracked_context", "feedback"}
)
# A reply that was still streaming when exported cannot resume here.
_UNFINISHED = {MessageStatus.PENDING, MessageStatus.STREAMING}


@dataclass
class _Source:
    conversation: ImportedConversation
    messages: list[ImportedMessage] = field(default_factory=list)


def parse(body: bytes) -> list[_Source]:
    """The conversations of an NDJSON body with their messages, or a 422 naming the line."""
    sources: list[_Source] = []
    for number, raw in enumerate(body.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            if not isinstance(line, dict) or line.get("type") not in KNOWN_TYPES:
                raise ValueError("each line is {type, data} with a type of the export format")
            kind, data = line["type"], line.get("data")
            if kind == "conversation":
                sources.append(_Source(ImportedConversation.model_validate(data)))
            elif kind == "message":
                if not sources:
                    raise ValueError("a message line comes after its conversation's line")
                sources[-1].messages.append(ImportedMessage.model_validate(data))
        except (orjson.JSONDecodeError, ValueError, PydanticValidationError) as exc:
            raise ValidationError(f"line {number}: {_reason(exc)}") from None
    if not sources:
        raise ValidationError("the body holds no conversation line")
    return sources


def _reason(exc: Exception) -> str:
    if isinstance(exc, PydanticValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)


async def import_conversations(
    uow: UnitOfWork,
    principal: Principal,
    body: bytes,
    *,
    settings: ConversationSettings,
    agents: AgentDirectory | None = None,
) -> list[dict[str, Any]]:
    """Create the body's conversations for the principal; already imported ones are skipped."""
    results: list[dict[str, Any]] = []
    for source in parse(body):
        src = source.conversation
        existing = await _imported(uow, principal, src.id)
        if existing is not None:
            results.append(_result(src.id, existing[0], created=False, count=existing[1]))
            continue
        metadata = {**src.metadata, "imported_from": {"conversation_id": str(src.id)}}
        try:
            create = ConversationCreate(
                agent_id=src.agent_id,
                title=src.title,
                workflow_id=src.workflow_id,
                metadata=metadata,
                tags=src.tags,
                priority=src.priority,
                memory_policy=src.memory_policy,
            )
        except PydanticValidationError as exc:
            raise ValidationError(f"conversation {src.id}: {_reason(exc)}") from None
        created = await conversation_cases.create_conversation(
            uow, principal, create, settings=settings, agents=agents
        )
        jobs = []
        for message in source.messages:
            draft = MessageDraft(
                role=message.role,
                content=message.content,
                content_parts=exported_content_parts(message.content_parts),
                metadata=message.metadata,
                status=MessageStatus.INCOMPLETE
                if message.status in _UNFINISHED
                else message.status,
                agent_id=message.agent_id,
            )
            inserted = await insert_message(uow.conn, principal, created.id, draft)
            jobs.append(
                processing_job(settings, principal.tenant_id, created.id, inserted.message["id"])
            )
        await uow.record(jobs)
        results.append(_result(src.id, created.id, created=True, count=len(source.messages)))
    return results


def _result(
    source_id: uuid.UUID, conversation_id: uuid.UUID, *, created: bool, count: int
) -> dict[str, Any]:
    return {
        "source_conversation_id": source_id,
        "conversation_id": conversation_id,
        "created": created,
        "message_count": count,
    }


async def _imported(
    uow: UnitOfWork, principal: Principal, source_id: uuid.UUID
) -> tuple[uuid.UUID, int] | None:
    """The caller's conversation imported from ``source_id``, if any (and its message count)."""
    origin = conversations.c.metadata[("imported_from", "conversation_id")].as_string()
    row = (
        await uow.conn.execute(
            select(conversations.c.id, conversations.c.message_count)
            .where(
                conversations.c.tenant_id == principal.tenant_id,
                conversations.c.user_id == principal.user_id,
                origin == str(source_id),
            )
            .order_by(conversations.c.id)
            .limit(1)
        )
    ).first()
    return (row.id, row.message_count) if row is not None else None
