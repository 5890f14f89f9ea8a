"""The OpenAI shapes of our objects: public ids (``conv_…``, ``msg_…``), items, conversations.

A message item's content parts are stored as the client sent them and rendered back verbatim;
a message written through another API renders as one text part. An item keeps the id the client
gave it (``metadata.openai_item_id``); an item sent without one reads back as ``msg_<32 hex>``.
Items of other types are drafted and rendered by ``services.openai_tool_items``.

Who spoke (decision): an item's author is its message's ``agent_id`` and is returned as
``metadata: {"agent_id": …}`` (null for a user's items) only with ``include=item.metadata``.
OpenAI's items have no ``metadata``, and the Agents SDK sends the items it lists back to the model
as they are, where an unknown field is refused; asked for, it is there on every item type. Items
are written with a user's API key, which cannot speak for an agent, so an item names no author:
an assistant or tool item records the conversation's current agent, as any append does.
"""

import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from conversation_service.errors import (
    BadRequestError,
    ConversationNotFoundError,
    MessageNotFoundError,
)
from conversation_service.models.conversation import ConversationOut
from conversation_service.models.message import MessageOut, MessageStatus, Role
from conversation_service.models.openai_compat import (
    INPUT_PART_TYPES,
    OUTPUT_PART_TYPES,
    ConversationObject,
    ItemMetadata,
    MessageItemIn,
    MessageItemOut,
)
from conversation_service.models.openai_items import ItemListOut, OpaqueItemOut
from conversation_service.services.message_store import MessageDraft
from conversation_service.services.openai_tool_items import (
    ITEM_ID_KEY,
    is_tool_item,
    render_tool_item,
)

CONVERSATION_PREFIX = "conv_"
ITEM_PREFIX = "msg_"
INCLUDE_IMAGE_URL = "message.input_image.image_url"
INCLUDE_LOGPROBS = "message.output_text.logprobs"
INCLUDE_METADATA = "item.metadata"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_ECHOED_ID_CHARS = 80

_STATUS_IN: dict[str, MessageStatus] = {
    "completed": MessageStatus.COMPLETED,
    "in_progress": MessageStatus.STREAMING,
    "incomplete": MessageStatus.INCOMPLETE,
}
_STATUS_OUT: dict[MessageStatus, Literal["in_progress", "completed", "incomplete"]] = {
    MessageStatus.PENDING: "in_progress",
    MessageStatus.STREAMING: "in_progress",
    MessageStatus.COMPLETED: "completed",
    MessageStatus.INCOMPLETE: "incomplete",
    MessageStatus.FAILED: "incomplete",
    MessageStatus.CANCELLED: "incomplete",
}
_STORED_PART_TYPES = INPUT_PART_TYPES | OUTPUT_PART_TYPES


class InvalidParameterError(BadRequestError):
    """A parameter names something that is not there (OpenAI's ``invalid_value``)."""

    code = "invalid-value"
    title = "Invalid parameter value"

    def __init__(self, detail: str, *, param: str) -> None:
        super().__init__(detail, extra={"param": param})


def conversation_public_id(conversation_id: uuid.UUID) -> str:
    """``conv_<32 hex>`` for a conversation UUID."""
    return CONVERSATION_PREFIX + conversation_id.hex


def item_public_id(message_id: uuid.UUID) -> str:
    """``msg_<32 hex>`` for a message UUID."""
    return ITEM_PREFIX + message_id.hex


def parse_public_id(value: str, prefix: str) -> uuid.UUID | None:
    digits = value.removeprefix(prefix)
    if digits == value or not _HEX32.fullmatch(digits):
        return None
    return uuid.UUID(hex=digits)


def echo(value: str) -> str:
    return value[:_MAX_ECHOED_ID_CHARS]


def parse_conversation_id(public_id: str) -> uuid.UUID:
    """The UUID behind ``conv_<32 hex>``; any other string names no conversation."""
    parsed = parse_public_id(public_id, CONVERSATION_PREFIX)
    if parsed is None:
        raise conversation_not_found(public_id)
    return parsed


