"""Schemas of the OpenAI-compatible Conversations API, shaped as the official SDK's types.

This module holds ``message`` items and conversations; the other item types and the bodies that
carry items of every type are in ``models.openai_items``. Content parts are the SDK's own
(``input_text``, ``input_image``, ``input_file`` for user, system and developer messages;
``output_text`` and ``refusal`` for assistant ones) and are kept verbatim, so what a client wrote
is what it reads back.
"""

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from conversation_service.config import constants
from conversation_service.models.common import InputModel, check_metadata

MAX_ITEMS_PER_REQUEST = 20
DEFAULT_ITEMS_PAGE = 20
MAX_ITEMS_PAGE = 100
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
# Image URLs may be data URLs and file_data is base64: the request body limit bounds them.
MAX_INLINE_DATA_CHARS = constants.MAX_REQUEST_BODY_BYTES
MAX_PART_ENTRIES = 4096

Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "item.metadata",
]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
INPUT_PART_TYPES = frozenset({"input_text", "input_image", "input_file"})
OUTPUT_PART_TYPES = frozenset({"output_text", "refusal"})


# NUL cannot be stored by PostgreSQL; saying so in the schema keeps the schema honest.
_NO_NUL = r"^[^\x00]*$"
BoundedText = Annotated[
    str, StringConstraints(max_length=constants.MAX_MESSAGE_CHARS, pattern=_NO_NUL)
]
InlineData = Annotated[str, StringConstraints(max_length=MAX_INLINE_DATA_CHARS, pattern=_NO_NUL)]
ShortText = Annotated[str, StringConstraints(max_length=constants.MAX_TITLE_CHARS, pattern=_NO_NUL)]
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_CHARS, pattern=_NO_NUL)
]
MetadataValue = Annotated[
    str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS, pattern=_NO_NUL)
]
OpenAIMetadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=MAX_METADATA_PAIRS,
        description=(
            "Up to 16 string pairs; keys up to 64 characters, values up to 512 "
            f"(and at most {constants.MAX_METADATA_BYTES} bytes once encoded, as all metadata)."
        ),
    ),
    AfterValidator(check_metadata),
]
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]
Byte = Annotated[int, Field(ge=0, le=255)]
LogProbability = Annotated[float, Field(allow_inf_nan=False, le=0)]


class PromptCacheBreakpoint(InputModel):
    """Marks the end of a reusable prompt prefix (kept as given)."""

    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | None = None


class InputTextPart(InputModel):
    """``input_text``: text written by a user, system or developer."""

    type: Literal["input_text"]
    text: BoundedText
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class InputImagePart(InputModel):
    """``input_image``: an image by URL (or data URL) or by file id."""

    model_config = InputModel.model_config | {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["image_url"], "properties": {"image_url": {"type": "string"}}},
                {"required": ["file_id"], "properties": {"file_id": {"type": "string"}}},
            ]
        }
    }

    type: Literal["input_image"]
    image_url: InlineData | None = None
    file_id: ShortText | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None

    @model_validator(mode="after")
    def _has_a_source(self) -> "InputImagePart":
        if self.image_url is None and self.file_id is None:
            raise ValueError("input_image needs image_url or file_id")
        return self


class InputFilePart(InputModel):
    """``input_file``: a file by id, URL or inline base64 data."""

    model_config = InputModel.model_config | {
        "json_schema_extra": {
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("file_id", "file_url", "file_data")
            ]
        }
    }

    type: Literal["input_file"]
    file_id: ShortText | None = None
    file_url: InlineData | None = None
    file_data: InlineData | None = None
    filename: ShortText | None = None
    detail: Literal["auto", "low", "high"] | None = None
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None

    @model_validator(mode="after")
    def _has_a_source(self) -> "InputFilePart":
        if self.file_id is None and self.file_url is None and self.file_data is None:
            raise ValueError("input_file needs file_id, file_url or file_data")
        return self


class FileCitation(InputModel):
    """A citation of a file."""

    type: Literal["file_citation"]
    file_id: ShortText
    filename: ShortText
    index: Offset


class URLCitation(InputModel):
    """A citation of a web page."""

    type: Literal["url_citation"]
    url: InlineData
    title: ShortText
    start_index: Offset
    end_index: Offset


class ContainerFileCitation(InputModel):
    """A citation of a container file."""

    type: Literal["container_file_citation"]
    container_id: ShortText
    file_id: ShortText
    filename: ShortText
    start_index: Offset
    end_index: Offset


class FilePath(InputModel):
    """A path to a file."""

    type: Literal["file_path"]
    file_id: ShortText
    index: Offset


Annotation = Annotated[
    FileCitation | URLCitation | ContainerFileCitation | FilePath, Field(discriminator="type")
]


class TopLogprob(InputModel):
    """One of the likeliest tokens at a position."""

    token: BoundedText
    bytes: list[Byte] = Field(max_length=MAX_PART_ENTRIES)
    logprob: LogProbability


class Logprob(TopLogprob):
    """The log probability of an output token."""

    top_logprobs: list[TopLogprob] = Field(max_length=MAX_PART_ENTRIES)


