"""The common user-message append in one round trip: one PostgreSQL statement, one SQLite hop.

The general append (``message_store.append_user_message``) is a transaction of five round trips
or more through SQLAlchemy: BEGIN, the seq bump and insert, the outbox row, the session touch,
COMMIT. Its common case, a user message without an ``Idempotency-Key`` in a conversation whose
session is live, is done here with the same parameters in one of two ways:

* On PostgreSQL, a single statement on the hot-statement pool, run in autocommit, which
  PostgreSQL executes atomically: data-modifying CTEs bump the conversation's ``last_seq`` under
  its row lock, insert the message with it, write its outbox rows (the processing job and, when
  an orchestrator callback URL is set, the ``message.created`` delivery and its job, the payload
  completed with the seq by ``jsonb_set``) and extend the live session. Locks are taken in the
  general path's order (conversation, then session), so the two paths cannot deadlock.
* On a SQLite file, the same writes as plain statements in one transaction of the hot writer
  (``db.writes``): a single hop to its thread instead of one per statement, and none of the
  engine's per-statement overhead. The write lock covers the whole transaction.

When the bump changes nothing (conversation missing, not the caller's, or not active), nothing
was written and the caller falls back to the general path, which explains the refusal. When the
message went in but found no live session, ``start_session_after`` starts one in a short
transaction that first takes the conversation's row lock (on SQLite the write lock serialises
it), so concurrent appends start one session, not two. A crash between the two leaves a message
whose session starts on the next activity.
"""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.reads import ReadConnection, ReadQuery
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.db.tables import messages_table as messages
from conversation_service.db.tables import sessions_table as sessions
from conversation_service.db.writes import SqliteWriter, WriteConnection
from conversation_service.models.message import MessageCreate
from conversation_service.models.session import SessionOut
from conversation_service.queue.jobs import JOB_COLUMNS, JobKind, JobSpec, queue_for, row_values
from conversation_service.services import callbacks, message_store
from conversation_service.services.auth import Principal
from conversation_service.services.sessions import TTL, get_session, touch_session
from conversation_service.utils.clock import new_id, utcnow

_DELIVERY_COLUMNS: Final = (
    "id",
    "tenant_id",
    "conversation_id",
    "event_type",
    "url",
    "status",
    "attempts",
    "created_at",
)


def _job_insert(prefix: str, *where: ColumnElement[bool]) -> Insert:
    """INSERT of one outbox row from ``<prefix>_<column>`` parameters (if ``where`` holds)."""
    values = select(
        *(bindparam(f"{prefix}_{name}", type_=jobs.c[name].type) for name in JOB_COLUMNS)
    ).where(*where)
    return insert(jobs).from_select(list(JOB_COLUMNS), values)


def _delivery_insert(payload: ColumnElement[Any], *where: ColumnElement[bool]) -> Insert:
    """INSERT of the callback delivery from ``d_<column>`` parameters and ``payload``."""
    values = select(
        *(bindparam(f"d_{name}", type_=deliveries.c[name].type) for name in _DELIVERY_COLUMNS),
        payload,
    ).where(*where)
    return insert(deliveries).from_select([*_DELIVERY_COLUMNS, "payload"], values)


def _touch(*where: ColumnElement[bool]) -> Update:
    """Extend the conversation's live session, returning its id (no row: none is live)."""
    return (
        update(sessions)
        .where(
            sessions.c.conversation_id == bindparam("b_conversation_id"),
            sessions.c.ended_at.is_(None),
            sessions.c.last_activity_at > bindparam("t_since", type_=sessions.c.started_at.type),
            *where,
        )
        .values(last_activity_at=bindparam("b_now", type_=messages.c.created_at.type))
        .returning(sessions.c.id)
    )


def _pg_statement(*, callback: bool) -> Select[Any]:
    bumped = message_store.bump_statement().cte("bumped")
    inserted = (
        message_store.append_statement(bumped.c.last_seq).returning(messages.c.seq).cte("inserted")
    )
    written = exists(select(inserted.c.seq))
    touched = _touch(written).cte("touched")
    stmt = select(
        inserted.c.seq,
        select(touched.c.id).limit(literal_column("1")).scalar_subquery().label("session_id"),
    ).add_cte(_job_insert("j", written).cte("j_job"))
    if callback:
        payload = func.jsonb_set(
            bindparam("d_payload", type_=JSONB()),
            literal_column("'{data,message,seq}'::text[]"),
            func.to_jsonb(bumped.c.last_seq),
        )
        stmt = stmt.add_cte(
            _delivery_insert(payload, written).cte("delivery"),
            _job_insert("c", written).cte("c_job"),
        )
    return stmt


_PG_PLAIN = ReadQuery(_pg_statement(callback=False))
_PG_WITH_CALLBACK = ReadQuery(_pg_statement(callback=True))

_SQLITE_BUMP = ReadQuery(message_store.bump_statement())
_SQLITE_MESSAGE = ReadQuery(
    message_store.append_statement(bindparam("m_seq", type_=messages.c.seq.type))
)
_SQLITE_JOB = ReadQuery(_job_insert("j"))
_SQLITE_DELIVERY = ReadQuery(
    _delivery_insert(bindparam("d_payload", type_=deliveries.c.payload.type))
)
_SQLITE_DELIVERY_JOB = ReadQuery(_job_insert("c"))
_SQLITE_TOUCH = ReadQuery(_touch())


