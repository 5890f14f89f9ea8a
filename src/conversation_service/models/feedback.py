"""Feedback schemas: a user's rating of a reply, and an agent's aggregates."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from conversation_service.models.common import InputModel, Tag

MAX_FEEDBACK_COMMENT_CHARS = 2000
MAX_FEEDBACK_TAGS = 16
LATEST_COMMENTS = 10

Comment = Annotated[
    str, StringConstraints(max_length=MAX_FEEDBACK_COMMENT_CHARS, pattern=r"^[^\x00]*$")
]


class FeedbackIn(InputModel):
    """Thumbs up (``1``) or down (``-1``) on a reply, with an optional comment and tags."""

    rating: Literal[1, -1]
    comment: Comment | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_FEEDBACK_TAGS)

    @field_validator("rating", mode="before")
    @classmethod
    def _integer_only(cls, value: object) -> object:
        # JSON ``true`` and ``1.0`` are not ratings, though Python counts them as 1.
        if type(value) is not int:
            raise ValueError("rating is 1 or -1")
        return value


class FeedbackOut(BaseModel):
    """The caller's feedback on a message."""

    rating: Literal[1, -1]
    comment: str | None
    tags: list[str]


class FeedbackComment(BaseModel):
    """One commented feedback, for a dashboard."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    rating: Literal[1, -1]
    comment: str
    tags: list[str]
    updated_at: datetime


class AgentFeedback(BaseModel):
    """An agent's feedback in a time window: counts and the newest comments first."""

    up: int
    down: int
    latest_comments: list[FeedbackComment] = Field(
        description=f"Up to {LATEST_COMMENTS} commented feedbacks, newest first."
    )
