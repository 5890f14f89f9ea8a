"""Tracked-context schemas: conversation-level facts, versioned."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from conversation_service.config import constants
from conversation_service.models.common import FreeJsonDocument, InputModel, Metadata, SafeText

Topic = Annotated[SafeText, StringConstraints(max_length=200)]


class TrackedContextData(InputModel):
    """The tracked facts; every field optional, unknown top-level fields refused.

    The document a patch leaves behind is checked against this, so the merged ``entities`` and
    ``variables`` stay within the same bounds as one patch's.
    """

    entities: FreeJsonDocument | None = None
    topics: list[Topic] | None = Field(default=None, max_length=100)
    intent: SafeText | None = Field(default=None, max_length=200)
    variables: Metadata | None = None
    active_agent: SafeText | None = Field(default=None, max_length=constants.MAX_ID_CHARS)
    workflow_step: SafeText | None = Field(default=None, max_length=200)


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


class TrackedContextPatch(InputModel):
    """A JSON merge patch of the tracked context: the same fields, ``null`` removes one."""

    entities: FreeJsonDocument | None = None
    topics: list[Topic] | None = Field(default=None, max_length=100)
    intent: SafeText | None = Field(default=None, max_length=200)
    variables: Metadata | None = None
    active_agent: SafeText | None = Field(default=None, max_length=constants.MAX_ID_CHARS)
    workflow_step: SafeText | None = Field(default=None, max_length=200)
