"""The work floor of the hot operations: each one's SQL (``bench.raw.hot_sql``, captured from the
service) and Redis commands, run by asyncpg / sqlite3 and redis-py on one connection, serially.

Each script the service runs in Redis becomes one pipeline of the commands it issued (one round
trip, like the script). Keys carry a ``bench:floor:`` prefix and ``close`` deletes them. On SQLite
an operation's statements run in one thread hop (``sqlite3`` through ``asyncio.to_thread``), the
least a server on an event loop can do; timestamps and ids are stored as SQLAlchemy stores them
there (naive UTC text, 32-hex text).
"""

import asyncio
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench.raw import hot_sql as sql
from bench.raw.base import new_id
from bench.raw.postgres import PostgresBackend
from bench.raw.sqlite import SQLITE_PRAGMAS, SqliteBackend

CONTENT = (
    "Could you summarise the last three invoices for ACME Corp and flag anything that looks "
    "unusual compared with the previous quarter? Please keep it short."
)
_P = "bench:floor:"
_EVENT = "x" * 560  # an event's JSON as the service writes it (message.created/completed)
_JOB_HASH = {"created_at": "2026-12-06T08:28:45.031638Z", "data": "x" * 300, "origin": "high",
             "description": "process_message", "timeout": "180", "status": "queued",
             "enqueued_at": "2026-12-06T08:28:45.031638Z", "meta": "x" * 120}  # fmt: skip
_STREAM_TTL = 86400
_EMPTY_TOKENS = 4  # an empty assistant message still counts its chat-format overhead


@dataclass(frozen=True, slots=True)
class Target:
    """The conversation an operation works on, and its owner."""

    conversation: uuid.UUID
    tenant: str
    user: str


class WorkFloor(Protocol):
    """One operation's database and Redis work, per call."""

    async def append(self, t: Target) -> None:
        """A user message: its row, counters, session touch, job row; event; RQ enqueue."""
        ...

    async def agent_turn(self, t: Target) -> None:
        """Create a streaming assistant message, then complete it."""
        ...

    async def history(self, t: Target) -> None:
        """The newest page of 50."""
        ...

    async def context(self, t: Target) -> None:
        """The context window's reads."""
        ...

    async def close(self) -> None:
        """Close the connections and delete the floor's Redis keys."""
        ...


class RedisWork:
    """The Redis side of the operations, as pipelines on one connection."""

    def __init__(self, url: str) -> None:
        self.redis = Redis.from_url(url)

    async def event(self, conversation: uuid.UUID) -> None:
        """The event log's script: XADD, PUBLISH, EXPIRE."""
        key = f"{_P}events:{conversation}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, {"b": _EVENT}, maxlen=10_000, approximate=True)
        pipe.publish(f"{_P}live:{conversation}", _EVENT)
        pipe.expire(key, _STREAM_TTL)
        await pipe.execute()

    async def enqueue(self, message: uuid.UUID) -> None:
        """The RQ enqueue script (EXISTS, HSET, RPUSH), then SADD of the queue."""
        job = f"process_message-{message.hex}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(f"{_P}rq:job:{job}")
        pipe.hset(f"{_P}rq:job:{job}", mapping=_JOB_HASH)
        pipe.rpush(f"{_P}rq:queue:high", job)
        await pipe.execute()
        await self.redis.sadd(f"{_P}rq:queues", f"{_P}rq:queue:high")

    async def open_partial(self, message: uuid.UUID, conversation: uuid.UUID) -> None:
        """The partial-reply script of a streaming message: HSETNX, EXPIRE, TIME, ZADD."""
        key = f"{_P}partial:{message}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(key, "~c", str(conversation))
        pipe.expire(key, _STREAM_TTL)
        pipe.time()
        pipe.zadd(f"{_P}streaming", {str(message): 1_796_545_727_131})
        await pipe.execute()

    async def take_partial(self, message: uuid.UUID) -> None:
        """The partial read script (HGETALL, HDEL) at completion."""
        key = f"{_P}partial:{message}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.hdel(key, "~c")
        await pipe.execute()

    async def drop_partial(self, message: uuid.UUID) -> None:
        """DEL of the partial reply, ZREM from the streaming set (two round trips)."""
        await self.redis.delete(f"{_P}partial:{message}")
        await self.redis.zrem(f"{_P}streaming", str(message))

    async def close(self) -> None:
        """Delete every key the floor wrote, then disconnect."""
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=f"{_P}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)
        await self.redis.aclose()

    async def complete(self, t: Target, message: uuid.UUID) -> None:
        """Everything in Redis after a completion commits."""
        await self.take_partial(message)
        await self.event(t.conversation)
        await self.drop_partial(message)
        await self.enqueue(message)


