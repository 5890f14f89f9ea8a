"""Schemas of the OpenAI-compatible Conversations API, shaped as the official SDK's types.

Only ``message`` items are stored; any other item type is refused with a 400 that names it,
never dropped. Content parts are the SDK's own (``input_text``, ``input_image``, ``input_file``
for user, system and developer messages; ``output_text`` and ``refusal`` for assistant ones)
and are kept verbatim, so what a client wrote is what it reads back.
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from conversation_service.config import constants
from conversation_service.models.common import InputModel, Metadata, SafeText

MAX_ITEMS_PER_REQUEST = 20
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
]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
INPUT_PART_TYPES = frozenset({"input_text", "input_image", "input_file"})
OUTPUT_PART_TYPES = frozenset({"output_text", "refusal"})


def _check_openai_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_PAIRS:
        raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs")
    for key, item in value.items():
        if not 0 < len(key) <= MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1-{MAX_METADATA_KEY_CHARS} characters")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"values must be at most {MAX_METADATA_VALUE_CHARS} characters")
        if "\x00" in key or "\x00" in item:
            raise ValueError("NUL characters are not allowed")
    return value


OpenAIMetadata = Annotated[
    dict[str, str],
    AfterValidator(_check_openai_metadata),
    Field(description="Up to 16 string pairs; keys up to 64 characters, values up to 512."),
]
BoundedText = Annotated[SafeText, Field(max_length=constants.MAX_MESSAGE_CHARS)]
InlineData = Annotated[SafeText, Field(max_length=MAX_INLINE_DATA_CHARS)]
ShortText = Annotated[SafeText, Field(max_length=constants.MAX_TITLE_CHARS)]


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


class OutputTextPart(InputModel):
    """``output_text``: text an assistant produced, with its annotations."""

    type: Literal["output_text"]
    text: BoundedText
    annotations: list[Metadata] = Field(default_factory=list, max_length=MAX_PART_ENTRIES)
    logprobs: list[Metadata] | None = Field(default=None, max_length=MAX_PART_ENTRIES)


class RefusalPart(InputModel):
    """``refusal``: an assistant's refusal."""

    type: Literal["refusal"]
    refusal: BoundedText


ContentPartIn = Annotated[
    InputTextPart | InputImagePart | InputFilePart | OutputTextPart | RefusalPart,
    Field(discriminator="type"),
]


class MessageItemIn(InputModel):
    """A ``message`` item, the one item type stored. ``content`` may be a plain string.

    An ``id`` is accepted so items read from elsewhere can be replayed, but the store assigns
    its own (``msg_…``).
    """

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[ContentPartIn] = Field(min_length=1, max_length=constants.MAX_CONTENT_PARTS)
    status: ItemStatus | None = None
    id: ShortText | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _message_items_only(cls, data: Any) -> Any:
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

    @model_validator(mode="after")
    def _parts_fit_the_role(self) -> "MessageItemIn":
        allowed = OUTPUT_PART_TYPES if self.role == "assistant" else INPUT_PART_TYPES
        for part in self.content:
            if part.type not in allowed:
                raise PydanticCustomError(
                    "invalid_content_part",
                    "{role} messages take {allowed} content parts, not '{part}'",
                    {"role": self.role, "allowed": " or ".join(sorted(allowed)), "part": part.type},
                )
        if self.phase is not None and self.role != "assistant":
            raise ValueError("phase applies to assistant messages only")
        if sum(len(text) for text in self.texts()) > constants.MAX_MESSAGE_CHARS:
            raise ValueError(f"the text of a message is at most {constants.MAX_MESSAGE_CHARS}")
        return self

    def texts(self) -> list[str]:
        """The text of every text-bearing part, in order."""
        found: list[str] = []
        for part in self.content:
            if isinstance(part, InputTextPart | OutputTextPart):
                found.append(part.text)
            elif isinstance(part, RefusalPart):
                found.append(part.refusal)
        return found


class ConversationCreateIn(InputModel):
    """Body of ``POST /conversations``."""

    items: list[MessageItemIn] | None = Field(default=None, max_length=MAX_ITEMS_PER_REQUEST)
    metadata: OpenAIMetadata | None = None


class ConversationUpdateIn(InputModel):
    """Body of ``POST /conversations/{id}``: the new metadata, replacing the old (null clears)."""

    metadata: OpenAIMetadata | None


class ItemsCreateIn(InputModel):
    """Body of ``POST /conversations/{id}/items``."""

    items: list[MessageItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


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


class MessageItemOut(BaseModel):
    """A ``message`` item as the SDK's ``Message`` type defines it."""

    id: str = Field(examples=["msg_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f"])
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer", "tool"]
    status: ItemStatus
    content: list[dict[str, Any]]
    phase: Literal["commentary", "final_answer"] | None = None


class ItemListOut(BaseModel):
    """A page of items (``list``); page on with ``after=last_id`` while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[MessageItemOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class OpenAIErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope, which the SDK maps to its exception classes by status."""

    error: OpenAIErrorDetail
