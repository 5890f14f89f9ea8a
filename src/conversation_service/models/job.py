"""Background job and callback schemas."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from conversation_service.config.constants import MAX_SEQ
from conversation_service.models.common import InputModel
from conversation_service.models.conversation import Priority


class TaskRequest(InputModel):
    """Body of ``POST /internal/v1/conversations/{id}/tasks``."""

    kind: Literal["summary", "sentiment", "process"]
    priority: Priority | None = Field(
        default=None, description="Queue priority; defaults to the conversation's."
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[\x21-\x7e]*)?$",
        description="Also notified (task.completed / task.failed); host must be allowlisted.",
    )
    message_id: uuid.UUID | None = Field(
        default=None, description="sentiment/process: the message (default: the newest one)."
    )
    until_seq: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SEQ,
        description="summary: cover history up to this seq (default: all).",
    )


JobState = Literal["pending", "queued", "started", "finished", "failed", "cancelled", "skipped"]


class JobOut(BaseModel):
    """A background job's status and result."""

    id: uuid.UUID
    kind: str
    status: JobState = Field(
        description="``skipped``: its conversation or message was deleted before it could run "
        "(never retried; ``result.skipped`` says which)."
    )
    queue: str
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    attempts: int
    max_attempts: int
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CallbackAttemptOut(BaseModel):
    """One delivery attempt."""

    attempt: int
    status_code: int | None
    latency_ms: float
    error: str | None
    created_at: datetime


class CallbackDeliveryOut(BaseModel):
    """A callback delivery and every attempt made so far."""

    id: uuid.UUID
    webhook_id: str
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[CallbackAttemptOut]
    created_at: datetime
    delivered_at: datetime | None


class RedeliveryOut(BaseModel):
    """A redelivery was queued for a callback (same ``webhook-id``)."""

    delivery_id: uuid.UUID
    job_id: uuid.UUID