def _job_values(t: Target, message: uuid.UUID, now: Any, dedupe: str | None) -> tuple[Any, ...]:
    return (new_id(), t.tenant, t.conversation, message, "process_message", "high", "{}",
            "pending", 0, 3, None, dedupe, None, now, now)  # fmt: skip


class PostgresWork:
    """asyncpg; statements prepared and cached by asyncpg, as the service's driver does."""

    def __init__(self, conn: asyncpg.Connection, redis: RedisWork) -> None:
        self.conn = conn
        self.redis = redis

    async def append(self, t: Target) -> None:
        """One CTE statement, then the event and the enqueue."""
        now, message = datetime.now(UTC), new_id()
        row = await self.conn.fetchrow(
            sql.PG_APPEND,
            *_job_values(t, message, now, None),
            message, t.conversation, t.tenant, "user", CONTENT, "null", "completed", "{}",
            None, None, now, now, 22, 22, 22, False,
            22, now, t.conversation, t.tenant, t.user, now - sql.SESSION_GAP,
        )  # fmt: skip
        if row is None:
            raise RuntimeError("floor append wrote nothing")
        await self.redis.event(t.conversation)
        await self.redis.enqueue(message)

    async def agent_turn(self, t: Target) -> None:
        """Create (transaction, partial, event), then complete (transaction, Redis)."""
        conn, now, message = self.conn, datetime.now(UTC), new_id()
        cid, tokens = t.conversation, _EMPTY_TOKENS
        async with conn.transaction():
            await conn.fetchrow(sql.PG_READ_CONVERSATION, cid)
            await conn.fetchval(
                sql.PG_AGENT_CREATE,
                message, cid, t.tenant, "assistant", "", "null", "streaming", "{}", None, None,
                now, now, tokens, tokens, tokens, False, tokens, now, cid, t.tenant, t.user,
            )  # fmt: skip
        await self.redis.open_partial(message, cid)
        await self.redis.event(cid)
        now = datetime.now(UTC)
        async with conn.transaction():
            await conn.fetchrow(sql.PG_READ_MESSAGE, message, cid)
            await conn.fetchrow(
                sql.PG_COMPLETE, CONTENT, "completed", "{}", 22, 22, 22, False, now, message
            )
            await conn.execute(sql.PG_ADD_TOKENS, 22 - tokens, now, cid)
            await conn.fetchval(sql.PG_TENANT, cid)
            await conn.execute(sql.PG_JOB, *_job_values(t, message, now, f"process:{message}"))
        await self.redis.complete(t, message)

    async def history(self, t: Target) -> None:
        """The page's SELECT."""
        await self.conn.fetch(
            sql.PG_PAGE, t.conversation, -1, sql.MAX_SEQ, t.tenant, t.user, sql.PAGE_LIMIT
        )

    async def context(self, t: Target) -> None:
        """Policy and friends, always-included rows, one chunk."""
        since = datetime.now(UTC) - sql.SESSION_GAP
        await self.conn.fetchrow(sql.PG_POLICY, since, 1, t.conversation)
        await self.conn.fetch(sql.PG_ALWAYS, t.conversation)
        await self.conn.fetch(sql.PG_CHUNK, t.conversation, 0, sql.MAX_SEQ, sql.CHUNK)

    async def close(self) -> None:
        """Close the connection and clean Redis."""
        await self.conn.close()
        await self.redis.close()


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SqliteWork:
    """sqlite3 in autocommit mode with explicit transactions, as the service's statements run."""

    def __init__(self, db: sqlite3.Connection, redis: RedisWork) -> None:
        self.db = db
        self.redis = redis

    def _transaction(self, begin: str, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
        db = self.db
        db.execute(begin)
        try:
            rows = [db.execute(text, params).fetchall() for text, params in statements]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return rows

    def _append(self, t: Target, message: uuid.UUID) -> None:
        db, now, cid = self.db, _text(datetime.now(UTC)), t.conversation.hex
        since = _text(datetime.now(UTC) - sql.SESSION_GAP)
        begin, bump, insert, touch, job = sql.SQLITE_APPEND
        db.execute(begin)
        try:
            seq = db.execute(bump, (22, now, now, cid, t.tenant, t.user)).fetchone()[0]
            db.execute(insert, (message.hex, cid, t.tenant, "user", CONTENT, "null", "completed",
                                "{}", None, None, now, now, 22, 22, 22, 0, seq))  # fmt: skip
            db.execute(touch, (now, cid, since)).fetchall()
            values = _job_values(t, message, now, None)
            db.execute(job, tuple(v.hex if isinstance(v, uuid.UUID) else v for v in values))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def append(self, t: Target) -> None:
        """The five statements in ``BEGIN IMMEDIATE``, then the event and the enqueue."""
        message = new_id()
        await asyncio.to_thread(self._append, t, message)
        await self.redis.event(t.conversation)
        await self.redis.enqueue(message)

    def _create(self, t: Target, message: uuid.UUID) -> None:
        now, cid, tokens = _text(datetime.now(UTC)), t.conversation.hex, _EMPTY_TOKENS
        self.db.execute(sql.SQLITE_READ_CONVERSATION, (cid,)).fetchall()
        db = self.db
        db.execute("BEGIN")
        try:
            seq = db.execute(sql.SQLITE_APPEND[1], (tokens, now, now, cid, t.tenant, t.user))
            values = (message.hex, cid, t.tenant, seq.fetchone()[0], "assistant", "", "null",
                      "streaming", "{}", tokens, tokens, tokens, 0, None, None, now,
                      now)  # fmt: skip
            db.execute(sql.SQLITE_AGENT_INSERT, values)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _complete(self, t: Target, message: uuid.UUID) -> None:
        now, cid = _text(datetime.now(UTC)), t.conversation.hex
        self.db.execute(sql.SQLITE_READ_MESSAGE, (message.hex, cid)).fetchall()
        job = tuple(
            v.hex if isinstance(v, uuid.UUID) else v
            for v in _job_values(t, message, now, f"process:{message}")
        )
        self._transaction(
            "BEGIN",
            (sql.SQLITE_COMPLETE, (CONTENT, "completed", "{}", 22, 22, 22, 0, now, message.hex)),
            (sql.SQLITE_ADD_TOKENS, (22 - _EMPTY_TOKENS, now, cid)),
            (sql.SQLITE_TENANT, (cid,)),
            (sql.SQLITE_JOB, job),
        )

    async def agent_turn(self, t: Target) -> None:
        """Create (statements, partial, event), then complete (statements, Redis)."""
        message = new_id()
        await asyncio.to_thread(self._create, t, message)
        await self.redis.open_partial(message, t.conversation)
        await self.redis.event(t.conversation)
        await asyncio.to_thread(self._complete, t, message)
        await self.redis.complete(t, message)

    def _history(self, t: Target) -> None:
        params = (t.conversation.hex, -1, sql.MAX_SEQ, t.tenant, t.user, sql.PAGE_LIMIT)
        self.db.execute(sql.SQLITE_PAGE, params).fetchall()

    async def history(self, t: Target) -> None:
        """The page's SELECT (message JSON built in SQL)."""
        await asyncio.to_thread(self._history, t)

    def _context(self, t: Target) -> None:
        cid, since = t.conversation.hex, _text(datetime.now(UTC) - sql.SESSION_GAP)
        self.db.execute(sql.SQLITE_POLICY, (since, 1, cid)).fetchall()
        self.db.execute(sql.SQLITE_ALWAYS, (cid,)).fetchall()
        self.db.execute(sql.SQLITE_CHUNK, (cid, 0, sql.MAX_SEQ, sql.CHUNK)).fetchall()

    async def context(self, t: Target) -> None:
        """Policy and friends, always-included rows, one chunk."""
        await asyncio.to_thread(self._context, t)

    async def close(self) -> None:
        """Close the connection and clean Redis."""
        self.db.close()
        await self.redis.close()


async def open_work_floor(backend: PostgresBackend | SqliteBackend, redis_url: str) -> WorkFloor:
    """A work floor on ``backend``'s database and the run's Redis."""
    redis = RedisWork(redis_url)
    if isinstance(backend, PostgresBackend):
        return PostgresWork(await asyncpg.connect(backend.dsn), redis)
    db = sqlite3.connect(backend.path, timeout=30, isolation_level=None, check_same_thread=False)
    for pragma in SQLITE_PRAGMAS:
        db.execute(pragma)
    return SqliteWork(db, redis)
