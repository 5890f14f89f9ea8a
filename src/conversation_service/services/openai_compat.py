"""The OpenAI Conversations API on top of the conversation and message services.

One store: a conversation is the same row whichever API touched it, and ids map both ways
without a lookup table: conversation ``<uuid>`` is ``conv_<32 hex>``, message ``<uuid>`` is the
item ``msg_<32 hex>``. Anything else is an id that cannot exist here (404), or a bad ``after``
cursor (400).

Mapping decisions:

* Roles: ``developer`` is stored as ``system`` with ``metadata.openai_role = "developer"`` so it
  reads back as ``developer``; an assistant's ``phase`` goes to ``metadata.openai_phase``.
* Content: the item's parts are stored verbatim in ``content_parts`` and their text, joined by
  newlines, in ``content`` (what token counts, memory windows and summaries read). A message
  written through ``/api/v1`` or by the orchestrator reads back as one text part.
* Status: completed ↔ completed, in_progress ↔ streaming (pending reads as in_progress too),
  incomplete ↔ incomplete (failed and cancelled read as incomplete).
* Metadata is the conversation's metadata; an update replaces it as OpenAI does (null clears).
* ``include``: ``message.input_image.image_url`` and ``message.output_text.logprobs`` are kept
  but returned only when asked for, as OpenAI does; the other values name item types that are
  never stored, so they change nothing.
* Deleting a conversation soft-deletes it (it disappears from both APIs).
* Items of every type the SDK defines are stored; the ones that are not ``message`` are messages
  of the native model too (tool calls as assistant ``tool_calls``, outputs as ``tool`` messages):
  see ``services.openai_tool_items``. A ``function_call_output`` (or ``custom_tool_call_output``)
  must answer a call already in the conversation (or earlier in the same request): else 400.
* Ids the client gives items are kept, and ``get``/``delete``/``after`` accept them.
* Create parameters other than ``items`` and ``metadata`` (``safety_identifier``…) are ignored.
* ``GET /conversations`` (Azure's extension) lists the key's conversations, keyed by id
  (UUIDv7, so creation order).
* Items are appended by the same use case as every message (``services.messages.append``):
  processed by the same jobs, published as the same realtime events, and a ``user`` item sends
  the orchestrator the same ``message.created`` callback a user message posted to ``/api/v1``
  sends (when a callback URL is configured).
* New conversations belong to ``settings.openai_default_agent_id`` (OpenAI has no agents).
"""

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table, messages_table
from conversation_service.errors import (
    ConversationNotFoundError,
    MessageNotFoundError,
)
from conversation_service.models.conversation import (
    ConversationCreate,
    ConversationOut,
    ConversationUpdate,
)
from conversation_service.models.message import MessageOut
from conversation_service.models.openai_compat import (
    ConversationDeletedObject,
    ConversationObject,
    ConversationUpdateIn,
    MessageItemOut,
)
from conversation_service.models.openai_items import (
    ConversationCreateIn,
    ConversationListOut,
    ItemIn,
    ItemListOut,
    OpaqueItemOut,
    ToolItemIn,
)
from conversation_service.services import (
    conversation_manager,
    conversations,
    history,
    message_store,
    messages,
    openai_tool_items,
)
from conversation_service.services.auth import Principal
from conversation_service.services.messages import AppendResult
from conversation_service.services.openai_items import (
    CONVERSATION_PREFIX,
    ITEM_PREFIX,
    InvalidParameterError,
    conversation_not_found,
    conversation_public_id,
    draft_from_item,
    echo,
    item_list,
    item_not_found,
    parse_conversation_id,
    parse_public_id,
    render_conversation,
    render_item,
)
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.cursors import CursorCodec


async def _append_items(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    items: Sequence[ItemIn],
    settings: ConversationSettings,
    *,
    param: str = "items",
) -> list[AppendResult]:
    appended = []
    for index, item in enumerate(items):
        if isinstance(item, ToolItemIn):
            await _check_answers_a_call(uow.conn, principal, conversation_id, item, index, param)
            draft = openai_tool_items.draft_from_tool_item(item)
        else:
            draft = draft_from_item(item)
        appended.append(
            await messages.append(uow, principal, conversation_id, draft, settings=settings)
        )
    return appended