class OutputTextPart(InputModel):
    """``output_text``: text an assistant produced, with its annotations."""

    type: Literal["output_text"]
    text: BoundedText
    annotations: list[Annotation] = Field(default_factory=list, max_length=MAX_PART_ENTRIES)
    logprobs: list[Logprob] | None = Field(default=None, max_length=MAX_PART_ENTRIES)


class RefusalPart(InputModel):
    """``refusal``: an assistant's refusal."""

    type: Literal["refusal"]
    refusal: BoundedText


InputPart = Annotated[InputTextPart | InputImagePart | InputFilePart, Field(discriminator="type")]
OutputPart = Annotated[OutputTextPart | RefusalPart, Field(discriminator="type")]


class _MessageIn(InputModel):
    type: Literal["message"] = "message"
    status: ItemStatus | None = None
    id: ShortText | None = Field(
        default=None, description="Kept: the item reads back with it (else a `msg_` id)."
    )

    @model_validator(mode="after")
    def _bounded_text(self) -> Self:
        if sum(len(text) for text in self.texts()) > constants.MAX_MESSAGE_CHARS:
            raise ValueError(f"a message has at most {constants.MAX_MESSAGE_CHARS} characters")
        return self

    def texts(self) -> list[str]:
        """The text of every text-bearing part, in order."""
        raise NotImplementedError


def _texts(parts: Sequence[BaseModel]) -> list[str]:
    found: list[str] = []
    for part in parts:
        if isinstance(part, InputTextPart | OutputTextPart):
            found.append(part.text)
        elif isinstance(part, RefusalPart):
            found.append(part.refusal)
    return found


class InputMessageIn(_MessageIn):
    """A user, system or developer message (``input_*`` parts)."""

    role: Literal["user", "system", "developer"]
    content: list[InputPart] = Field(min_length=1, max_length=constants.MAX_CONTENT_PARTS)
    phase: None = Field(default=None, description="Assistant messages only.")

    def texts(self) -> list[str]:
        """The text of every text-bearing part, in order."""
        return _texts(self.content)


class OutputMessageIn(_MessageIn):
    """An assistant message (``output_text`` and ``refusal`` parts)."""

    role: Literal["assistant"]
    content: list[OutputPart] = Field(min_length=1, max_length=constants.MAX_CONTENT_PARTS)
    phase: Literal["commentary", "final_answer"] | None = None

    def texts(self) -> list[str]:
        """The text of every text-bearing part, in order."""
        return _texts(self.content)


def _message_items_only(data: Any) -> Any:
    """Refuse other item types by name; turn string content into the one part it stands for."""
    if not isinstance(data, dict):
        return data
    kind = data.get("type", "message")
    if kind != "message":
        raise PydanticCustomError(
            "unsupported_item_type",
            "item type '{kind}' is not supported: this service stores 'message' items only",
            {"kind": str(kind)[:64]},
        )
    content = data.get("content")
    if isinstance(content, str):
        part: dict[str, Any] = (
            {"type": "output_text", "text": content, "annotations": []}
            if data.get("role") == "assistant"
            else {"type": "input_text", "text": content}
        )
        data = {**data, "content": [part]}
    return data


# A ``message`` item; ``content`` may also be a plain string.
MessageItemIn = Annotated[
    InputMessageIn | OutputMessageIn,
    Field(discriminator="role"),
    BeforeValidator(_message_items_only),
]
# Discriminator values pydantic puts in an error's location, right after a list index.
DISCRIMINATOR_TAGS = frozenset(
    {"user", "system", "developer", "assistant"}
    | INPUT_PART_TYPES
    | OUTPUT_PART_TYPES
    | {"file_citation", "url_citation", "container_file_citation", "file_path"}
)


class ConversationUpdateIn(InputModel):
    """Body of ``POST /conversations/{id}``: the new metadata, replacing the old (null clears)."""

    metadata: OpenAIMetadata | None


class ConversationObject(BaseModel):
    """``conversation``."""

    id: str = Field(examples=["conv_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f"])
    object: Literal["conversation"] = "conversation"
    created_at: int = Field(description="Unix seconds.")
    metadata: dict[str, Any]


class ConversationDeletedObject(BaseModel):
    """``conversation.deleted``."""

    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class ItemMetadata(BaseModel):
    """``include=item.metadata``: the agent that wrote the item (null for a user's items)."""

    agent_id: str | None


class MessageItemOut(BaseModel):
    """A ``message`` item as the SDK's ``Message`` type defines it."""

    id: str = Field(
        examples=["msg_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f"],
        description="The id the client gave the item, else `msg_` and 32 hex digits.",
    )
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer", "tool"]
    status: ItemStatus
    content: list[dict[str, Any]]
    phase: Literal["commentary", "final_answer"] | None = None
    metadata: ItemMetadata | None = Field(
        default=None,
        # Left out unless asked for: the Agents SDK replays listed items to a model verbatim.
        exclude_if=lambda value: value is None,
        description="Who wrote the item; returned with `include=item.metadata` only.",
    )


class OpenAIErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope, which the SDK maps to its exception classes by status."""

    error: OpenAIErrorDetail
