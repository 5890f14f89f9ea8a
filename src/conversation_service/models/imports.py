"""Import schemas: the lines of an export that an import reads, and its answer."""

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conversation_service.config import constants
from conversation_service.models.common import Identifier, Metadata, SafeText, Tag
from conversation_service.models.conversation import Priority
from conversation_service.models.memory import MemoryPolicy
from conversation_service.models.message import ContentPart, MessageStatus, Role


class ImportedConversation(BaseModel):
    """A ``conversation`` line: what a new conversation takes from it (other fields ignored)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    id: uuid.UUID
    agent_id: Identifier
    title: SafeText | None = Field(default=None, max_length=constants.MAX_TITLE_CHARS)
    workflow_id: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=constants.MAX_TAGS)
    priority: Priority = Priority.NORMAL
    memory_policy: MemoryPolicy | None = None


class ImportedMessage(BaseModel):
    """A ``message`` line: author, content and status (ids, seq and times are given anew)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    role: Role
    agent_id: Identifier | None = None
    content: SafeText = Field(max_length=constants.MAX_MESSAGE_CHARS)
    content_parts: list[ContentPart] | None = Field(
        default=None, max_length=constants.MAX_CONTENT_PARTS
    )
    metadata: Metadata = Field(default_factory=dict)
    status: MessageStatus = MessageStatus.COMPLETED


class ImportedOut(BaseModel):
    """One source conversation and the conversation it is now."""

    source_conversation_id: uuid.UUID
    conversation_id: uuid.UUID
    created: bool = Field(description="False when an earlier import already created it.")
    message_count: int


class ImportOut(BaseModel):
    """What an import created, in the order of the body."""

    data: list[ImportedOut]


def exported_content_parts(parts: list[ContentPart] | None) -> list[dict[str, Any]] | None:
    """Content parts as the append stores them."""
    if parts is None:
        return None
    return [part.model_dump(mode="json", exclude_none=True) for part in parts]
