"""Schemas of handoffs between agents (internal API)."""

from typing import Any

from pydantic import BaseModel, Field

from conversation_service.models.common import Identifier, InputModel, Metadata, SafeText
from conversation_service.models.conversation import ConversationOut
from conversation_service.models.message import MessageOut


class HandoffIn(InputModel):
    """Body of ``POST /internal/v1/conversations/{id}/handoff``."""

    to_agent_id: Identifier = Field(description="The agent taking the conversation over.")
    from_agent_id: Identifier | None = Field(
        default=None,
        description="The agent expected to hold it now; if another does, 409 names it.",
    )
    reason: SafeText | None = Field(default=None, max_length=2_000)
    context: Metadata | None = Field(
        default=None, description="What the next agent should know (kept in the handoff line)."
    )


class HandoffOut(BaseModel):
    """The conversation after the handoff and the ``system`` line that records it."""

    conversation: ConversationOut
    message: MessageOut
    from_agent_id: str
    to_agent_id: str


class AgentChangedData(BaseModel):
    """Payload of ``conversation.agent_changed`` (event and callback)."""

    conversation_id: str
    from_agent_id: str
    to_agent_id: str
    agents: list[str]
    reason: str | None
    context: dict[str, Any] | None
    message_id: str
