"""Message schemas."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from conversation_service.config import constants
from conversation_service.models.common import (
    InputModel,
    Metadata,
    NonBlankText,
    SafeText,
    Sentiment,
    check_metadata,
)
from conversation_service.models.feedback import FeedbackOut


class Role(StrEnum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class MessageStatus(StrEnum):
    """Lifecycle of a message; user messages are born completed."""

    PENDING = "pending"
    STREAMING = "streaming"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"


class ContentPart(InputModel):
    """A typed piece of content (text, image reference, file reference…)."""

    model_config = InputModel.model_config | {
        "extra": "allow",
        "json_schema_extra": {
            "maxProperties": constants.MAX_METADATA_KEYS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": constants.MAX_METADATA_KEY_CHARS,
                "pattern": "^[^\\x00]*$",
            },
        },
    }

    type: Literal["text", "image_url", "file", "audio", "json"]
    text: SafeText | None = Field(default=None, max_length=constants.MAX_MESSAGE_CHARS)

    @model_validator(mode="after")
    def _bounded_extras(self) -> "ContentPart":
        check_metadata(dict(self.model_extra or {}))
        return self


class MessageCreate(InputModel):
    """Body of ``POST /conversations/{id}/messages``: a user message."""

    content: NonBlankText = Field(
        max_length=constants.MAX_MESSAGE_CHARS,
        description="The text; at least one non-whitespace character.",
    )
    content_parts: list[ContentPart] | None = Field(
        default=None, max_length=constants.MAX_CONTENT_PARTS
    )
    metadata: Metadata = Field(default_factory=dict)
    parent_id: uuid.UUID | None = Field(
        default=None,
        description="The message this one follows. Left out: the conversation's active leaf "
        "(as before trees). Any other message starts a new branch; null starts a new root.",
    )


class MessageUpdate(InputModel):
    """Body of ``PATCH /messages/{id}``: a JSON merge patch of the metadata."""

    metadata: Metadata


class Siblings(BaseModel):
    """A message's place among the children of its parent (1-based, creation order)."""

    index: int
    count: int


class MessageOut(BaseModel):
    """A message as the API returns it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    role: Role
    agent_id: str | None = Field(
        default=None,
        description="The agent that wrote an assistant or tool message (null for others).",
    )
    content: str
    content_parts: list[dict[str, Any]] | None
    status: MessageStatus
    metadata: dict[str, Any]
    token_count: int | None
    language: str | None
    sentiment: Sentiment | None
    parent_id: uuid.UUID | None = Field(description="The message it follows (null for a root).")
    siblings: Siblings | None = Field(
        default=None,
        description="In history pages and sibling lists: its place among its parent's "
        "children, for a '‹ index/count ›' switch.",
    )
    created_at: datetime
    updated_at: datetime
    feedback: FeedbackOut | None = Field(
        default=None,
        description="Your own feedback on this reply (in history pages and single reads).",
    )


class ActiveLeafUpdate(InputModel):
    """Body of ``PUT /conversations/{id}/active-leaf``: the message whose branch to show."""

    message_id: uuid.UUID = Field(
        description="Any live message; the active leaf becomes the newest message under it."
    )


class RegenerateAccepted(BaseModel):
    """Answer of ``POST …/messages/{id}/regenerate``: the orchestrator was asked."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID = Field(description="The user message a new reply will answer.")
    status: Literal["requested"]
