"""Branch use cases: select the active branch, list siblings, ask for a regenerated reply.

Edit is no use case of its own: it is ``services.messages.append`` with the edited message's
parent as ``parent_id``. Forks are ``services.forks``.
"""

import uuid
from typing import Any

from sqlalchemy import select, update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ConversationNotWritableError, ValidationError
from conversation_service.events.log import EventType
from conversation_service.models.conversation import ConversationOut, ConversationStatus
from conversation_service.models.message import Role
from conversation_service.services import callbacks, message_tree
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import (
    COLUMNS,
    get_conversation,
    owned_by,
    require_owned,
    to_out,
)
from conversation_service.services.message_insert import unknown_reference
from conversation_service.services.message_store import MESSAGE_COLUMNS, message_json, visible_row
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import utcnow

REGENERATE_REQUESTED = "message.regenerate_requested"


async def set_active_leaf(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> ConversationOut:
    """Show the branch through ``message_id``: the active leaf becomes the newest message under
    it. Publishes ``conversation.branch_changed`` when the leaf moves.

    Taken under the conversation's row lock, so it orders with appends: an append that commits
    first is seen (and may be the newest under the message), one that commits after moves the
    leaf again, as every append does.
    """
    locked = (
        await uow.conn.execute(
            select(conversations.c.active_leaf_id)
            .where(owned_by(principal, conversation_id))
            .with_for_update()
        )
    ).one_or_none()
    if locked is None:
        await require_owned(uow.conn, principal, conversation_id)
    live = (
        await uow.conn.execute(
            select(messages.c.id).where(
                messages.c.id == message_id,
                messages.c.conversation_id == conversation_id,
                messages.c.deleted_at.is_(None),
            )
        )
    ).one_or_none()
    if live is None:
        raise unknown_reference("message_id", message_id)
    leaf, run = await message_tree.newest_under(uow.conn, conversation_id, message_id)
    assert locked is not None  # require_owned raised otherwise
    if leaf == locked.active_leaf_id:
        return await get_conversation(uow.conn, principal, conversation_id)
    row = (
        await uow.conn.execute(
            update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(active_leaf_id=leaf, active_branch_id=run, updated_at=utcnow())
            .returning(*COLUMNS)
        )
    ).one()
    uow.publish(
        conversation_id,
        EventType.CONVERSATION_BRANCH_CHANGED,
        {
            "conversation_id": str(conversation_id),
            "active_leaf_id": str(leaf),
            "message_id": str(message_id),
        },
    )
    return to_out(row._mapping)


async def list_siblings(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> dict[str, Any]:
    """Every live child of the message's parent, the message included, in creation order (the
    ``Page`` envelope, in one page)."""
    row = await visible_row(uow.conn, principal, conversation_id, message_id)
    parent = row["parent_id"]
    ids = (await message_tree.children_of(uow.conn, conversation_id, {parent}))[parent]
    rows = {
        r["id"]: r
        for r in (
            await uow.conn.execute(
                select(*MESSAGE_COLUMNS).where(
                    messages.c.conversation_id == conversation_id, messages.c.id.in_(ids)
                )
            )
        ).mappings()
    }
    items = [message_json(rows[i]) for i in ids if i in rows]
    for index, item in enumerate(items, start=1):
        item["siblings"] = {"index": index, "count": len(items)}
    return {"data": items, "has_more": False, "next_cursor": None}


async def request_regeneration(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    settings: ConversationSettings,
) -> dict[str, Any]:
    """Ask the orchestrator for a new reply to a user message (named, or the one a named reply
    answers): a ``message.regenerate_requested`` callback at high priority. Creates no message;
    the orchestrator streams the new reply as a sibling through the internal API."""
    named = await visible_row(uow.conn, principal, conversation_id, message_id)
    target = named
    if named["role"] == Role.ASSISTANT.value and named["parent_id"] is not None:
        target = await visible_row(uow.conn, principal, conversation_id, named["parent_id"])
    if target["role"] != Role.USER.value:
        raise ValidationError(
            "regenerate takes a user message or an assistant reply to one",
            extra={"errors": [{"loc": ["path", "message_id"], "msg": "not regenerable"}]},
        )
    status = await uow.conn.scalar(
        select(conversations.c.status).where(conversations.c.id == conversation_id)
    )
    if status != ConversationStatus.ACTIVE.value:
        raise ConversationNotWritableError(
            f"conversation is {status}; set its status to active to add messages"
        )
    user_message = message_json(target)
    if settings.orchestrator_callback_url:
        spec = await callbacks.record_callback(
            uow.conn,
            settings,
            tenant_id=principal.tenant_id,
            conversation_id=conversation_id,
            event_type=REGENERATE_REQUESTED,
            data={
                "conversation_id": str(conversation_id),
                "message_id": str(target["id"]),
                "message": user_message,
            },
            url=settings.orchestrator_callback_url,
            urgent=True,
        )
        await uow.record([spec])
    return {"conversation_id": conversation_id, "message_id": target["id"], "status": "requested"}
