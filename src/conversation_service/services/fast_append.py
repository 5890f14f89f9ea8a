"""The user-message append as one PostgreSQL statement, on the hot-statement pool.

The general append (``message_store.append_user_message``) is a transaction of five round trips
or more through SQLAlchemy: BEGIN, the seq bump and insert, the outbox row, the session touch,
COMMIT. Its common case, a user message without an ``Idempotency-Key`` in a conversation whose
session is live, is here a single statement run in autocommit, which PostgreSQL executes
atomically: data-modifying CTEs bump the conversation's ``last_seq`` under its row lock, insert
the message with it, write its outbox rows (the processing job and, when an orchestrator callback
URL is set, the ``message.created`` delivery and its job, the payload completed with the seq by
``jsonb_set``) and extend the live session. Locks are taken in the general path's order
(conversation, then session), so the two paths cannot deadlock.

When the statement inserts nothing (conversation missing, not the caller's, or not active), it
changed nothing and the caller falls back to the general path, which explains the refusal. When
it inserted the message but found no live session, ``start_session_after`` starts one in a
short transaction that first takes the conversation's row lock, so concurrent appends start one
session, not two. A crash between the two leaves a message whose session starts on the next
activity.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Select,
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


def _job_insert(prefix: str, inserted: Any) -> Any:
    """INSERT of one outbox row from ``<prefix>_<column>`` parameters, if a message went in."""
    values = select(
        *(bindparam(f"{prefix}_{name}", type_=jobs.c[name].type) for name in JOB_COLUMNS)
    ).where(exists(select(inserted.c.seq)))
    return insert(jobs).from_select(list(JOB_COLUMNS), values).cte(f"{prefix}_job")


def _statement(*, callback: bool) -> Select[Any]:
    bumped = message_store.bump_statement().cte("bumped")
    inserted = message_store.pg_append_statement(bumped).cte("inserted")
    touched = (
        update(sessions)
        .where(
            sessions.c.conversation_id == bindparam("b_conversation_id"),
            sessions.c.ended_at.is_(None),
            sessions.c.last_activity_at > bindparam("t_since", type_=sessions.c.started_at.type),
            exists(select(inserted.c.seq)),
        )
        .values(last_activity_at=bindparam("b_now", type_=messages.c.created_at.type))
        .returning(sessions.c.id)
        .cte("touched")
    )
    stmt = select(
        inserted.c.seq,
        select(touched.c.id).limit(literal_column("1")).scalar_subquery().label("session_id"),
    ).add_cte(_job_insert("j", inserted))
    if callback:
        payload = func.jsonb_set(
            bindparam("d_payload", type_=JSONB()),
            literal_column("'{data,message,seq}'::text[]"),
            func.to_jsonb(bumped.c.last_seq),
        )
        delivery = (
            insert(deliveries)
            .from_select(
                [*_DELIVERY_COLUMNS, "payload"],
                select(
                    *(
                        bindparam(f"d_{name}", type_=deliveries.c[name].type)
                        for name in _DELIVERY_COLUMNS
                    ),
                    payload,
                ).where(exists(select(inserted.c.seq))),
            )
            .cte("delivery")
        )
        stmt = stmt.add_cte(delivery, _job_insert("c", inserted))
    return stmt


_PLAIN = ReadQuery(_statement(callback=False))
_WITH_CALLBACK = ReadQuery(_statement(callback=True))


@dataclass(frozen=True, slots=True)
class FastAppend:
    """What the statement did: the message and its outbox rows, and the live session if any."""

    message: dict[str, Any]
    jobs: tuple[JobSpec, ...]
    session_id: uuid.UUID | None
    at: datetime


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in values.items()}


async def append(
    conn: ReadConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    settings: ConversationSettings,
) -> FastAppend | None:
    """Append a user message in one statement; None when nothing was written (see module)."""
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
    rows = await conn.fetch(_WITH_CALLBACK if url else _PLAIN, params)
    seq = rows[0]["seq"] if rows else None
    if seq is None:
        return None
    message["seq"] = seq
    return FastAppend(message=message, jobs=tuple(specs), session_id=rows[0]["session_id"], at=now)


async def start_session_after(
    engine: AsyncEngine,
    principal: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    at: datetime,
) -> SessionOut | None:
    """Start the session of an appended message that found none live; None if one is now live.

    The conversation's row lock orders this after any concurrent append's own session start.
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
