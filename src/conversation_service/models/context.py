"""Tracked-context schemas: conversation-level facts, versioned."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conversation_service.config import constants
from conversation_service.models.common import Metadata


class TrackedContextData(BaseModel):
    """The tracked facts; every field optional, unknown top-level fields refused."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, Any] | list[Any] | None = None
    topics: list[str] | None = Field(default=None, max_length=100)
    intent: str | None = Field(default=None, max_length=200)
    variables: dict[str, Any] | None = None
    active_agent: str | None = Field(default=None, max_length=constants.MAX_ID_CHARS)
    workflow_step: str | None = Field(default=None, max_length=200)


class TrackedContextOut(BaseModel):
    """The current tracked context and its version (also sent as the ``ETag``)."""

    conversation_id: str
    version: int
    data: dict[str, Any]
    updated_at: datetime | None
    updated_by: str | None


class TrackedContextVersionOut(BaseModel):
    """One change: who made it, when, the patch applied and the resulting document."""

    version: int
    changed_by: str
    changed_at: datetime
    patch: dict[str, Any]
    data: dict[str, Any]


class TrackedContextPatch(BaseModel):
    """A JSON merge patch of the tracked context: the same fields, ``null`` removes one."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, Any] | list[Any] | None = None
    topics: list[str] | None = Field(default=None, max_length=100)
    intent: str | None = Field(default=None, max_length=200)
    variables: Metadata | None = None
    active_agent: str | None = Field(default=None, max_length=constants.MAX_ID_CHARS)
    workflow_step: str | None = Field(default=None, max_length=200)
