"""API keys for the OpenAI-compatible API: issue (shown once), authenticate, revoke.

A key is ``cs_`` plus 32 random bytes (URL-safe base64). Only its SHA-256 is stored: with 256
bits of entropy a fast hash cannot be brute-forced, and it keeps the per-request lookup to one
unique-index probe. Every request reads the key's row, so a revoked key is refused on the very
next request, on every replica. ``last_used_at`` is written at most once a minute per key so
that reads stay reads.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import api_keys_table as api_keys
from conversation_service.errors import NotFoundError, UnauthorizedError
from conversation_service.services.auth import Principal
from conversation_service.utils.clock import new_id, utcnow

KEY_PREFIX = "cs_"
DISPLAY_PREFIX_CHARS = 10
_KEY_BYTES = 32
# Longer than any key we issue; anything past it is not worth hashing.
_MAX_KEY_CHARS = 128
LAST_USED_GRANULARITY = timedelta(minutes=1)


class ApiKeyNotFoundError(NotFoundError):
    """No API key with this id."""

    code = "api-key-not-found"
    title = "API key not found"


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key with its secret, which exists only in this object and in the caller's hands."""

    id: uuid.UUID
    key: str
    prefix: str
    tenant_id: str
    user_id: str
    name: str | None
    created_at: datetime


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(
    conn: AsyncConnection, *, tenant_id: str, user_id: str, name: str | None = None
) -> IssuedApiKey:
    """Issue a key acting as ``user_id`` in ``tenant_id``."""
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    issued = IssuedApiKey(
        id=new_id(),
        key=key,
        prefix=key[:DISPLAY_PREFIX_CHARS],
        tenant_id=tenant_id,
        user_id=user_id,
        name=name,
        created_at=utcnow(),
    )
    await conn.execute(
        insert(api_keys).values(
            id=issued.id,
            tenant_id=tenant_id,
            user_id=user_id,
            name=name,
            prefix=issued.prefix,
            key_hash=hash_key(key),
            created_at=issued.created_at,
        )
    )
    return issued


async def authenticate(conn: AsyncConnection, presented: str) -> Principal:
    """The principal a live key acts as, or ``UnauthorizedError``."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > _MAX_KEY_CHARS:
        raise UnauthorizedError("invalid API key")
    row = (
        await conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.tenant_id,
                api_keys.c.user_id,
                api_keys.c.revoked_at,
                api_keys.c.last_used_at,
            ).where(api_keys.c.key_hash == hash_key(presented))
        )
    ).one_or_none()
    if row is None:
        raise UnauthorizedError("invalid API key")
    if row.revoked_at is not None:
        raise UnauthorizedError("this API key has been revoked")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        await conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == row.id,
                or_(
                    api_keys.c.last_used_at.is_(None),
                    api_keys.c.last_used_at < now - LAST_USED_GRANULARITY,
                ),
            )
            .values(last_used_at=now)
        )
    return Principal(tenant_id=row.tenant_id, user_id=row.user_id)


async def revoke_api_key(conn: AsyncConnection, key_id: uuid.UUID) -> None:
    """Revoke a key for good; revoking a revoked key changes nothing."""
    found = (
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(
                revoked_at=func.coalesce(
                    api_keys.c.revoked_at, literal(utcnow(), api_keys.c.revoked_at.type)
                )
            )
            .returning(api_keys.c.id)
        )
    ).one_or_none()
    if found is None:
        raise ApiKeyNotFoundError(f"API key {key_id} not found")
