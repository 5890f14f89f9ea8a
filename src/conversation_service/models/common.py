"""Shared schema pieces: bounded JSON objects, identifiers, the page envelope."""

import math
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


class _UnstorableError(Exception):
    """A value free-form JSON cannot hold; ``path`` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise _UnstorableError("NUL characters are not allowed")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _UnstorableError("lone surrogates are not text") from None


def _check_json_value(value: object, depth: int) -> None:
    if depth > constants.MAX_JSON_DEPTH:
        raise _UnstorableError(f"nested deeper than {constants.MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, float):
        # Python's JSON parsers accept NaN and Infinity, which JSON has no spelling for.
        if not math.isfinite(value):
            raise _UnstorableError("NaN and Infinity are not JSON numbers")
    elif isinstance(value, int):
        if not constants.MIN_JSON_INT <= value <= constants.MAX_JSON_INT:
            raise _UnstorableError("integers must fit in 64 bits")
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                if not isinstance(key, str):
                    raise _UnstorableError("object keys must be strings")
                _check_string(key)
                _check_json_value(item, depth + 1)
            except _UnstorableError as exc:
                # repr escapes NUL and surrogates, so the message itself stays storable.
                exc.path.append(f"[{str(key)[:32]!r}]")
                raise
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check_json_value(item, depth + 1)
            except _UnstorableError as exc:
                exc.path.append(f"[{index}]")
                raise


def check_json(value: T) -> T:
    """The one check of free-form JSON, on every route and transport.

    Refuses what PostgreSQL or the JSON encoder cannot store, and what is not JSON although
    Python's parsers accept it: nesting past ``MAX_JSON_DEPTH``, NUL and lone surrogates in
    keys and strings, NaN and Infinity, integers beyond 64 bits, and more than
    ``MAX_METADATA_BYTES`` once encoded. The error says where inside the value it failed.
    """
    encoded = _checked_encoding(value)
    if len(encoded) > constants.MAX_METADATA_BYTES:
        raise ValueError(f"larger than {constants.MAX_METADATA_BYTES} bytes once encoded")
    return value


def check_json_document(value: T) -> T:
    """``check_json`` without its size bound, for whole documents a client stores (a ``/v1``
    item, whose tool output may be long): the request body limit bounds them."""
    _checked_encoding(value)
    return value


def _checked_encoding(value: Any) -> bytes:
    try:
        _check_json_value(value, 1)
    except _UnstorableError as exc:
        where = "".join(reversed(exc.path))
        raise ValueError(f"{exc.reason} (at {where})" if where else exc.reason) from None
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # anything the walk above does not know of
        raise ValueError(f"not storable as JSON: {exc}") from exc


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Bound a free-form metadata object: its top-level keys, then ``check_json``."""
    if len(value) > constants.MAX_METADATA_KEYS:
        raise ValueError(f"at most {constants.MAX_METADATA_KEYS} top-level keys")
    for key in value:
        if not key or len(key) > constants.MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1-{constants.MAX_METADATA_KEY_CHARS} characters")
    return check_json(value)


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
_FREE_FORM = (
    f"at most {constants.MAX_JSON_DEPTH} levels and {constants.MAX_METADATA_BYTES} bytes; no NUL "
    "characters, lone surrogates, NaN, Infinity or integers beyond 64 bits."
)
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
            f"{constants.MAX_METADATA_KEY_CHARS} characters, {_FREE_FORM}"
        )
    ),
]
FreeJson = Annotated[
    Any, AfterValidator(check_json), Field(description=f"Any JSON value: {_FREE_FORM}")
]
FreeJsonDocument = Annotated[
    dict[str, Any] | list[Any],
    AfterValidator(check_json),
    Field(description=f"A JSON object or array: {_FREE_FORM}"),
]
Tag = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=constants.MAX_TAG_CHARS, pattern=r"^[^\x00-\x1f,]+$"
    ),
]


class InputModel(BaseModel):
    """Request bodies: unknown fields are refused so typos never pass silently, and a number
    field refuses NaN and Infinity (which Python's JSON parsers accept and JSON does not have)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
