"""Shared schema pieces: bounded JSON objects, identifiers, the page envelope."""

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from conversation_service.config import constants

T = TypeVar("T")


def _check_text(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL; refusing it keeps both backends identical.
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


def _check_json_value(value: Any, depth: int) -> None:
    if depth > constants.MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {constants.MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Bound a free-form metadata object: keys, depth, NULs and encoded size."""
    if len(value) > constants.MAX_METADATA_KEYS:
        raise ValueError(f"at most {constants.MAX_METADATA_KEYS} top-level keys")
    for key in value:
        if not key or len(key) > constants.MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1-{constants.MAX_METADATA_KEY_CHARS} characters")
    _check_json_value(value, 1)
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise ValueError(f"not storable as JSON: {exc}") from exc
    if len(encoded) > constants.MAX_METADATA_BYTES:
        raise ValueError(f"larger than {constants.MAX_METADATA_BYTES} bytes once encoded")
    return value


# The schema states what the validators enforce, so a client (or a fuzzer) can know it.
_NO_NUL = r"^[^\x00]*$"
_KEY_SCHEMA = {"minLength": 1, "maxLength": constants.MAX_METADATA_KEY_CHARS, "pattern": _NO_NUL}
SafeText = Annotated[str, StringConstraints(pattern=_NO_NUL)]
# Text with at least one character that is not ASCII whitespace (and no NUL).
NonBlankText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*[^\x00 \t\n\r\f\v][^\x00]*$")]
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=constants.MAX_ID_CHARS, pattern=r"^[^\x00-\x1f]+$"),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(check_metadata),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": True,
            "maxProperties": constants.MAX_METADATA_KEYS,
            "propertyNames": _KEY_SCHEMA,
        }
    ),
    Field(
        description=(
            f"Free-form JSON object: at most {constants.MAX_METADATA_KEYS} keys of 1-"
            f"{constants.MAX_METADATA_KEY_CHARS} characters, {constants.MAX_JSON_DEPTH} levels "
            f"and {constants.MAX_METADATA_BYTES} bytes; no NUL characters."
        )
    ),
]
Tag = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=constants.MAX_TAG_CHARS, pattern=r"^[^\x00-\x1f,]+$"
    ),
]


class InputModel(BaseModel):
    """Request bodies: unknown fields are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class Sentiment(BaseModel):
    """A sentiment label with its score in [-1, 1] and the model that produced it."""

    label: str
    score: float
    model: str | None = None


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paginated list."""

    data: list[T]
    has_more: bool
    next_cursor: str | None = Field(
        description="Opaque cursor for the next page; null on the last page."
    )


def _iso_only(value: object) -> object:
    # Pydantic would read "0.5" as a unix timestamp; the API documents ISO 8601 date-times only.
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


def utc_bound(value: datetime | None) -> datetime | None:
    """Interpret naive query timestamps as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)
