"""``ConversationServiceChatMessageHistory``: LangChain's chat history kept in the service.

Install with the ``langchain`` extra. A human message is appended through the public API (the
user's JWT, with an ``Idempotency-Key``); AI, tool and system messages through the internal API
(a service key), as an orchestrator writes them. Tool links travel in the message metadata the
service's context windows already understand: an AI message's ``tool_calls`` (OpenAI's shape)
and a tool message's ``tool_call_id``, so the window never separates a call from its result.

Reading returns completed messages in order (streaming or failed replies are left out).
"""

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)

from conversation_service_client import models
from conversation_service_client._calls import Id
from conversation_service_client.aio import AsyncConversationServiceClient
from conversation_service_client.sync import ConversationServiceClient

_AGENT_ROLES = {"ai": "assistant", "tool": "tool", "system": "system"}


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return message.text


def _openai_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
    }


def _langchain_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return ToolCall(name=str(function.get("name", "")), args=args, id=call.get("id"))


def to_request(message: BaseMessage) -> tuple[str, dict[str, Any]]:
    """``("user", body)`` for the public append, or ``(role, body)`` for the internal one."""
    metadata: dict[str, Any] = {}
    if message.name:
        metadata["name"] = message.name
    if isinstance(message, HumanMessage):
        return "user", {"content": _text(message), "metadata": metadata}
    role = _AGENT_ROLES.get(message.type)
    if role is None:
        raise ValueError(f"cannot store a {message.type!r} message")
    if isinstance(message, AIMessage) and message.tool_calls:
        metadata["tool_calls"] = [_openai_call(call) for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        metadata["tool_call_id"] = message.tool_call_id
        if message.status != "success":
            metadata["tool_status"] = message.status
    return role, {"role": role, "content": _text(message), "metadata": metadata}


def to_message(stored: models.MessageOut) -> BaseMessage:
    """The LangChain message a stored message stands for."""
    metadata = stored.metadata or {}
    common: dict[str, Any] = {"id": str(stored.id), "name": metadata.get("name")}
    if stored.role == "user":
        return HumanMessage(stored.content, **common)
    if stored.role == "assistant":
        calls = [_langchain_call(call) for call in metadata.get("tool_calls") or ()]
        return AIMessage(stored.content, tool_calls=calls, **common)
    if stored.role == "tool":
        return ToolMessage(
            stored.content,
            tool_call_id=str(metadata.get("tool_call_id", "")),
            status=metadata.get("tool_status", "success"),
            **common,
        )
    return SystemMessage(stored.content, **common)


class ConversationServiceChatMessageHistory(BaseChatMessageHistory):
    """The history of one conversation of the service.

    ``client`` (blocking) serves the sync methods, ``async_client`` the async ones; give either
    or both. Each needs the user's ``token`` and, to store AI, tool or system messages, a
    ``service_key``. With only ``client`` the async methods run it in a thread.
    """

    def __init__(
        self,
        conversation_id: Id,
        *,
        client: ConversationServiceClient | None = None,
        async_client: AsyncConversationServiceClient | None = None,
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("give a client, an async_client or both")
        self.conversation_id = str(conversation_id)
        self.client = client
        self.async_client = async_client

    def _sync(self) -> ConversationServiceClient:
        if self.client is None:
            raise RuntimeError("this history has only an async client: use the a* methods")
        return self.client

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [
            to_message(stored)
            for stored in self._sync().iter_messages(self.conversation_id)
            if stored.status == "completed"
        ]

    async def aget_messages(self) -> list[BaseMessage]:
        if self.async_client is None:
            return await super().aget_messages()
        return [
            to_message(stored)
            async for stored in self.async_client.iter_messages(self.conversation_id)
            if stored.status == "completed"
        ]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        client = self._sync()
        for message in messages:
            role, body = to_request(message)
            if role == "user":
                client.append_message(self.conversation_id, **body)
            else:
                client.create_agent_message(self.conversation_id, body)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if self.async_client is None:
            await super().aadd_messages(messages)
            return
        for message in messages:
            role, body = to_request(message)
            if role == "user":
                await self.async_client.append_message(self.conversation_id, **body)
            else:
                await self.async_client.create_agent_message(self.conversation_id, body)

    def clear(self) -> None:
        """Delete every message of the conversation (the conversation itself stays)."""
        client = self._sync()
        for stored in list(client.iter_messages(self.conversation_id)):
            client.delete_message(self.conversation_id, stored.id)

    async def aclear(self) -> None:
        if self.async_client is None:
            await super().aclear()
            return
        client = self.async_client
        stored = [message async for message in client.iter_messages(self.conversation_id)]
        for message in stored:
            await client.delete_message(self.conversation_id, message.id)
