"""Redis state of streaming messages: the open marker, delta texts and the open-streams index.

A streaming message's deltas live in the hash ``cs:partial:{<conversation id>}:<message id>``
under their index, with its last delta time (``~t``, ms on its node's clock); the hash's marker
field ``~c`` (the conversation id) says the stream is open. ``seal`` removes the marker
atomically with reading the deltas, so nothing can slip in between. The hash shares its
conversation's slot, so the delta script (stream + hash) runs on one cluster node.

The idle sweep finds candidates in the sorted set ``cs:streaming`` (members
``<conversation id>/<message id>``), a key of its own slot that no script touches together
with a conversation's keys. It is an index, not the fact, and every write to it is a call of
its own, ordered so that a crash between two calls never loses a stream nor ends a live one:

* ``open`` writes the index entry first, then the hash: a crash in between leaves an entry with
  no hash, which the sweep treats like a stream that received nothing (idle since its open).
* Deltas refresh only the hash's ``~t``. An index score is therefore only ever too old, never
  too new: the sweep claims a candidate, asks its hash how long it has really been idle
  (``idle_for``), and puts a stream that is still active back in the index at its real time
  (``reschedule``) instead of ending it. The cost is one extra call per active stream per idle
  period, paid by the sweep, never by a delta.
* ``forget_if_gone`` drops an entry only if its score is still the lease the sweep took: a
  stream reopened meanwhile was re-scored by its ``open`` and stays indexed.
* ``close`` (after the final state is committed) deletes both, in any order.
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

_NOW_MS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

# KEYS[1]: the index. ARGV[1]: the member, scored now.
_INDEX = _NOW_MS + "return redis.call('ZADD', KEYS[1], ms, ARGV[1])"

# KEYS[1]: the partial hash. ARGV: conversation id, ttl. (``~t`` is ``LAST_DELTA``.)
_OPEN = (
    _NOW_MS
    + """
redis.call('HSETNX', KEYS[1], '~c', ARGV[1])
redis.call('HSET', KEYS[1], '~t', ms)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

_SEAL = """
local fields = redis.call('HGETALL', KEYS[1])
redis.call('HDEL', KEYS[1], '~c')
return fields
"""

# KEYS[1]: the partial hash. Milliseconds since its last delta (or open); -1 when it has no
# time (gone, or written before ``~t`` existed).
_IDLE_FOR = (
    _NOW_MS
    + """
local last = redis.call('HGET', KEYS[1], '~t')
if not last then return -1 end
return ms - tonumber(last)
"""
)

# KEYS[1]: the index. Drop ARGV[1] only while its score is still the lease ARGV[2].
_FORGET_IF_LEASED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

# Claim up to ARGV[3] members idle for ARGV[1] ms, leasing each for ARGV[2] ms. Returns the
# index's clock (ms), the lease score, then the members.
_CLAIM = (
    _NOW_MS
    + """
local cutoff = ms - tonumber(ARGV[1])
local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, ARGV[3])
local leased = cutoff + tonumber(ARGV[2])
for _, member in ipairs(idle) do
  redis.call('ZADD', KEYS[1], 'XX', leased, member)
end
local out = {ms, leased}
for _, member in ipairs(idle) do out[#out + 1] = member end
return out
"""
)


@dataclass(frozen=True, slots=True)
class Partial:
    """What Redis holds for a streaming message: its conversation (if open) and delta texts."""

    conversation_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Claim:
    """Index members the sweep leased: the index's clock and lease score when it took them."""

    now_ms: int
    lease: int
    members: list[str]


def index_member(conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> str:
    """The open-streams index member of a message."""
    return f"{conversation_id}/{message_id}"


def parse_member(member: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """``(conversation id, message id)`` of an index member, or None when it names neither."""
    conversation, _, message = member.partition("/")
    try:
        return uuid.UUID(conversation), uuid.UUID(message)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(fields: Mapping[Any, Any] | Sequence[Any]) -> Partial:
    if isinstance(fields, Mapping):
        items = list(fields.items())
    else:
        items = list(zip(fields[::2], fields[1::2], strict=True))
    owner: str | None = None
    chunks: list[tuple[int, str]] = []
    for raw_key, raw_value in items:
        key, value = _text(raw_key), _text(raw_value)
        if key == OPEN_MARKER:
            owner = value
        elif key.isdigit():
            chunks.append((int(key), value))
    chunks.sort()
    return Partial(owner, "".join(text for _, text in chunks))


class StreamStore:
    """Redis state of streaming messages: open marker, delta texts, open-streams index."""

    def __init__(self, redis: Redis, *, partial_ttl: int = PARTIAL_TTL) -> None:
        self.redis = redis
        self.partial_ttl = partial_ttl
        self._open = redis.register_script(_OPEN)
        self._seal = redis.register_script(_SEAL)
        self._claim = redis.register_script(_CLAIM)
        self._idle_for = redis.register_script(_IDLE_FOR)
        self._forget_if_leased = redis.register_script(_FORGET_IF_LEASED)
        self._index = redis.register_script(_INDEX)

    async def open(self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> None:
        """Accept deltas for the message from now on (index first, then the hash)."""
        await self._index(keys=[OPEN_STREAMS_KEY], args=[index_member(conversation_id, message_id)])
        await self._open(
            keys=[partial_key(conversation_id, message_id)],
            args=[str(conversation_id), self.partial_ttl],
        )

    async def seal(self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> Partial:
        """Stop accepting deltas and return what was received (atomically)."""
        return _decode(await self._seal(keys=[partial_key(conversation_id, message_id)]))

    async def peek(self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> Partial:
        """What was received so far, without closing anything."""
        return _decode(await self.redis.hgetall(partial_key(conversation_id, message_id)))

    async def close(self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> None:
        """Forget the stream (after its final state is committed)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(partial_key(conversation_id, message_id))
            pipe.zrem(OPEN_STREAMS_KEY, index_member(conversation_id, message_id))
            await pipe.execute()

    async def drop_member(self, member: str) -> None:
        """Remove an index member that names no message (written by something else)."""
        await self.redis.zrem(OPEN_STREAMS_KEY, member)

    async def idle_for(
        self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str
    ) -> int | None:
        """Milliseconds since the stream's last delta or open; None when Redis has no time."""
        idle = int(await self._idle_for(keys=[partial_key(conversation_id, message_id)]))
        return None if idle < 0 else idle

    async def reschedule(self, member: str, score: int) -> None:
        """Put a claimed member back in the index at ``score`` (it is still active)."""
        await self.redis.zadd(OPEN_STREAMS_KEY, {member: score}, xx=True)

    async def forget_if_gone(self, claim: Claim, member: str) -> bool:
        """Drop a claimed member whose hash is gone, unless it was reopened since the claim."""
        conversation_and_message = parse_member(member)
        if conversation_and_message is not None and await self.redis.exists(
            partial_key(*conversation_and_message)
        ):
            return False
        removed = await self._forget_if_leased(keys=[OPEN_STREAMS_KEY], args=[member, claim.lease])
        return bool(int(removed))

    async def claim_idle(self, idle_ms: int, lease_ms: int, limit: int) -> Claim:
        """Members with no index refresh for ``idle_ms``, each leased to this caller."""
        raw = await self._claim(keys=[OPEN_STREAMS_KEY], args=[idle_ms, lease_ms, limit])
        return Claim(int(raw[0]), int(raw[1]), [_text(m) for m in raw[2:]])
