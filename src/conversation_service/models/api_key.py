"""API key schemas (internal API: keys for the OpenAI-compatible API)."""

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from conversation_service.models.common import Identifier, InputModel, SafeText

MAX_API_KEY_NAME_CHARS = 200


class ApiKeyCreate(InputModel):
    """Body of ``POST /internal/v1/api-keys``: whose key it is, and a label for operators."""

    tenant: Identifier
    user: Identifier
    name: SafeText | None = Field(default=None, min_length=1, max_length=MAX_API_KEY_NAME_CHARS)


class ApiKeyCreated(BaseModel):
    """A newly issued key. ``key`` is shown this once: only its hash is stored."""

    id: uuid.UUID
    key: str = Field(description="The secret; send it as `Authorization: Bearer <key>`.")
    prefix: str = Field(description="The key's first characters, to recognise it later.")
    tenant: str
    user: str
    name: str | None
    created_at: datetime
