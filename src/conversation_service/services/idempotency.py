"""Idempotency-Key handling for message appends.

Three layers, each for one failure mode:
- an in-process gate answers 409 to a duplicate that arrives while the first is in flight on the
  same process (with SQLite's single writer this is the only place it can be seen);
- on PostgreSQL a transaction-scoped advisory lock does the same across API replicas;
- the record is written in the same transaction as the message, and its primary key makes a
  duplicate row impossible, so a crash leaves neither a message without its record nor a stale
  "in flight" claim.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import IDEMPOTENCY_KEY_TTL
from conversation_service.db.tables import idempotency_table as records
from conversation_service.errors import IdempotencyInFlightError, IdempotencyKeyReusedError
from conversation_service.services.auth import Principal
from conversation_service.utils.clock import utcnow


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    """A key as one user sent it, with the fingerprint of the request that carried it."""

    tenant_id: str
    user_id: str
    key: str
    request_hash: str

    @classmethod
    def build(cls, principal: Principal, key: str, request: dict[str, Any]) -> "IdempotencyScope":
        """Fingerprint ``request`` (canonical JSON) for the caller's ``key``."""
        digest = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return cls(principal.tenant_id, principal.user_id, key, digest)

    def lock_id(self) -> int:
        """A signed 64-bit id for ``pg_advisory_xact_lock``."""
        material = f"{self.tenant_id}\x1f{self.user_id}\x1f{self.key}".encode()
        return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), signed=True)


class InFlightGate:
    """Keys being processed by this process right now."""

    def __init__(self) -> None:
        self._held: set[tuple[str, str, str]] = set()

    @contextmanager
    def hold(self, principal: Principal, key: str) -> Iterator[None]:
        """Hold ``key`` for the caller or raise ``IdempotencyInFlightError``."""
        token = (principal.tenant_id, principal.user_id, key)
        if token in self._held:
            raise IdempotencyInFlightError("a request with this Idempotency-Key is in progress")
        self._held.add(token)
        try:
            yield
        finally:
            self._held.discard(token)


async def find_replay(conn: AsyncConnection, scope: IdempotencyScope) -> dict[str, Any] | None:
    """The stored response for a repeated key, or None when the key is new (or expired).

    Raises ``IdempotencyInFlightError`` if another replica holds the key and
    ``IdempotencyKeyReusedError`` if the key came with a different request.
    """
    if conn.dialect.name == "postgresql":
        locked = (
            await conn.execute(select(func.pg_try_advisory_xact_lock(scope.lock_id())))
        ).scalar_one()
        if not locked:
            raise IdempotencyInFlightError("a request with this Idempotency-Key is in progress")
    where = (
        records.c.tenant_id == scope.tenant_id,
        records.c.user_id == scope.user_id,
        records.c.key == scope.key,
    )
    row = (
        await conn.execute(
            select(records.c.request_hash, records.c.response, records.c.created_at).where(*where)
        )
    ).one_or_none()
    if row is None:
        return None
    if row.created_at < utcnow() - timedelta(seconds=IDEMPOTENCY_KEY_TTL):
        await conn.execute(delete(records).where(*where))
        return None
    if row.request_hash != scope.request_hash:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used with a different request body or conversation"
        )
    response: dict[str, Any] = row.response
    return response


async def record_response(
    conn: AsyncConnection,
    scope: IdempotencyScope,
    *,
    conversation_id: Any,
    status_code: int,
    response: dict[str, Any],
) -> None:
    """Store the response in the same transaction as the work it describes."""
    now = utcnow()
    await conn.execute(
        insert(records).values(
            tenant_id=scope.tenant_id,
            user_id=scope.user_id,
            key=scope.key,
            conversation_id=conversation_id,
            request_hash=scope.request_hash,
            state="completed",
            status_code=status_code,
            response=response,
            created_at=now,
            locked_until=now,
        )
    )
