"""Conversation schemas."""

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from conversation_service.config import constants
from conversation_service.models.common import (
    Identifier,
    InputModel,
    Metadata,
    SafeText,
    Sentiment,
    Tag,
)
from conversation_service.models.memory import MemoryPolicy


class ConversationStatus(StrEnum):
    """Lifecycle: active takes messages; archived and closed are read-only."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    CLOSED = "closed"


class Priority(StrEnum):
    """Scheduling priority of the conversation's background work."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ConversationCreate(InputModel):
    """Body of ``POST /conversations``."""

    agent_id: Identifier
    title: SafeText | None = Field(default=None, max_length=constants.MAX_TITLE_CHARS)
    workflow_id: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=constants.MAX_TAGS)
    priority: Priority = Priority.NORMAL
    memory_policy: MemoryPolicy | None = Field(
        default=None, description="Default context window for this conversation."
    )


class ConversationUpdate(InputModel):
    """Body of ``PATCH /conversations/{id}``; ``metadata`` is a JSON merge patch."""

    title: SafeText | None = Field(default=None, max_length=constants.MAX_TITLE_CHARS)
    workflow_id: Identifier | None = None
    metadata: Metadata | None = None
    tags: list[Tag] | None = Field(default=None, max_length=constants.MAX_TAGS)
    priority: Priority | None = None
    status: ConversationStatus | None = None
    memory_policy: MemoryPolicy | None = None


class ForkedFrom(BaseModel):
    """Where a fork came from."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID


class ConversationOut(BaseModel):
    """A conversation as the API returns it."""

    id: uuid.UUID
    user_id: str
    agent_id: str = Field(description="The agent holding the conversation now.")
    agents: list[str] = Field(description="Every agent that held it, first to latest.")
    workflow_id: str | None
    title: str | None
    status: ConversationStatus
    priority: Priority
    metadata: Metadata
    tags: list[str]
    memory_policy: MemoryPolicy | None
    last_seq: int
    message_count: int
    token_count: int
    sentiment: Sentiment | None
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None
    active_leaf_id: uuid.UUID | None = Field(
        default=None, description="The newest message of the active branch (null while empty)."
    )
    forked_from: ForkedFrom | None = Field(
        default=None, description="The conversation and message this one was forked from."
    )


class ForkCreate(InputModel):
    """Body of ``POST /conversations/{id}/fork``."""

    message_id: uuid.UUID | None = Field(
        default=None, description="The last message copied; default: the active leaf."
    )
    title: SafeText | None = Field(default=None, max_length=constants.MAX_TITLE_CHARS)
