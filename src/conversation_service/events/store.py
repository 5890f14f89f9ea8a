"""Redis state of streaming messages: the open marker, delta texts and last-delta scores.

A streaming message's deltas live in the hash ``cs:partial:{message_id}`` under their index, and
its last delta time in the sorted set ``cs:streaming``; the hash's marker field ``~c`` (the
conversation id) says the stream is open. ``seal`` removes the marker atomically with reading the
deltas, so nothing can slip in between.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from conversation_service.events.log import (
    OPEN_MARKER,
    OPEN_STREAMS_KEY,
    PARTIAL_TTL,
    partial_key,
)

_OPEN = """
redis.call('HSETNX', KEYS[1], '~c', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), ARGV[2])
return 1
"""

_SEAL = """
local fields = redis.call('HGETALL', KEYS[1])
redis.call('HDEL', KEYS[1], '~c')
return fields
"""

# Drop the open-streams entry of a message whose partial hash is gone (expired or deleted).
_FORGET_IF_GONE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('ZREM', KEYS[2], ARGV[1]) end
return 0
"""

# Claim up to ARGV[3] members idle for ARGV[1] ms, leasing each for ARGV[2] ms.
_CLAIM = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local cutoff = ms - tonumber(ARGV[1])
local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, ARGV[3])
for _, member in ipairs(idle) do
  redis.call('ZADD', KEYS[1], 'XX', cutoff + tonumber(ARGV[2]), member)
end
return idle
"""


@dataclass(frozen=True, slots=True)
class Partial:
    """What Redis holds for a streaming message: its conversation (if open) and delta texts."""

    conversation_id: str | None
    text: str


def _decode(fields: Mapping[Any, Any] | Sequence[Any]) -> Partial:
    if isinstance(fields, Mapping):
        items = list(fields.items())
    else:
        items = list(zip(fields[::2], fields[1::2], strict=True))
    owner: str | None = None
    chunks: list[tuple[int, str]] = []
    for raw_key, raw_value in items:
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        value = raw_value.decode() if isinstance(raw_value, bytes) else str(raw_value)
        if key == OPEN_MARKER:
            owner = value
        elif key.isdigit():
            chunks.append((int(key), value))
    chunks.sort()
    return Partial(owner, "".join(text for _, text in chunks))


class StreamStore:
    """Redis state of streaming messages: open marker, delta texts, last-delta scores."""

    def __init__(self, redis: Redis, *, partial_ttl: int = PARTIAL_TTL) -> None:
        self.redis = redis
        self.partial_ttl = partial_ttl
        self._open = redis.register_script(_OPEN)
        self._seal = redis.register_script(_SEAL)
        self._claim = redis.register_script(_CLAIM)
        self._forget_if_gone = redis.register_script(_FORGET_IF_GONE)

    async def open(self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> None:
        """Accept deltas for the message from now on."""
        await self._open(
            keys=[partial_key(message_id), OPEN_STREAMS_KEY],
            args=[str(conversation_id), str(message_id), self.partial_ttl],
        )

    async def seal(self, message_id: uuid.UUID | str) -> Partial:
        """Stop accepting deltas and return what was received (atomically)."""
        return _decode(await self._seal(keys=[partial_key(message_id)]))

    async def peek(self, message_id: uuid.UUID | str) -> Partial:
        """What was received so far, without closing anything."""
        return _decode(await self.redis.hgetall(partial_key(message_id)))

    async def close(self, message_id: uuid.UUID | str) -> None:
        """Forget the stream (after its final state is committed)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(partial_key(message_id))
            pipe.zrem(OPEN_STREAMS_KEY, str(message_id))
            await pipe.execute()

    async def forget_if_gone(self, message_id: uuid.UUID | str) -> bool:
        """Drop the message from ``cs:streaming`` only if Redis holds no deltas for it."""
        removed = await self._forget_if_gone(
            keys=[partial_key(message_id), OPEN_STREAMS_KEY], args=[str(message_id)]
        )
        return bool(int(removed))

    async def claim_idle(self, idle_ms: int, lease_ms: int, limit: int) -> list[str]:
        """Messages with no delta for ``idle_ms``, each leased to this caller for ``lease_ms``."""
        members = await self._claim(keys=[OPEN_STREAMS_KEY], args=[idle_ms, lease_ms, limit])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]