@dataclass(frozen=True, slots=True)
class FastAppend:
    """What the append did: the message and its outbox rows, and the live session if any."""

    message: dict[str, Any]
    jobs: tuple[JobSpec, ...]
    session_id: uuid.UUID | None
    at: datetime


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The parameters of an append, for either database, and its outcome once written."""

    params: dict[str, Any]
    specs: tuple[JobSpec, ...]
    # Its seq is 0 until written; the callback payload in ``params`` holds this same dict.
    message: dict[str, Any]
    at: datetime
    callback: bool

    def written(self, seq: int, session_id: uuid.UUID | None) -> FastAppend:
        """The outcome of the append once the bump gave it ``seq``."""
        self.message["seq"] = seq
        return FastAppend(message=self.message, jobs=self.specs, session_id=session_id, at=self.at)


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in values.items()}


async def _prepare(
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    settings: ConversationSettings,
) -> _Prepared:
    draft = message_store.user_draft(body)
    now = utcnow()
    message_id = new_id()
    values = await message_store.row_for(principal, conversation_id, draft, message_id, now)
    process = JobSpec(
        kind=JobKind.PROCESS_MESSAGE,
        queue=queue_for(JobKind.PROCESS_MESSAGE, urgent=True),
        tenant_id=principal.tenant_id,
        conversation_id=conversation_id,
        message_id=message_id,
        max_attempts=settings.job_max_attempts,
    )
    params: dict[str, Any] = {
        "b_conversation_id": conversation_id,
        "b_tenant_id": principal.tenant_id,
        "b_user_id": principal.user_id,
        "b_tokens": values["token_count"],
        "b_now": now,
        "t_since": now - TTL,
        **_prefixed("m", values),
        **_prefixed("j", row_values(process, now)),
    }
    specs = [process]
    message = message_store.message_json({**values, **message_store.UNPROCESSED, "seq": 0})
    url = settings.orchestrator_callback_url
    if url:
        delivery_id = new_id()
        params.update(
            _prefixed(
                "d",
                {
                    "id": delivery_id,
                    "tenant_id": principal.tenant_id,
                    "conversation_id": conversation_id,
                    "event_type": "message.created",
                    "url": url,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "payload": callbacks.event_body(
                        "message.created",
                        {"conversation_id": str(conversation_id), "message": message},
                    ),
                },
            )
        )
        notify = callbacks.delivery_job(settings, principal.tenant_id, conversation_id, delivery_id)
        params.update(_prefixed("c", row_values(notify, now)))
        specs.append(notify)
    return _Prepared(params=params, specs=tuple(specs), message=message, at=now, callback=bool(url))


async def append_pg(
    conn: ReadConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    settings: ConversationSettings,
) -> FastAppend | None:
    """Append a user message in one PostgreSQL statement; None when nothing was written."""
    prepared = await _prepare(principal, conversation_id, body, settings)
    query = _PG_WITH_CALLBACK if prepared.callback else _PG_PLAIN
    rows = await conn.fetch(query, prepared.params)
    seq = rows[0]["seq"] if rows else None
    if seq is None:
        return None
    return prepared.written(seq, rows[0]["session_id"])


async def append_sqlite(
    writer: SqliteWriter,
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    settings: ConversationSettings,
) -> FastAppend | None:
    """Append a user message in one transaction of the SQLite writer; None: nothing written."""
    prepared = await _prepare(principal, conversation_id, body, settings)
    return await writer.transaction(functools.partial(_write_sqlite, prepared))


def _write_sqlite(prepared: _Prepared, conn: WriteConnection) -> FastAppend | None:
    # On the writer thread, inside its transaction.
    params = prepared.params
    bumped = conn.fetch(_SQLITE_BUMP, params)
    if not bumped:
        return None
    seq: int = bumped[0]["last_seq"]
    conn.execute(_SQLITE_MESSAGE, {**params, "m_seq": seq})
    touched = conn.fetch(_SQLITE_TOUCH, params)
    # Numbers the message, so the delivery's payload, which holds it, is stored with its seq.
    done = prepared.written(seq, touched[0]["id"] if touched else None)
    conn.execute(_SQLITE_JOB, params)
    if prepared.callback:
        conn.execute(_SQLITE_DELIVERY, params)
        conn.execute(_SQLITE_DELIVERY_JOB, params)
    return done


async def start_session_after(
    engine: AsyncEngine,
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    at: datetime,
) -> SessionOut | None:
    """Start the session of an appended message that found none live; None if one is now live.

    The conversation's row lock orders this after any concurrent append's own session start
    (on SQLite, the write lock the touch takes does).
    """
    async with engine.begin() as conn:
        await conn.execute(
            select(conversations.c.id)
            .where(conversations.c.id == conversation_id)
            .with_for_update()
        )
        session_id, started = await touch_session(
            conn, principal, conversation_id, message_store.activity(body.metadata), now=at
        )
        return await get_session(conn, session_id) if started else None
