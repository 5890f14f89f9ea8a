"""Memory schemas: the context window an agent receives on each turn."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from conversation_service.models.common import InputModel
from conversation_service.models.message import MessageOut


class MemoryStrategy(StrEnum):
    """How the window is chosen."""

    LAST_N = "last_n"
    TOKEN_BUDGET = "token_budget"  # noqa: S105 - a strategy name, not a secret
    SUMMARY_BUFFER = "summary_buffer"


class Encoding(StrEnum):
    """Tokenizers counted exactly."""

    CL100K = "cl100k_base"
    O200K = "o200k_base"


class MemoryPolicy(InputModel):
    """A conversation's default window; each field can be overridden per request."""

    strategy: MemoryStrategy = MemoryStrategy.SUMMARY_BUFFER
    max_tokens: int = Field(default=4000, ge=16, le=2_000_000)
    last_n: int = Field(default=20, ge=1, le=1000)
    encoding: Encoding = Encoding.O200K


class SummaryOut(BaseModel):
    """The newest summary version and the history it covers."""

    text: str
    version: int
    covers_until_seq: int
    token_count: int
    method: str
    created_at: datetime


class MemoryWindow(BaseModel):
    """How the window was chosen and what it costs."""

    strategy: MemoryStrategy
    encoding: Encoding
    budget: int
    token_count: int
    truncated: bool
    cut_seq: int | None = Field(description="Newest seq left out of the window, if any.")


class ConversationMemory(MemoryWindow):
    """``format=native``: summary, messages, session and tracked context."""

    conversation_id: uuid.UUID
    summary: SummaryOut | None
    messages: list[MessageOut]
    session_context: dict[str, Any] | None
    session_id: uuid.UUID | None
    tracked_context: dict[str, Any]


class ChatMessage(BaseModel):
    """One chat-completions message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = Field(
        default=None,
        description="The agent that wrote an assistant message (or, with "
        "``for_agent``, the other agent a ``user`` message quotes).",
    )
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class OpenAIContext(MemoryWindow):
    """``format=openai``: messages ready for a chat-completions call."""

    conversation_id: uuid.UUID
    messages: list[ChatMessage]
