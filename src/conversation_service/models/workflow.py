"""Schemas of conversations the orchestrator starts (for a workflow) on a user's behalf."""

from typing import Literal

from pydantic import Field

from conversation_service.config import constants
from conversation_service.models.common import (
    Identifier,
    InputModel,
    Metadata,
    NonBlankText,
    SafeText,
)
from conversation_service.models.conversation import ConversationCreate, ConversationOut
from conversation_service.models.message import MessageOut, Role

MAX_OPENING_MESSAGES = 20


class OpeningMessage(InputModel):
    """A message the conversation opens with (an assistant greeting, a form's answers…)."""

    role: Literal[Role.USER, Role.ASSISTANT, Role.SYSTEM]
    content: NonBlankText = Field(max_length=constants.MAX_MESSAGE_CHARS)
    metadata: Metadata = Field(default_factory=dict)
    agent_id: Identifier | None = Field(
        default=None, description="Author of an assistant message; default: the agent_id."
    )


class WorkflowConversationCreate(ConversationCreate):
    """Body of ``POST /internal/v1/conversations``: a conversation owned by ``user``."""

    tenant: Identifier
    user: Identifier
    workflow_step: SafeText | None = Field(
        default=None, max_length=200, description="Set as tracked context's workflow_step."
    )
    messages: list[OpeningMessage] = Field(default_factory=list, max_length=MAX_OPENING_MESSAGES)


class WorkflowConversationOut(ConversationOut):
    """The created conversation with its opening messages."""

    messages: list[MessageOut]
