"""Search schemas: a hit, its snippet, and the query's bounds."""

import uuid
from datetime import datetime
from typing import Final

from pydantic import BaseModel, Field

from conversation_service.models.message import Role

MAX_SEARCH_LIMIT: Final = 50
DEFAULT_SEARCH_LIMIT: Final = 20
MAX_QUERY_CHARS: Final = 1000


class Snippet(BaseModel):
    """A window of the matched text with the matches marked."""

    text: str
    highlights: list[tuple[int, int]] = Field(
        description="[start, end) offsets in characters of ``text``, one per match."
    )


class SearchHit(BaseModel):
    """One message that matched (by its content or by its conversation's title)."""

    conversation_id: uuid.UUID
    conversation_title: str | None
    message_id: uuid.UUID
    seq: int
    role: Role
    created_at: datetime
    score: float = Field(description="Relevance: higher is better (comparable within a search).")
    snippet: Snippet
