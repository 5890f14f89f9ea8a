"""Sessions: periods of one user's activity in a conversation, and their context variables.

A session starts on the first activity after an inactivity gap longer than ``SESSION_TTL`` and
ends by expiry (found on the next activity or read) or explicitly. Its context variables are
durable in the database and hot in Redis: the database write commits first, then the Redis copy
is replaced only by a newer version (a compare-and-set script), so a slow writer can never put an
older copy back. A Redis outage or restart loses nothing: reads fall back to the database.
"""

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, RowMapping, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import SESSION_TTL
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import sessions_table as sessions
from conversation_service.errors import InvalidCursorError, SessionNotFoundError
from conversation_service.events.log import EventType
from conversation_service.models.common import Page
from conversation_service.models.session import SessionContext, SessionOut, SessionStart
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import require_owned
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import new_id, utcnow
from conversation_service.utils.cursors import CursorCodec, CursorError
from conversation_service.utils.json_merge import merge_patch

log = logging.getLogger(__name__)
TTL = timedelta(seconds=SESSION_TTL)

# Replace the hot copy only with a newer version; refresh the TTL either way.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and tonumber(decoded['v']) >= tonumber(ARGV[2]) then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class SessionActivity:
    """Where activity came from (all optional)."""

    channel: str | None = None
    client: str | None = None
    locale: str | None = None


def context_key(session_id: uuid.UUID) -> str:
    """Redis key of a session's hot context copy (tagged by the session: a slot of its own)."""
    return "cs:session-context:{" + str(session_id) + "}"


def to_out(row: RowMapping, now: datetime | None = None) -> SessionOut:
    """API shape of a session row."""
    now = now or utcnow()
    active = row["ended_at"] is None and row["last_activity_at"] > now - TTL
    return SessionOut(
        id=row["id"],
        conversation_id=row["conversation_id"],
        channel=row["channel"],
        client=row["client"],
        locale=row["locale"],
        started_at=row["started_at"],
        last_activity_at=row["last_activity_at"],
        ended_at=row["ended_at"]
        if row["ended_at"] is not None
        else (None if active else row["last_activity_at"] + TTL),
        end_reason=row["end_reason"]
        if row["end_reason"] is not None
        else (None if active else "expired"),
        active=active,
    )


def _open(conversation_id: uuid.UUID) -> ColumnElement[bool]:
    return and_(sessions.c.conversation_id == conversation_id, sessions.c.ended_at.is_(None))


async def touch_session(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    activity: SessionActivity,
    *,
    now: datetime | None = None,
) -> tuple[uuid.UUID, bool]:
    """Record activity: extend the live session or start a new one. Returns (id, started)."""
    now = now or utcnow()
    extend = (
        update(sessions)
        .where(_open(conversation_id), sessions.c.last_activity_at > now - TTL)
        .values(last_activity_at=now)
        .returning(sessions.c.id)
    )
    live = (await conn.execute(extend)).scalars().first()
    if live is not None:
        return live, False
    # Starts are serialised on the conversation's row lock (SQLite's writers are serial anyway),
    # and whoever waited looks again: concurrent first activities start one session, not two.
    await conn.execute(
        select(conversations.c.id).where(conversations.c.id == conversation_id).with_for_update()
    )
    live = (await conn.execute(extend)).scalars().first()
    if live is not None:
        return live, False
    await _expire_stale(conn, conversation_id, now)
    return await _start(conn, principal, conversation_id, activity, now), True


async def _expire_stale(conn: AsyncConnection, conversation_id: uuid.UUID, now: datetime) -> None:
    stale = (
        await conn.execute(
            select(sessions.c.id, sessions.c.last_activity_at).where(
                _open(conversation_id), sessions.c.last_activity_at <= now - TTL
            )
        )
    ).all()
    for session_id, last_activity in stale:
        await conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(ended_at=last_activity + TTL, end_reason="expired")
        )


async def _start(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    activity: SessionActivity,
    now: datetime,
) -> uuid.UUID:
    session_id = new_id()
    await conn.execute(
        insert(sessions).values(
            id=session_id,
            conversation_id=conversation_id,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            channel=activity.channel,
            client=activity.client,
            locale=activity.locale,
            started_at=now,
            last_activity_at=now,
            context={},
            context_version=0,
        )
    )
    return session_id


async def start_session(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, data: SessionStart
) -> SessionOut:
    """Start a session explicitly, ending the current one; publishes ``session.started``."""
    conn = uow.conn
    await require_owned(conn, principal, conversation_id)
    now = utcnow()
    await _end_open(conn, conversation_id, now)
    activity = SessionActivity(channel=data.channel, client=data.client, locale=data.locale)
    session_id = await _start(conn, principal, conversation_id, activity, now)
    session = await _get(conn, session_id)
    _publish(uow, EventType.SESSION_STARTED, session)
    return session


def _publish(uow: UnitOfWork, event_type: str, session: SessionOut) -> None:
    uow.publish(session.conversation_id, event_type, {"session": session.model_dump(mode="json")})