async def _check_answers_a_call(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    item: ToolItemIn,
    index: int,
    param: str,
) -> None:
    """An output must answer a call already stored (earlier items of the request included)."""
    call_type = openai_tool_items.ANSWERS.get(item.type)
    call_id = getattr(item, "call_id", None)
    if call_type is None or not isinstance(call_id, str):
        return
    if await openai_tool_items.has_call(conn, principal, conversation_id, call_id):
        return
    await conversation_manager.require_owned(conn, principal, conversation_id)
    raise InvalidParameterError(
        f"No {call_type} found for {item.type} with call_id '{echo(call_id)}' in this "
        f"conversation: add the {call_type} item first.",
        param=f"{param}[{index}].call_id",
    )


async def create_conversation(
    uow: UnitOfWork,
    principal: Principal,
    body: ConversationCreateIn,
    *,
    settings: ConversationSettings,
) -> ConversationObject:
    """Create a conversation of the configured agent with its initial items, in one transaction."""
    created = await conversations.create_conversation(
        uow,
        principal,
        ConversationCreate(agent_id=settings.openai_default_agent_id, metadata=body.metadata or {}),
        settings=settings,
    )
    await _append_items(uow, principal, created.id, body.items or (), settings)
    return render_conversation(created)


async def get_conversation(
    conn: AsyncConnection, principal: Principal, conversation_id: str
) -> ConversationObject:
    """One of the caller's conversations."""
    return render_conversation(await _load(conn, principal, conversation_id))


async def _load(
    conn: AsyncConnection, principal: Principal, conversation_id: str
) -> ConversationOut:
    try:
        return await conversation_manager.get_conversation(
            conn, principal, parse_conversation_id(conversation_id)
        )
    except ConversationNotFoundError as exc:
        raise conversation_not_found(conversation_id) from exc


async def update_conversation(
    uow: UnitOfWork, principal: Principal, conversation_id: str, body: ConversationUpdateIn
) -> ConversationObject:
    """Replace the conversation's metadata."""
    current = await _load(uow.conn, principal, conversation_id)
    replacement: dict[str, Any] = dict(body.metadata or {})
    # A merge patch that removes every key not in the replacement. It is built from metadata
    # already validated (old and new), so it skips the patch model's own size checks, which a
    # patch listing removals as well as additions could exceed without the result doing so.
    patch = {key: None for key in current.metadata if key not in replacement} | replacement
    updated = await conversations.update_conversation(
        uow, principal, current.id, ConversationUpdate.model_construct(metadata=patch)
    )
    return render_conversation(updated)


async def delete_conversation(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: str,
    *,
    settings: ConversationSettings,
) -> ConversationDeletedObject:
    """Delete a conversation (soft: hidden from both APIs at once)."""
    current = await _load(uow.conn, principal, conversation_id)
    await conversations.delete_conversation(
        uow, principal, current.id, purge=False, settings=settings
    )
    return ConversationDeletedObject(id=conversation_public_id(current.id))


async def add_items(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: str,
    items: Sequence[ItemIn],
    include: frozenset[str],
    *,
    settings: ConversationSettings,
) -> ItemListOut:
    """Append items, in order, after the conversation's last one."""
    parsed = parse_conversation_id(conversation_id)
    try:
        appended = await _append_items(uow, principal, parsed, items, settings)
    except ConversationNotFoundError as exc:
        raise conversation_not_found(conversation_id) from exc
    added = [render_item(MessageOut.model_validate(result.message), include) for result in appended]
    return item_list(added, has_more=False)


async def list_items(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: str,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
    include: frozenset[str],
    codec: CursorCodec,
) -> ItemListOut:
    """A page of items; ``after`` is the last item id of the previous page."""
    parsed = parse_conversation_id(conversation_id)
    after_seq = before_seq = None
    if after is not None:
        seq = await _item_seq(conn, principal, conversation_id, after)
        if order == "asc":
            after_seq = seq
        else:
            before_seq = seq
    try:
        page = await history.list_messages(
            conn,
            principal,
            parsed,
            history.PageRequest(after_seq, before_seq, order, limit),
            codec=codec,
        )
    except ConversationNotFoundError as exc:
        raise conversation_not_found(conversation_id) from exc
    return item_list(
        [render_item(MessageOut.model_validate(m), include) for m in page["data"]],
        has_more=page["has_more"],
    )


