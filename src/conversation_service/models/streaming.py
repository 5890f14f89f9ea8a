"""Schemas of agent-side streaming (internal API) and of the realtime client protocol."""

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter

from conversation_service.config import constants
from conversation_service.events.log import parse_event_id
from conversation_service.models.common import (
    FreeJson,
    Identifier,
    InputModel,
    Metadata,
    SafeText,
)
from conversation_service.models.message import MessageOut, MessageStatus, Role

MAX_DELTA_CHARS = 16_384
MAX_DELTAS_PER_REQUEST = 500
MAX_DELTA_INDEX = 10_000_000
EVENT_ID_PATTERN = r"^\d{1,20}-\d{1,20}$"


def check_event_id(value: str | None) -> str | None:
    """Refuse an id of the event id's shape that Redis cannot hold (parts beyond 64 bits)."""
    if value is not None and parse_event_id(value) is None:
        raise ValueError("not an event id: each part is at most 18446744073709551615")
    return value


EventIdText = Annotated[
    str,
    Field(pattern=EVENT_ID_PATTERN, description='An event id, e.g. "1764000000000-0"'),
    AfterValidator(check_event_id),
]


class AgentMessageCreate(InputModel):
    """Body of ``POST /internal/v1/conversations/{id}/messages``: an agent, tool or system message.

    With ``status: streaming`` the message is created empty (or with ``content`` as its start)
    and grows through deltas until ``complete`` or ``fail``.
    """

    role: Literal[Role.ASSISTANT, Role.TOOL, Role.SYSTEM]
    content: SafeText = Field(default="", max_length=constants.MAX_MESSAGE_CHARS)
    status: Literal[MessageStatus.STREAMING, MessageStatus.COMPLETED] = MessageStatus.COMPLETED
    metadata: Metadata = Field(default_factory=dict)
    parent_id: uuid.UUID | None = Field(
        default=None,
        description="The message this one follows. Left out: the conversation's active leaf "
        "(as before trees). Any other message starts a new branch; null starts a new root.",
    )
    agent_id: Identifier | None = Field(
        default=None,
        description="The agent writing it (assistant and tool messages); default: the "
        "conversation's current agent.",
    )


class DeltaIn(InputModel):
    """One chunk; a repeated ``index`` is ignored, so a retried request is harmless."""

    index: int = Field(ge=0, le=MAX_DELTA_INDEX)
    text: SafeText = Field(max_length=MAX_DELTA_CHARS)


class DeltasIn(InputModel):
    """Body of ``POST …/messages/{message_id}/deltas``."""

    deltas: list[DeltaIn] = Field(min_length=1, max_length=MAX_DELTAS_PER_REQUEST)


class DeltasAccepted(BaseModel):
    """Event id per delta, in request order (null for a repeated index)."""

    message_id: uuid.UUID
    event_ids: list[str | None]


class StreamComplete(InputModel):
    """Body of ``POST …/complete``: final content (default: the deltas joined) and metadata."""

    content: SafeText | None = Field(default=None, max_length=constants.MAX_MESSAGE_CHARS)
    metadata: Metadata | None = Field(
        default=None, description="Merged (RFC 7396) into the message's metadata."
    )


class StreamFail(InputModel):
    """Body of ``POST …/fail``: why the reply failed (the partial content is kept)."""

    error: SafeText = Field(min_length=1, max_length=2_000)


class StreamResult(BaseModel):
    """The message after ``complete`` or ``fail``."""

    message: MessageOut


# Client frames of ``/api/v1/ws``.


class SubscribeFrame(BaseModel):
    """Start receiving a conversation's events after ``after`` (null: from now on)."""

    type: Literal["subscribe"]
    conversation_id: uuid.UUID
    after: EventIdText | None = None


class UnsubscribeFrame(BaseModel):
    """Stop receiving a conversation's events."""

    type: Literal["unsubscribe"]
    conversation_id: uuid.UUID


class TypingFrame(BaseModel):
    """Tell the conversation's other viewers that the user is typing."""

    type: Literal["typing"]
    conversation_id: uuid.UUID


class PingFrame(BaseModel):
    """Application-level ping (answered with ``pong``)."""

    type: Literal["ping"]
    data: FreeJson = None


ClientFrame = Annotated[
    SubscribeFrame | UnsubscribeFrame | TypingFrame | PingFrame, Field(discriminator="type")
]
CLIENT_FRAMES: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# Agent frames of ``/internal/v1/ws/stream`` (``ref`` is echoed in the answer).


class AgentCreateFrame(AgentMessageCreate):
    """Create a message (as the REST endpoint)."""

    type: Literal["create"]
    ref: str | None = Field(default=None, max_length=128)
    conversation_id: uuid.UUID


class AgentDeltaFrame(DeltasIn):
    """Append deltas to a streaming message."""

    type: Literal["delta"]
    ref: str | None = Field(default=None, max_length=128)
    conversation_id: uuid.UUID
    message_id: uuid.UUID


class AgentCompleteFrame(StreamComplete):
    """Complete a streaming message."""

    type: Literal["complete"]
    ref: str | None = Field(default=None, max_length=128)
    conversation_id: uuid.UUID
    message_id: uuid.UUID


class AgentFailFrame(StreamFail):
    """Fail a streaming message."""

    type: Literal["fail"]
    ref: str | None = Field(default=None, max_length=128)
    conversation_id: uuid.UUID
    message_id: uuid.UUID


class AgentPingFrame(InputModel):
    """Ping (answered with ``pong``)."""

    type: Literal["ping"]
    ref: str | None = Field(default=None, max_length=128)


AgentFrame = Annotated[
    AgentCreateFrame | AgentDeltaFrame | AgentCompleteFrame | AgentFailFrame | AgentPingFrame,
    Field(discriminator="type"),
]
AGENT_FRAMES: TypeAdapter[AgentFrame] = TypeAdapter(AgentFrame)