def conversation_not_found(public_id: str) -> ConversationNotFoundError:
    return ConversationNotFoundError(f"No conversation found with id '{echo(public_id)}'.")


def item_not_found(public_id: str) -> MessageNotFoundError:
    return MessageNotFoundError(f"No item found with id '{echo(public_id)}'.")


def render_conversation(conversation: ConversationOut) -> ConversationObject:
    """The ``conversation`` object of a stored conversation."""
    return ConversationObject(
        id=conversation_public_id(conversation.id),
        created_at=int(conversation.created_at.timestamp()),
        metadata=conversation.metadata,
    )


def draft_from_item(item: MessageItemIn) -> MessageDraft:
    """The message to store for a ``message`` item."""
    metadata: dict[str, Any] = {}
    if item.role == "developer":
        role = Role.SYSTEM
        metadata["openai_role"] = "developer"
    else:
        role = Role(item.role)
    if item.phase is not None:
        metadata["openai_phase"] = item.phase
    if item.id is not None:
        metadata[ITEM_ID_KEY] = item.id
    return MessageDraft(
        role=role,
        content="\n".join(item.texts()),
        content_parts=[part.model_dump(mode="json", exclude_none=True) for part in item.content],
        metadata=metadata,
        status=_STATUS_IN[item.status or "completed"],
    )


def render_item(
    message: MessageOut, include: frozenset[str] = frozenset()
) -> MessageItemOut | OpaqueItemOut:
    """The item of a stored message, whichever API wrote it."""
    client_id = message.metadata.get(ITEM_ID_KEY)
    item_id = client_id if isinstance(client_id, str) else item_public_id(message.id)
    if is_tool_item(message):
        item = render_tool_item(message, item_id, include)
        if INCLUDE_METADATA not in include:
            return item
        fields = item.model_dump()
        sent = fields.get("metadata")
        # An opaque item's own ``metadata`` field (a later type may have one) stays beside it.
        kept = sent if isinstance(sent, dict) else {}
        fields["metadata"] = {**kept, "agent_id": message.agent_id}
        return OpaqueItemOut.model_validate(fields)
    role: Literal["user", "assistant", "system", "developer", "tool"] = message.role.value
    if message.role is Role.SYSTEM and message.metadata.get("openai_role") == "developer":
        role = "developer"
    phase = message.metadata.get("openai_phase")
    return MessageItemOut(
        id=item_id,
        role=role,
        status=_STATUS_OUT[message.status],
        content=_render_parts(message, include),
        phase=phase if phase in ("commentary", "final_answer") else None,
        metadata=ItemMetadata(agent_id=message.agent_id) if INCLUDE_METADATA in include else None,
    )


def _render_parts(message: MessageOut, include: frozenset[str]) -> list[dict[str, Any]]:
    parts = message.content_parts
    if not parts or any(part.get("type") not in _STORED_PART_TYPES for part in parts):
        # Written through another API: its text is the whole of what OpenAI's shape can carry.
        if message.role is Role.ASSISTANT:
            return [{"type": "output_text", "text": message.content, "annotations": []}]
        return [{"type": "input_text", "text": message.content}]
    rendered: list[dict[str, Any]] = []
    for stored in parts:
        part = dict(stored)
        if part["type"] == "input_image" and INCLUDE_IMAGE_URL not in include:
            part["image_url"] = None
        elif part["type"] == "output_text" and INCLUDE_LOGPROBS not in include:
            part.pop("logprobs", None)
        rendered.append(part)
    return rendered


def item_list(items: Sequence[MessageItemOut | OpaqueItemOut], *, has_more: bool) -> ItemListOut:
    """A ``list`` of items."""
    return ItemListOut(
        data=list(items),
        first_id=items[0].id if items else None,
        last_id=items[-1].id if items else None,
        has_more=has_more,
    )