async def _end_open(conn: AsyncConnection, conversation_id: uuid.UUID, now: datetime) -> None:
    await _expire_stale(conn, conversation_id, now)
    await conn.execute(
        update(sessions).where(_open(conversation_id)).values(ended_at=now, end_reason="ended")
    )


async def get_session(conn: AsyncConnection, session_id: uuid.UUID) -> SessionOut:
    """One session by id (callers have checked ownership)."""
    return await _get(conn, session_id)


async def _get(conn: AsyncConnection, session_id: uuid.UUID) -> SessionOut:
    row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).mappings().one()
    return to_out(row)


async def current_session(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> SessionOut:
    """The active session, or ``SessionNotFoundError``."""
    await require_owned(conn, principal, conversation_id)
    row = await _current_row(conn, conversation_id)
    if row is None:
        raise SessionNotFoundError("no active session")
    return to_out(row)


async def _current_row(conn: AsyncConnection, conversation_id: uuid.UUID) -> RowMapping | None:
    stmt = (
        select(sessions)
        .where(_open(conversation_id), sessions.c.last_activity_at > utcnow() - TTL)
        .order_by(sessions.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).mappings().one_or_none()


async def end_current_session(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID
) -> SessionOut:
    """End the active session explicitly; publishes ``session.ended``."""
    current = await current_session(uow.conn, principal, conversation_id)
    await uow.conn.execute(
        update(sessions)
        .where(sessions.c.id == current.id)
        .values(ended_at=utcnow(), end_reason="ended")
    )
    session = await _get(uow.conn, current.id)
    _publish(uow, EventType.SESSION_ENDED, session)
    return session


async def list_sessions(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    codec: CursorCodec,
) -> Page[SessionOut]:
    """Sessions of a conversation, newest first."""
    await require_owned(conn, principal, conversation_id)
    where = [sessions.c.conversation_id == conversation_id]
    if cursor is not None:
        try:
            payload = codec.decode(cursor)
            if payload.get("k") != "sess" or payload.get("c") != str(conversation_id):
                raise CursorError("cursor belongs to another list")
            where.append(sessions.c.id < uuid.UUID(str(payload["id"])))
        except (CursorError, KeyError, ValueError) as exc:
            raise InvalidCursorError(str(exc)) from exc
    rows = (
        (
            await conn.execute(
                select(sessions).where(*where).order_by(sessions.c.id.desc()).limit(limit + 1)
            )
        )
        .mappings()
        .all()
    )
    now = utcnow()
    items = [to_out(row, now) for row in rows[:limit]]
    has_more = len(rows) > limit
    next_cursor = (
        codec.encode({"k": "sess", "c": str(conversation_id), "id": str(items[-1].id)})
        if has_more
        else None
    )
    return Page(data=items, has_more=has_more, next_cursor=next_cursor)


async def read_context(
    conn: AsyncConnection, redis: Redis, session_id: uuid.UUID
) -> SessionContext:
    """A session's variables: the hot copy if Redis has it, else the durable copy."""
    try:
        cached = await redis.get(context_key(session_id))
    except RedisError as exc:
        log.warning("session context cache unavailable", extra={"error": str(exc)})
        cached = None
    if cached is not None:
        decoded = orjson.loads(cached)
        return SessionContext(
            session_id=session_id, version=decoded["v"], variables=decoded["vars"]
        )
    row = (
        await conn.execute(
            select(sessions.c.context, sessions.c.context_version).where(
                sessions.c.id == session_id
            )
        )
    ).one_or_none()
    if row is None:
        raise SessionNotFoundError(f"session {session_id} not found")
    context = SessionContext(
        session_id=session_id, version=row.context_version, variables=row.context
    )
    await publish_context(redis, context)
    return context


async def patch_context(
    uow: UnitOfWork, redis: Redis, session_id: uuid.UUID, patch: dict[str, Any]
) -> SessionContext:
    """Merge-patch the durable copy; the hot copy in Redis is replaced after the commit."""
    conn = uow.conn
    row = (
        await conn.execute(
            select(sessions.c.context, sessions.c.context_version)
            .where(sessions.c.id == session_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise SessionNotFoundError(f"session {session_id} not found")
    variables = merge_patch(row.context, patch)
    version = row.context_version + 1
    await conn.execute(
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(context=variables, context_version=version)
    )
    context = SessionContext(session_id=session_id, version=version, variables=variables)

    async def publish() -> None:
        await publish_context(redis, context)

    uow.after_commit(publish)
    return context


async def publish_context(redis: Redis, context: SessionContext) -> None:
    """Replace the hot copy unless Redis already holds a newer version (after commit)."""
    payload = orjson.dumps({"v": context.version, "vars": context.variables})
    key = context_key(context.session_id)
    try:
        await redis.eval(_SET_IF_NEWER, 1, key, payload, context.version, SESSION_TTL)
    except RedisError as exc:
        log.warning("session context not cached", extra={"error": str(exc)})
        with contextlib.suppress(RedisError):
            await redis.delete(key)
