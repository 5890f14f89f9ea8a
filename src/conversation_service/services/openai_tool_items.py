"""Items other than ``message`` as messages of the one history.

Decision: there is no side table. Every item is a message, so ``/api/v1``, ``/internal/v1``, the
context window, the processing jobs and the realtime events see it like any other:

* a call the client runs (``function_call``, ``custom_tool_call``, and every other item with a
  ``call_id`` that is not an ``…_output``: computer, local shell, shell, apply-patch, program) is
  an ``assistant`` message whose ``metadata.tool_calls`` holds the call in chat-completions shape,
  ``[{"id": call_id, "type": "function", "function": {"name", "arguments"}}]`` (``"custom"`` for a
  custom tool), so ``format=openai`` gives ``tool_calls`` and the context window keeps the call
  with its output; an ``mcp_approval_request`` is a call whose id is its own id;
* an output (``…_output`` with a ``call_id``; ``local_shell_call_output`` by its ``id``;
  ``mcp_approval_response`` by ``approval_request_id``) is a ``tool`` message with
  ``metadata.tool_call_id``;
* everything else (``reasoning``, the hosted tool calls, MCP listings and calls, ``compaction``,
  and any later type) is an ``assistant`` message.

The message's ``content`` is the text a model reads for the item (a call's arguments or input,
an output's text, a reasoning summary; empty for opaque items), which is what its tokens count.
The item itself is kept whole in ``metadata.openai_item``, and the id the client gave it in
``metadata.openai_item_id``: ``/v1`` returns the item verbatim, under that id (or ``msg_<hex>``).
"""

import uuid
from typing import Any, Final

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import messages_table as messages
from conversation_service.models.message import MessageOut, Role
from conversation_service.models.openai_items import OpaqueItemOut, ToolItemIn
from conversation_service.services.auth import Principal
from conversation_service.services.message_store import MessageDraft

ITEM_KEY: Final = "openai_item"
ITEM_ID_KEY: Final = "openai_item_id"
CALL_ID_KEY: Final = "openai_call_id"
# Outputs that must answer a call already in the conversation, and the call type they answer.
ANSWERS: Final = {
    "function_call_output": "function_call",
    "custom_tool_call_output": "custom_tool_call",
}
# Types whose SDK model requires a status the input may leave out.
_STATUS_REQUIRED: Final = frozenset(
    {
        "function_call",
        "function_call_output",
        "file_search_call",
        "web_search_call",
        "image_generation_call",
        "computer_call",
        "computer_call_output",
        "tool_search_call",
        "tool_search_output",
        "program_output",
        "code_interpreter_call",
        "local_shell_call",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
    }
)
_PAYLOAD_SKIP: Final = frozenset({"id", "type", "status", "call_id"})


def _text(value: Any) -> str:
    """The text of an output: a string as is, content parts by their text, else its JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        texts = [str(part["text"]) for part in value if isinstance(part.get("text"), str)]
        if texts:
            return "\n".join(texts)
    return "" if value is None else orjson.dumps(value).decode()


def draft_from_tool_item(item: ToolItemIn) -> MessageDraft:
    """The message that stands for a non-message item (see the module docstring)."""
    data = item.as_json()
    kind = data["type"]
    metadata: dict[str, Any] = {ITEM_KEY: data}
    if item.id is not None:
        metadata[ITEM_ID_KEY] = item.id
    call_id = data.get("call_id") if isinstance(data.get("call_id"), str) else None
    answered = call_id
    if kind == "local_shell_call_output":
        answered = item.id
    elif kind == "mcp_approval_response":
        answered = data.get("approval_request_id")
    if kind.endswith("_output") or kind == "mcp_approval_response":
        if isinstance(answered, str):
            metadata["tool_call_id"] = answered
        return MessageDraft(role=Role.TOOL, content=_text(data.get("output")), metadata=metadata)
    content = ""
    if kind == "mcp_approval_request":
        call_id = item.id
    if kind == "function_call":
        content = data["arguments"]
        call = {"name": data["name"], "arguments": content}
        metadata["tool_calls"] = [{"id": call_id, "type": "function", "function": call}]
    elif kind == "custom_tool_call":
        content = data["input"]
        custom = {"name": data["name"], "input": content}
        metadata["tool_calls"] = [{"id": call_id, "type": "custom", "custom": custom}]
    elif call_id is not None:
        payload = {key: value for key, value in data.items() if key not in _PAYLOAD_SKIP}
        content = orjson.dumps(payload).decode()
        call = {"name": str(data.get("name") or kind), "arguments": content}
        metadata["tool_calls"] = [{"id": call_id, "type": "function", "function": call}]
    elif kind == "reasoning":
        content = _text(data.get("summary"))
    if call_id is not None:
        metadata[CALL_ID_KEY] = call_id
    return MessageDraft(role=Role.ASSISTANT, content=content, metadata=metadata)


def is_tool_item(message: MessageOut) -> bool:
    """Whether a stored message stands for a non-message item."""
    return isinstance(message.metadata.get(ITEM_KEY), dict)


def render_tool_item(message: MessageOut, item_id: str, include: frozenset[str]) -> OpaqueItemOut:
    """The item a message stands for, as it was sent, with its id and what ``include`` asks."""
    item: dict[str, Any] = dict(message.metadata[ITEM_KEY])
    item["id"] = item_id
    kind = item["type"]
    if kind in _STATUS_REQUIRED and item.get("status") is None:
        item["status"] = "completed"
    if kind == "reasoning" and "reasoning.encrypted_content" not in include:
        item.pop("encrypted_content", None)
    elif kind == "file_search_call" and "file_search_call.results" not in include:
        item["results"] = None
    elif kind == "code_interpreter_call" and "code_interpreter_call.outputs" not in include:
        item["outputs"] = None
    elif kind == "web_search_call" and "web_search_call.action.sources" not in include:
        action = item.get("action")
        if isinstance(action, dict) and "sources" in action:
            item["action"] = {key: value for key, value in action.items() if key != "sources"}
    elif kind == "computer_call_output" and "computer_call_output.output.image_url" not in include:
        output = item.get("output")
        if isinstance(output, dict) and "image_url" in output:
            item["output"] = {key: value for key, value in output.items() if key != "image_url"}
    return OpaqueItemOut.model_validate(item)


async def has_call(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    call_id: str,
) -> bool:
    """Whether the conversation holds a (not deleted) call with this ``call_id``."""
    found = await conn.scalar(
        select(messages.c.id)
        .where(
            messages.c.conversation_id == conversation_id,
            messages.c.tenant_id == principal.tenant_id,
            messages.c.deleted_at.is_(None),
            messages.c.metadata[CALL_ID_KEY].as_string() == call_id,
        )
        .limit(1)
    )
    return found is not None


async def find_by_client_id(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    item_id: str,
) -> uuid.UUID | None:
    """The message of the latest visible item the client gave this id, if any."""
    found = await conn.scalar(
        select(messages.c.id)
        .where(
            messages.c.conversation_id == conversation_id,
            messages.c.tenant_id == principal.tenant_id,
            messages.c.deleted_at.is_(None),
            messages.c.metadata[ITEM_ID_KEY].as_string() == item_id,
        )
        .order_by(messages.c.seq.desc())
        .limit(1)
    )
    return None if found is None else uuid.UUID(str(found))