async def _item_seq(
    conn: AsyncConnection, principal: Principal, conversation_id: str, item_id: str
) -> int:
    """The seq of an item of this conversation: one primary-key probe.

    A deleted item still has its seq (its row is a tombstone), so a client that deletes items
    while paging keeps its place.
    """
    parsed_item = await _message_of(
        conn, principal, parse_conversation_id(conversation_id), item_id
    )
    seq = None
    if parsed_item is not None:
        seq = (
            await conn.execute(
                select(messages_table.c.seq).where(
                    messages_table.c.id == parsed_item,
                    messages_table.c.conversation_id == parse_conversation_id(conversation_id),
                    messages_table.c.tenant_id == principal.tenant_id,
                )
            )
        ).scalar_one_or_none()
    if seq is None:
        await _load(conn, principal, conversation_id)  # an unknown conversation is a 404 first
        raise InvalidParameterError(
            f"Invalid 'after': no item '{echo(item_id)}' in this conversation.", param="after"
        )
    return int(seq)


async def get_item(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: str,
    item_id: str,
    include: frozenset[str],
) -> MessageItemOut | OpaqueItemOut:
    """One item of one of the caller's conversations."""
    parsed = parse_conversation_id(conversation_id)
    parsed_item = await _message_of(conn, principal, parsed, item_id)
    try:
        if parsed_item is None:
            await conversation_manager.require_owned(conn, principal, parsed)
            raise item_not_found(item_id)
        message = message_store.to_out(
            await message_store.visible_row(conn, principal, parsed, parsed_item)
        )
    except ConversationNotFoundError as exc:
        raise conversation_not_found(conversation_id) from exc
    except MessageNotFoundError as exc:
        raise item_not_found(item_id) from exc
    return render_item(message, include)


async def delete_item(
    uow: UnitOfWork, principal: Principal, conversation_id: str, item_id: str
) -> ConversationObject:
    """Delete an item; answers with the conversation, as OpenAI does."""
    parsed = parse_conversation_id(conversation_id)
    parsed_item = await _message_of(uow.conn, principal, parsed, item_id)
    try:
        if parsed_item is None:
            await conversation_manager.require_owned(uow.conn, principal, parsed)
            raise item_not_found(item_id)
        await messages.delete_message(uow, principal, parsed, parsed_item)
        conversation = await conversation_manager.get_conversation(uow.conn, principal, parsed)
    except ConversationNotFoundError as exc:
        raise conversation_not_found(conversation_id) from exc
    except MessageNotFoundError as exc:
        raise item_not_found(item_id) from exc
    return render_conversation(conversation)


async def _message_of(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, item_id: str
) -> uuid.UUID | None:
    """The message behind an item id: one the client gave, else ``msg_<hex>``."""
    found = await openai_tool_items.find_by_client_id(conn, principal, conversation_id, item_id)
    return found if found is not None else parse_public_id(item_id, ITEM_PREFIX)


async def list_conversations(
    conn: AsyncConnection,
    principal: Principal,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> ConversationListOut:
    """A page of the caller's conversations; ``after`` is the last id of the previous page."""
    table = conversations_table
    where: list[ColumnElement[bool]] = [
        table.c.tenant_id == principal.tenant_id,
        table.c.user_id == principal.user_id,
        table.c.deleted_at.is_(None),
    ]
    if after is not None:
        cursor = parse_public_id(after, CONVERSATION_PREFIX)
        if cursor is None:
            raise InvalidParameterError(
                f"Invalid 'after': '{echo(after)}' is not a conversation id.", param="after"
            )
        where.append(table.c.id > cursor if order == "asc" else table.c.id < cursor)
    rows = (
        (
            await conn.execute(
                select(table.c.id, table.c.created_at, table.c.metadata)
                .where(*where)
                .order_by(table.c.id.asc() if order == "asc" else table.c.id.desc())
                .limit(limit + 1)
            )
        )
        .mappings()
        .all()
    )
    data = [
        ConversationObject(
            id=conversation_public_id(uuid.UUID(str(row["id"]))),
            created_at=int(row["created_at"].timestamp()),
            metadata=row["metadata"] or {},
        )
        for row in rows[:limit]
    ]
    return ConversationListOut(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )
