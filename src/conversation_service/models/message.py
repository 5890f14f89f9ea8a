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
    parent_id: uuid.UUID | None = None


class MessageUpdate(InputModel):
    """Body of ``PATCH /messages/{id}``: a JSON merge patch of the metadata."""

    metadata: Metadata


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
    parent_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    feedback: FeedbackOut | None = Field(
        default=None,
        description="Your own feedback on this reply (in history pages and single reads).",
    )
