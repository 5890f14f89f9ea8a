"""Agent-side streaming: messages that grow by deltas, their completion, failure and idle expiry.

Deltas never touch the database. Each one is recorded in the Redis hash
``cs:partial:{message_id}`` under its index (``HSETNX``: a re-sent index is harmless) and
published as ``message.delta`` in the same Lua call (``EventPublisher.publish_deltas``), which
also refreshes the message's score in the sorted set ``cs:streaming`` (last delta time, Redis
clock). The partial content is the message's initial content followed by the delta texts in
index order. It is persisted when the message completes, fails or is found idle; until then
it lives in Redis (persistence on), which survives API restarts. It is not flushed to the
database periodically: losing Redis itself loses the partial text of replies in flight, which
then end ``incomplete`` with what the database holds.

The hash's marker field ``~c`` (the conversation id) says the stream is open. ``complete``,
``fail`` and the idle sweep remove it atomically with reading the deltas ("seal"), so nothing
can slip in between; a delta for a sealed or unknown stream is checked against the database,
which reopens a stream that Redis lost but the database still calls ``streaming``.

Idle sweep: a message with no delta for ``stream_idle_timeout`` becomes ``incomplete`` with its
partial content kept. Every replica sweeps; a claim in Redis (lease) spreads candidates and the
conditional ``UPDATE … WHERE status = 'streaming'`` decides the one winner, which alone publishes.
A claimed message that the sweeper's database does not hold belongs to another deployment sharing
the Redis database (test runs, staging next to CI): its deltas are left alone, and only its entry
in ``cs:streaming`` is dropped, once its partial hash has expired. (Dropping both, as the sweep once
did, cost a reply its partial content whenever its agent paused longer than a neighbour's idle
timeout, e.g. across an API restart.)
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import (
    ConversationNotFoundError,
    MessageNotFoundError,
    MessageNotStreamingError,
)
from conversation_service.models.message import MessageOut, MessageStatus, Role
from conversation_service.models.session import SessionOut
from conversation_service.models.streaming import AgentMessageCreate, StreamComplete
from conversation_service.services import message_store, sessions
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import (
    get_conversation_for_service,
    require_owned,
)
from conversation_service.utils.clock import utcnow
from conversation_service.utils.json_merge import merge_patch
from conversation_service.websocket import events
from conversation_service.websocket.events import (
    OPEN_MARKER,
    OPEN_STREAMS_KEY,
    Delta,
    EventPublisher,
    EventType,
    StreamNotOpenError,
    StreamOwnerMismatchError,
    partial_key,
)

log = logging.getLogger(__name__)

SNAPSHOT_MESSAGES = 50
IDLE_ERROR = "stream idle timeout"

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

_STATE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.role,
    messages.c.content,
    messages.c.status,
    messages.c.metadata,
    messages.c.token_count,
)


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

    def __init__(self, redis: Redis, *, partial_ttl: int = events.PARTIAL_TTL) -> None:
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


async def principal_of(conn: AsyncConnection, conversation_id: uuid.UUID) -> Principal:
    """The owner of a conversation (tenant and user), for writes made on their behalf."""
    row = (
        await conn.execute(
            select(conversations.c.tenant_id, conversations.c.user_id).where(
                conversations.c.id == conversation_id, conversations.c.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return Principal(tenant_id=row.tenant_id, user_id=row.user_id)


async def create_agent_message(
    conn: AsyncConnection, conversation_id: uuid.UUID, data: AgentMessageCreate
) -> dict[str, Any]:
    """Append an agent/tool/system message (``streaming`` or ``completed``) as JSON."""
    principal = await principal_of(conn, conversation_id)
    draft = message_store.MessageDraft(
        role=Role(data.role),
        content=data.content,
        metadata=data.metadata,
        status=MessageStatus(data.status),
        parent_id=data.parent_id,
    )
    result = await message_store.append_message(conn, principal, conversation_id, draft)
    return result.message


async def after_create(
    publisher: EventPublisher, store: StreamStore, message: Mapping[str, Any]
) -> None:
    """After commit: open the stream of a streaming message, then publish ``message.created``."""
    conversation_id = message["conversation_id"]
    if message["status"] == MessageStatus.STREAMING.value:
        try:
            await store.open(conversation_id, message["id"])
        except (RedisError, OSError) as exc:
            # Deltas reopen it from the database state.
            log.warning("stream not opened", extra={"message_id": message["id"], "error": str(exc)})
    await publisher.publish_safely(conversation_id, EventType.MESSAGE_CREATED, {"message": message})


async def append_deltas(
    publisher: EventPublisher,
    store: StreamStore,
    engine: AsyncEngine,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    deltas: Sequence[Delta],
) -> list[str | None]:
    """Record and publish deltas; returns the event id per delta (None for a repeat).

    The database is read only when Redis does not know the stream (lost or sealed).
    """
    try:
        return await publisher.publish_deltas(conversation_id, message_id, deltas)
    except StreamOwnerMismatchError as exc:
        raise MessageNotFoundError(f"message {message_id} not found") from exc
    except StreamNotOpenError:
        pass
    async with engine.connect() as conn:
        row = await _load_state(conn, conversation_id, message_id, lock=False)
    if row["status"] != MessageStatus.STREAMING.value:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    await store.open(conversation_id, message_id)
    try:
        return await publisher.publish_deltas(conversation_id, message_id, deltas)
    except (StreamNotOpenError, StreamOwnerMismatchError) as exc:
        raise MessageNotStreamingError(f"message {message_id} is no longer streaming") from exc


async def _load_state(
    conn: AsyncConnection, conversation_id: uuid.UUID, message_id: uuid.UUID, *, lock: bool
) -> RowMapping:
    stmt = (
        select(*_STATE_COLUMNS)
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(
            messages.c.id == message_id,
            messages.c.conversation_id == conversation_id,
            messages.c.deleted_at.is_(None),
            conversations.c.deleted_at.is_(None),
        )
    )
    if lock:
        stmt = stmt.with_for_update(of=messages)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        raise MessageNotFoundError(f"message {message_id} not found")
    return row


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """A message after complete/fail; ``changed`` is false for a repeated call (no event)."""

    message: MessageOut
    changed: bool
    error: str | None = None


async def _finish(
    conn: AsyncConnection,
    row: RowMapping,
    *,
    content: str,
    status: MessageStatus,
    metadata: dict[str, Any],
    only_if_streaming: bool = False,
) -> MessageOut | None:
    tokens = await message_store.count_message_tokens(row["role"], content)
    now = utcnow()
    where = [messages.c.id == row["id"]]
    if only_if_streaming:
        where.append(messages.c.status == MessageStatus.STREAMING.value)
    updated = (
        (
            await conn.execute(
                update(messages)
                .where(*where)
                .values(
                    content=content,
                    status=status.value,
                    metadata=metadata,
                    tokens_cl100k=tokens["cl100k_base"],
                    tokens_o200k=tokens["o200k_base"],
                    token_count=tokens["o200k_base"],
                    always_include=message_store.is_always_included(row["role"], metadata),
                    updated_at=now,
                )
                .returning(*message_store.MESSAGE_COLUMNS)
            )
        )
        .mappings()
        .one_or_none()
    )
    if updated is None:
        return None
    difference = tokens["o200k_base"] - (row["token_count"] or 0)
    await conn.execute(
        update(conversations)
        .where(conversations.c.id == row["conversation_id"])
        .values(token_count=conversations.c.token_count + difference, updated_at=now)
    )
    return message_store.to_out(updated)


_COMPLETABLE = frozenset(
    {MessageStatus.STREAMING.value, MessageStatus.PENDING.value, MessageStatus.INCOMPLETE.value}
)
_FAILABLE = frozenset({MessageStatus.STREAMING.value, MessageStatus.PENDING.value})


async def complete_message(
    conn: AsyncConnection,
    store: StreamStore,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    data: StreamComplete,
) -> StreamOutcome:
    """Persist the final content (the body's, or the partial one) and mark it completed.

    Completing an ``incomplete`` message (the agent came back after the idle timeout) is
    allowed; completing a completed one again changes nothing.
    """
    row = await _load_state(conn, conversation_id, message_id, lock=True)
    if row["status"] == MessageStatus.COMPLETED.value:
        return StreamOutcome(await _current(conn, message_id), changed=False)
    if row["status"] not in _COMPLETABLE:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    partial = await store.seal(message_id)
    content = data.content if data.content is not None else row["content"] + partial.text
    metadata = row["metadata"]
    if data.metadata is not None:
        metadata = merge_patch(metadata, data.metadata)
    message = await _finish(
        conn, row, content=content, status=MessageStatus.COMPLETED, metadata=metadata
    )
    assert message is not None
    return StreamOutcome(message, changed=True)


async def fail_message(
    conn: AsyncConnection,
    store: StreamStore,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    error: str,
) -> StreamOutcome:
    """Mark a streaming message failed, keeping its partial content and the error."""
    row = await _load_state(conn, conversation_id, message_id, lock=True)
    if row["status"] == MessageStatus.FAILED.value:
        return StreamOutcome(await _current(conn, message_id), changed=False, error=error)
    if row["status"] not in _FAILABLE:
        raise MessageNotStreamingError(f"message {message_id} is {row['status']}")
    partial = await store.seal(message_id)
    metadata = {**row["metadata"], "error": error}
    message = await _finish(
        conn,
        row,
        content=row["content"] + partial.text,
        status=MessageStatus.FAILED,
        metadata=metadata,
    )
    assert message is not None
    return StreamOutcome(message, changed=True, error=error)


async def _current(conn: AsyncConnection, message_id: uuid.UUID) -> MessageOut:
    row = (
        (
            await conn.execute(
                select(*message_store.MESSAGE_COLUMNS).where(messages.c.id == message_id)
            )
        )
        .mappings()
        .one()
    )
    return message_store.to_out(row)


async def after_finish(
    publisher: EventPublisher, store: StreamStore, outcome: StreamOutcome
) -> None:
    """After commit: publish ``message.completed`` / ``message.failed`` and forget the stream."""
    if not outcome.changed:
        return
    message = outcome.message
    payload: dict[str, Any] = {"message": message.model_dump(mode="json")}
    if message.status is MessageStatus.COMPLETED:
        event_type = EventType.MESSAGE_COMPLETED
    else:
        event_type = EventType.MESSAGE_FAILED
        payload["error"] = outcome.error
    await publisher.publish_safely(message.conversation_id, event_type, payload)
    try:
        await store.close(message.id)
    except (RedisError, OSError) as exc:
        # The sweep drops the leftover entry later (its conditional update matches nothing).
        log.warning(
            "stream state not cleared", extra={"message_id": str(message.id), "error": str(exc)}
        )


async def mark_incomplete(
    conn: AsyncConnection, store: StreamStore, message_id: uuid.UUID
) -> MessageOut | None:
    """Mark an idle streaming message ``incomplete`` with its partial content (None if it no
    longer streams: another replica won, or it completed meanwhile).

    Raises ``MessageNotFoundError`` when this database does not hold the message.
    """
    row = (
        (await conn.execute(select(*_STATE_COLUMNS).where(messages.c.id == message_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise MessageNotFoundError(f"message {message_id} not found")
    if row["status"] != MessageStatus.STREAMING.value:
        return None
    partial = await store.seal(message_id)
    return await _finish(
        conn,
        row,
        content=row["content"] + partial.text,
        status=MessageStatus.INCOMPLETE,
        metadata=row["metadata"],
        only_if_streaming=True,
    )


async def sweep_idle_streams(
    engine: AsyncEngine,
    publisher: EventPublisher,
    store: StreamStore,
    *,
    idle_seconds: float,
    limit: int = 100,
) -> int:
    """One sweep (job wrapper: one transaction per message); returns how many it ended."""
    idle_ms = max(1, int(idle_seconds * 1000))
    claimed = await store.claim_idle(idle_ms, lease_ms=max(idle_ms, 30_000), limit=limit)
    ended = 0
    for member in claimed:
        try:
            message_id = uuid.UUID(member)
        except ValueError:
            await store.close(member)
            continue
        try:
            async with engine.begin() as conn:
                message = await mark_incomplete(conn, store, message_id)
        except MessageNotFoundError:
            # Another deployment's stream (or a purged one, whose deltas the purge removes).
            await store.forget_if_gone(message_id)
            continue
        if message is not None:
            ended += 1
            await publisher.publish_safely(
                message.conversation_id,
                EventType.MESSAGE_FAILED,
                {"message": message.model_dump(mode="json"), "error": IDLE_ERROR},
            )
        await store.close(message_id)
    return ended


async def run_idle_sweeper(
    engine: AsyncEngine, publisher: EventPublisher, store: StreamStore, *, idle_seconds: float
) -> None:
    """Sweep forever, every few seconds (the app lifespan runs this as a task)."""
    interval = min(5.0, max(0.05, idle_seconds / 4))
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep_idle_streams(engine, publisher, store, idle_seconds=idle_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("idle stream sweep failed")
        if task is not None and task.cancelling():
            # A call inside the sweep turned our cancellation into an ordinary error (seen at
            # shutdown in tests): honour it instead of sleeping on.
            raise asyncio.CancelledError


async def authorize_subscription(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, channel: str
) -> SessionOut | None:
    """Check the caller may read the conversation and count it as activity (sessions).

    Returns the session when this activity started a new one (publish ``session.started``).
    """
    await require_owned(conn, principal, conversation_id)
    _, started = await sessions.touch_session(
        conn, principal, conversation_id, sessions.SessionActivity(channel=channel)
    )
    if not started:
        return None
    return await sessions.current_session(conn, principal, conversation_id)


async def snapshot(
    conn: AsyncConnection, store: StreamStore, conversation_id: uuid.UUID
) -> dict[str, Any]:
    """The conversation and its newest messages (streaming ones with their partial content)."""
    conversation = await get_conversation_for_service(conn, conversation_id)
    rows = (
        (
            await conn.execute(
                select(*message_store.MESSAGE_COLUMNS)
                .where(
                    messages.c.conversation_id == conversation_id, messages.c.deleted_at.is_(None)
                )
                .order_by(messages.c.seq.desc())
                .limit(SNAPSHOT_MESSAGES + 1)
            )
        )
        .mappings()
        .all()
    )
    items = [message_store.to_out(row) for row in rows[:SNAPSHOT_MESSAGES]]
    items.reverse()
    dumped = []
    for item in items:
        data = item.model_dump(mode="json")
        if item.status is MessageStatus.STREAMING:
            with contextlib.suppress(RedisError, OSError):
                data["content"] += (await store.peek(item.id)).text
        dumped.append(data)
    return {
        "conversation": conversation.model_dump(mode="json"),
        "messages": dumped,
        "has_more": len(rows) > SNAPSHOT_MESSAGES,
    }


def snapshot_source(
    engine: AsyncEngine, store: StreamStore
) -> Callable[[uuid.UUID, str | None], Awaitable[str]]:
    """The live hub's snapshot builder: a ``snapshot`` frame whose id is the log's head."""

    async def build(conversation_id: uuid.UUID, head: str | None) -> str:
        async with engine.connect() as conn:
            data = await snapshot(conn, store, conversation_id)
        return events.build_frame(head, events.event_tail("snapshot", conversation_id, data))

    return build
