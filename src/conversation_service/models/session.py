"""Session schemas: periods of a user's activity and their context variables."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conversation_service.models.common import InputModel, Metadata, SafeText


class SessionStart(InputModel):
    """Body of ``POST /conversations/{id}/sessions``: start a session explicitly."""

    # No NUL: PostgreSQL text cannot store it (a 500 the OpenAPI fuzz found).
    channel: SafeText | None = Field(default=None, min_length=1, max_length=64)
    client: SafeText | None = Field(default=None, min_length=1, max_length=256)
    locale: str | None = Field(
        default=None, min_length=2, max_length=35, pattern=r"^[A-Za-z0-9-]+$"
    )


class SessionOut(BaseModel):
    """A session as the API returns it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    channel: str | None
    client: str | None
    locale: str | None
    started_at: datetime
    last_activity_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    active: bool


class SessionContext(BaseModel):
    """A session's variables (JSON object) with the version of the last write."""

    session_id: uuid.UUID
    version: int
    variables: dict[str, Any]


class SessionContextPatch(InputModel):
    """JSON merge patch (RFC 7396) of a session's variables."""

    variables: Metadata


__all__ = ["SessionContext", "SessionContextPatch", "SessionOut", "SessionStart"]
