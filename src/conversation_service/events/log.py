"""The per-conversation event log: event model, publisher and replay reader.

Every change to a conversation is an event ``{"id", "type", "conversation_id", "data"}``. The
``id`` is the entry id of the conversation's Redis Stream ``cs:events:{<conversation id>}``
(``"<ms>-<seq>"``), so it increases within the conversation. Publishing is one Lua script that
appends to the stream (capped near ``EVENT_STREAM_MAXLEN`` entries, expiring
``EVENT_STREAM_TTL`` after the last event) and publishes the finished frame on the pub/sub
channel ``cs:live:{<conversation id>}`` in the same atomic step, so the live order on every
replica is the stream order even with concurrent publishers on different replicas.

Every key and channel of one conversation carries its id as the hash tag ``{<conversation id>}``:
on a Redis Cluster they share one slot, so each script runs on one node, and the live channel is
a shard channel of that node (``SPUBLISH`` instead of ``PUBLISH`` when ``sharded``).

The stream is the hot tail; the database holds the durable facts. A reader that resumes after an
id older than the tail (trimmed or expired stream) is told so (``ReplayChunk.gap``) and gets a
snapshot built from the database instead (see ``services.streaming.snapshot_frame``).

``typing`` is ephemeral: it goes to pub/sub only and has no id (``"id": null``), so it is never
replayed and never moves a client's resume position.

Redis errors never fail a request: ``publish_safely`` logs and returns None (the database is the
durable fact; a client that missed an event gets it on its next resume or snapshot).
"""

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from conversation_service.utils import jsonio
from conversation_service.utils.redis_client import as_cluster, run_replicated

log = logging.getLogger(__name__)

EVENT_STREAM_MAXLEN: Final = 10_000
EVENT_STREAM_TTL: Final = 24 * 60 * 60
# The partial content of a streaming message (Redis hash of deltas by index).
PARTIAL_TTL: Final = 24 * 60 * 60
# Index of streaming messages (members ``<conversation id>/<message id>``) scored by the last
# time the idle sweep should look at them (ms, Redis clock). It lives in a slot of its own and
# no script touches it together with a conversation's keys (see ``events.store``).
OPEN_STREAMS_KEY: Final = "cs:streaming"
# Hash field of a partial hash that marks the stream open (value: conversation id).
OPEN_MARKER: Final = "~c"
# Hash field of a partial hash holding its last delta time (ms, Redis clock of its node).
LAST_DELTA: Final = "~t"


class EventType(StrEnum):
    """Types of the events in a conversation's log."""

    MESSAGE_CREATED = "message.created"
    MESSAGE_DELTA = "message.delta"
    MESSAGE_COMPLETED = "message.completed"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_UPDATED = "message.updated"
    MESSAGE_DELETED = "message.deleted"
    MESSAGE_FEEDBACK = "message.feedback"
    CONVERSATION_UPDATED = "conversation.updated"
    CONVERSATION_AGENT_CHANGED = "conversation.agent_changed"
    CONVERSATION_BRANCH_CHANGED = "conversation.branch_changed"
    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    SUMMARY_UPDATED = "summary.updated"
    SENTIMENT_UPDATED = "sentiment.updated"
    CONTEXT_UPDATED = "context.updated"
    TYPING = "typing"


EventId = tuple[int, int]
_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
MAX_EVENT_ID_PART: Final = 2**64 - 1


def conversation_tag(conversation_id: uuid.UUID | str) -> str:
    """The hash tag that keeps every key of a conversation in one cluster slot."""
    return "{" + str(conversation_id) + "}"


def events_key(conversation_id: uuid.UUID | str) -> str:
    """Redis Stream of a conversation's events."""
    return f"cs:events:{conversation_tag(conversation_id)}"


def live_channel(conversation_id: uuid.UUID | str) -> str:
    """Pub/sub channel of a conversation's live events (a shard channel on a cluster)."""
    return f"cs:live:{conversation_tag(conversation_id)}"


