"""Schemas of OpenAI conversation items other than ``message``, and the request and list bodies
that carry items of every type.

The four tool items the history links (``function_call``, ``function_call_output``,
``custom_tool_call``, ``custom_tool_call_output``) and ``reasoning`` have their required fields
checked here, so a malformed one is a 400 that names the field. Every other type (the hosted tool
calls, computer, shell, patch and MCP items, ``compaction``, and any type the SDK adds later) is
kept opaque: an object with a ``type`` string, stored whole and returned as it was sent. Unknown
fields of any non-message item are kept too. ``item_reference`` points at an item instead of
carrying one, so it is refused.
"""

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from conversation_service.models.common import InputModel, check_json_document
from conversation_service.models.openai_compat import (
    MAX_ITEMS_PER_REQUEST,
    ConversationObject,
    ItemStatus,
    MessageItemIn,
    MessageItemOut,
    OpenAIMetadata,
    ShortText,
)

ItemType = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
]
_REFUSED_TYPES = frozenset({"item_reference"})


class ToolItemIn(BaseModel):
    """Any item that is not a ``message``: kept whole, unknown fields included."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: ItemType
    id: ShortText | None = Field(default=None, description="Kept: the item reads back with it.")

    @model_validator(mode="after")
    def _storable(self) -> Self:
        # The whole item, unknown fields included, through the one check of free-form JSON.
        check_json_document(self.model_dump())
        return self

    def as_json(self) -> dict[str, Any]:
        """The item as the client sent it (fields it left out stay out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class FunctionCallIn(ToolItemIn):
    """``function_call``: the model calls one of the client's functions."""

    type: Literal["function_call"]
    call_id: ShortText
    name: ShortText
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputIn(ToolItemIn):
    """``function_call_output``: what the function returned (text, or content parts)."""

    type: Literal["function_call_output"]
    call_id: ShortText
    output: str | list[dict[str, Any]]
    status: ItemStatus | None = None


class CustomToolCallIn(ToolItemIn):
    """``custom_tool_call``: the model calls a custom (free-form input) tool."""

    type: Literal["custom_tool_call"]
    call_id: ShortText
    name: ShortText
    input: str


class CustomToolCallOutputIn(ToolItemIn):
    """``custom_tool_call_output``: what the custom tool returned."""

    type: Literal["custom_tool_call_output"]
    call_id: ShortText
    output: str | list[dict[str, Any]]


class ReasoningIn(ToolItemIn):
    """``reasoning``: the model's reasoning summary (and its encrypted content, if kept)."""

    type: Literal["reasoning"]
    summary: list[dict[str, Any]]
    encrypted_content: str | None = None


TYPED_ITEMS: dict[str, type[ToolItemIn]] = {
    "function_call": FunctionCallIn,
    "function_call_output": FunctionCallOutputIn,
    "custom_tool_call": CustomToolCallIn,
    "custom_tool_call_output": CustomToolCallOutputIn,
    "reasoning": ReasoningIn,
}
_OPAQUE = "opaque_item"


def _item_kind(data: Any) -> str:
    if isinstance(data, BaseModel):
        data = {"type": getattr(data, "type", "message")}
    if not isinstance(data, dict):
        return "message"  # the message model reports the wrong shape
    kind = data.get("type", "message")
    if kind == "message":
        return "message"
    return kind if kind in TYPED_ITEMS else _OPAQUE


def _refuse_references(data: Any) -> Any:
    if isinstance(data, dict) and data.get("type") in _REFUSED_TYPES:
        raise PydanticCustomError(
            "unsupported_item_type",
            "item type '{kind}' is not supported: send the item itself",
            {"kind": str(data["type"])},
        )
    return data


# An item of any type: a ``message`` (checked part by part), a typed tool item, or an opaque one.
ItemIn = Annotated[
    Annotated[MessageItemIn, Tag("message")]
    | Annotated[FunctionCallIn, Tag("function_call")]
    | Annotated[FunctionCallOutputIn, Tag("function_call_output")]
    | Annotated[CustomToolCallIn, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutputIn, Tag("custom_tool_call_output")]
    | Annotated[ReasoningIn, Tag("reasoning")]
    | Annotated[ToolItemIn, Tag(_OPAQUE)],
    Discriminator(_item_kind),
    BeforeValidator(_refuse_references),
]
# Union tags pydantic puts in an error's location right after a list index (not parameters).
ITEM_TAGS = frozenset({"message", _OPAQUE, *TYPED_ITEMS})


class ConversationCreateIn(InputModel):
    """Body of ``POST /conversations``. Other parameters a newer SDK sends (``safety_identifier``
    and the like) are accepted and ignored: they steer a model, and this service runs none."""

    model_config = InputModel.model_config | {"extra": "ignore"}

    items: list[ItemIn] | None = Field(default=None, max_length=MAX_ITEMS_PER_REQUEST)
    metadata: OpenAIMetadata | None = None


class ItemsCreateIn(InputModel):
    """Body of ``POST /conversations/{id}/items``."""

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class OpaqueItemOut(BaseModel):
    """An item that is not a ``message``, returned as it was stored (every field of its type)."""

    model_config = ConfigDict(extra="allow")

    id: str
    # Not "message", which MessageItemOut describes: a response matches exactly one of the two.
    type: str = Field(json_schema_extra={"not": {"const": "message"}})


def _out_kind(data: Any) -> str:
    kind = data.get("type") if isinstance(data, dict) else getattr(data, "type", None)
    return "message" if kind == "message" else "other"


ItemOut = Annotated[
    Annotated[MessageItemOut, Tag("message")] | Annotated[OpaqueItemOut, Tag("other")],
    Discriminator(_out_kind),
]


class ItemListOut(BaseModel):
    """A page of items (``list``); page on with ``after=last_id`` while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[ItemOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ConversationListOut(BaseModel):
    """A page of conversations (``list``); page on with ``after=last_id`` while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[ConversationObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
