"""Time and id sources, in one place so every row uses the same conventions."""

import uuid
from datetime import UTC, datetime

import uuid_utils


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A new UUIDv7 (time-ordered) as a standard-library UUID."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)