def partial_key(conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> str:
    """Redis hash of a streaming message's deltas (field = index), open marker and last delta."""
    return f"cs:partial:{conversation_tag(conversation_id)}:{message_id}"


def summary_lock_key(conversation_id: uuid.UUID | str) -> str:
    """The lock that keeps one summary job per conversation at a time."""
    return f"cs:summary-lock:{conversation_tag(conversation_id)}"


def parse_event_id(value: str | bytes | None) -> EventId | None:
    """``"<ms>-<seq>"`` as a comparable tuple, or None when it is not an event id."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    match = _EVENT_ID.match(text)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    # Redis stream ids are two unsigned 64-bit numbers; anything larger names no event.
    if ms > MAX_EVENT_ID_PART or seq > MAX_EVENT_ID_PART:
        return None
    return ms, seq


def format_event_id(event_id: EventId) -> str:
    """The wire form of an event id."""
    return f"{event_id[0]}-{event_id[1]}"


def event_tail(event_type: str, conversation_id: uuid.UUID | str, data: Any) -> bytes:
    """The frame without its opening ``{"id":…,`` part: what the stream stores."""
    body = jsonio.dumps({"type": event_type, "conversation_id": str(conversation_id), "data": data})
    return body[1:]


def build_frame(event_id: str | None, tail: bytes | str) -> str:
    """The server frame for a stored tail: ``{"id":…,"type":…,"conversation_id":…,"data":…}``."""
    text = tail.decode() if isinstance(tail, bytes) else tail
    if event_id is None:
        return '{"id":null,' + text
    return '{"id":"' + event_id + '",' + text


def control_frame(
    frame_type: str, conversation_id: uuid.UUID | str | None = None, data: Any = None
) -> str:
    """A frame that is not in the log (subscribed, snapshot, error, pong, heartbeat…)."""
    return build_frame(
        None,
        orjson.dumps(
            {
                "type": frame_type,
                "conversation_id": str(conversation_id) if conversation_id else None,
                "data": data,
            }
        )[1:],
    )


# Shared by both scripts: append one stream entry and publish "<id> <frame>" on the channel
# (PUBLISH, or SPUBLISH on a cluster: the script is built for one of them).
_APPEND = """
local function append(stream, channel, tail, maxlen)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'b', tail)
  redis.call('@PUBLISH@', channel, id .. ' {"id":"' .. id .. '",' .. tail)
  return id
end
"""

_PUBLISH = (
    _APPEND
    + """
local id = append(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
)

# KEYS: stream, partial hash (one slot). ARGV: channel, conversation id, message id,
# maxlen, stream ttl, partial ttl, then (index, text, tail) per delta. The last delta time goes
# to the hash (``~t``), where the idle sweep reads it; the open-streams index is not touched.
# Returns {0, id-or-"" per delta} or {-1} (stream not open) or {-2} (other conversation).
_DELTAS = (
    _APPEND
    + """
local owner = redis.call('HGET', KEYS[2], '~c')
if not owner then return {-1} end
if owner ~= ARGV[2] then return {-2} end
local out = {0}
local published = false
for i = 7, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    out[#out + 1] = append(KEYS[1], ARGV[1], ARGV[i + 2], ARGV[4])
    published = true
  else
    out[#out + 1] = ''
  end
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], '~t', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
redis.call('EXPIRE', KEYS[2], ARGV[6])
if published then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return out
"""
)


class StreamNotOpenError(Exception):
    """Deltas were sent for a message whose stream is not open in Redis."""


class StreamOwnerMismatchError(Exception):
    """Deltas named a conversation that the streaming message does not belong to."""


@dataclass(frozen=True, slots=True)
class Delta:
    """One chunk of a streaming message; ``index`` makes a re-sent chunk harmless."""

    index: int
    text: str


class EventPublisher:
    """Appends events to a conversation's log and fans them out to every replica.

    Usable outside a request (workers): ``await EventPublisher(redis).publish(cid, type, data)``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        maxlen: int = EVENT_STREAM_MAXLEN,
        ttl: int = EVENT_STREAM_TTL,
        partial_ttl: int = PARTIAL_TTL,
        on_published: Callable[[str, int], None] | None = None,
    ) -> None:
        self.redis = redis
        # Told the type and count of what was published (the process's events counter).
        self.on_published = on_published
        self.maxlen = maxlen
        self.ttl = ttl
        self.partial_ttl = partial_ttl
        # Sharded pub/sub on a cluster: a classic PUBLISH is broadcast to every node.
        self.sharded = as_cluster(redis) is not None
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        self._publish = redis.register_script(_PUBLISH.replace("@PUBLISH@", command))
        self._deltas = redis.register_script(_DELTAS.replace("@PUBLISH@", command))

    async def publish(self, conversation_id: uuid.UUID | str, event_type: str, data: Any) -> str:
        """Append an event and publish it live; returns its id (raises on Redis errors)."""
        cid = str(conversation_id)
        tail = event_tail(event_type, cid, data)
        event_id = await run_replicated(
            self.redis,
            self._publish,
            [events_key(cid)],
            [live_channel(cid), tail, self.maxlen, self.ttl],
        )
        if self.on_published is not None:
            self.on_published(event_type, 1)
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def publish_safely(
        self, conversation_id: uuid.UUID | str, event_type: str, data: Any
    ) -> str | None:
        """``publish`` that logs Redis errors instead of raising (after-commit hooks)."""
        try:
            return await self.publish(conversation_id, event_type, data)
        except (RedisError, OSError) as exc:
            log.warning(
                "event not published",
                extra={
                    "conversation_id": str(conversation_id),
                    "type": event_type,
                    "error": str(exc),
                },
            )
            return None

    async def publish_ephemeral(
        self, conversation_id: uuid.UUID | str, event_type: str, data: Any
    ) -> None:
        """Publish live only, without an id (typing indicators): never replayed."""
        cid = str(conversation_id)
        frame = build_frame(None, event_tail(event_type, cid, data))
        if self.sharded:
            await self.redis.spublish(live_channel(cid), "- " + frame)
        else:
            await self.redis.publish(live_channel(cid), "- " + frame)
        if self.on_published is not None:
            self.on_published(event_type, 1)

    async def publish_deltas(
        self, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str, deltas: Sequence[Delta]
    ) -> list[str | None]:
        """Record and publish deltas of an open stream, atomically; a re-sent index is skipped.

        Returns the event id per delta (None for a repeat). Raises ``StreamNotOpenError`` or
        ``StreamOwnerMismatchError``.
        """
        cid, mid = str(conversation_id), str(message_id)
        args: list[Any] = [live_channel(cid), cid, mid, self.maxlen, self.ttl, self.partial_ttl]
        for delta in deltas:
            data = {"message_id": mid, "index": delta.index, "text": delta.text}
            args.extend((delta.index, delta.text, event_tail(EventType.MESSAGE_DELTA, cid, data)))
        result = await run_replicated(
            self.redis, self._deltas, [events_key(cid), partial_key(cid, mid)], args
        )
        status = int(result[0])
        if status == -1:
            raise StreamNotOpenError(mid)
        if status == -2:
            raise StreamOwnerMismatchError(mid)
        if self.on_published is not None:
            self.on_published(EventType.MESSAGE_DELTA.value, sum(1 for item in result[1:] if item))
        return [
            (item.decode() if isinstance(item, bytes) else str(item)) or None for item in result[1:]
        ]


@dataclass(frozen=True, slots=True)
class ReplayEntry:
    """One stored event, ready to send."""

    id: EventId
    id_text: str
    frame: str


@dataclass(frozen=True, slots=True)
class ReplayChunk:
    """Events after a position; ``gap`` means events after it are no longer in the stream."""

    entries: list[ReplayEntry]
    gap: bool


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_after(
    redis: Redis, conversation_id: uuid.UUID | str, after: EventId | None, *, count: int
) -> ReplayChunk:
    """Up to ``count`` events after ``after`` (all from the start when None), in order.

    With a position, ``gap`` is true when the stream cannot prove it still holds everything
    after it: the stream is gone, the position is older than its first entry (trimmed from
    the head, or from an expired incarnation of the stream), or the position is ahead of
    anything this stream ever issued. A position equal to the last trimmed entry is also
    reported as a gap (the stream cannot tell): the cost is a snapshot, never a lost event.
    """
    key = events_key(conversation_id)
    start = "-" if after is None else "(" + format_event_id(after)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xinfo_stream(key)
        pipe.xrange(key, min=start, max="+", count=count)
        info, entries = await pipe.execute(raise_on_error=False)
    if isinstance(entries, Exception):
        raise entries
    if after is not None:
        if isinstance(info, ResponseError):
            return ReplayChunk([], gap=True)
        if isinstance(info, Exception):
            raise info
        last_generated = parse_event_id(_as_text(info.get("last-generated-id", "0-0")))
        first_entry = info.get("first-entry")
        first = parse_event_id(_as_text(first_entry[0])) if first_entry else None
        if last_generated is None or after > last_generated:
            return ReplayChunk([], gap=True)
        if (first is not None and after < first) or (first is None and after < last_generated):
            return ReplayChunk([], gap=True)
    out: list[ReplayEntry] = []
    for raw_id, fields in entries:
        id_text = _as_text(raw_id)
        event_id = parse_event_id(id_text)
        assert event_id is not None
        out.append(ReplayEntry(event_id, id_text, build_frame(id_text, fields[b"b"])))
    return ReplayChunk(out, gap=False)


async def head(redis: Redis, conversation_id: uuid.UUID | str) -> str | None:
    """The id of the newest event of a conversation (None when its stream is gone)."""
    newest = await redis.xrevrange(events_key(conversation_id), max="+", min="-", count=1)
    if not newest:
        return None
    return _as_text(newest[0][0])
