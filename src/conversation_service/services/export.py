"""Per-user export (GDPR art. 15 and 20): every conversation of one user in one tenant as NDJSON.

Each line is ``{"type": …, "data": {…}}`` with ``data`` in the API's own shape. A conversation's
line comes first, followed by its messages (by seq, each with the user's ``feedback``), sessions,
summaries, tracked context and feedback; conversations come oldest first (UUIDv7 ids are
creation-ordered), so ``after=<conversation id>`` resumes an interrupted export exactly where it
stopped.

The whole export reads one snapshot: a REPEATABLE READ, read-only transaction on PostgreSQL; on
SQLite a read transaction on a connection of its own (the process's one pooled connection must
not wait for a slow download). Rows are read in keyset chunks and written out as they come, so
memory stays flat whatever the size of the history.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import feedback_table as feedback
from conversation_service.db.tables import messages_table as messages
from conversation_service.db.tables import sessions_table as sessions
from conversation_service.db.tables import summaries_table as summaries
from conversation_service.db.tables import tracked_contexts_table as tracked
from conversation_service.services import conversation_manager
from conversation_service.services import sessions as session_rows
from conversation_service.services import summaries as summary_rows
from conversation_service.services.auth import Principal
from conversation_service.services.feedback import FEEDBACK_COLUMNS, feedback_json
from conversation_service.services.message_store import MESSAGE_COLUMNS, message_json
from conversation_service.utils import jsonio

MEDIA_TYPE: Final = "application/x-ndjson"
CONVERSATION_CHUNK: Final = 50
MESSAGE_CHUNK: Final = 500


@asynccontextmanager
async def snapshot(
    engine: AsyncEngine, settings: ConversationSettings
) -> AsyncIterator[AsyncConnection]:
    """A connection whose every read sees the same committed state."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                yield conn
        return
    private = create_engine(settings, null_pool=True)
    try:
        async with private.connect() as conn:
            # The driver opens no transaction for reads: BEGIN pins the WAL snapshot until the
            # connection closes (which rolls it back).
            await conn.exec_driver_sql("BEGIN")
            yield conn
    finally:
        await private.dispose()


def _line(kind: str, data: Any) -> bytes:
    return jsonio.dumps({"type": kind, "data": data}) + b"\n"


async def export_user(
    engine: AsyncEngine,
    settings: ConversationSettings,
    principal: Principal,
    *,
    after: uuid.UUID | None = None,
) -> AsyncIterator[bytes]:
    """The principal's data as NDJSON chunks, conversations after ``after`` (oldest first)."""
    async with snapshot(engine, settings) as conn:
        last = after
        while True:
            stmt = (
                select(*conversation_manager.COLUMNS)
                .where(
                    conversations.c.tenant_id == principal.tenant_id,
                    conversations.c.user_id == principal.user_id,
                    conversations.c.deleted_at.is_(None),
                )
                .order_by(conversations.c.id)
                .limit(CONVERSATION_CHUNK)
            )
            if last is not None:
                stmt = stmt.where(conversations.c.id > last)
            batch = (await conn.execute(stmt)).mappings().all()
            for row in batch:
                yield _line("conversation", conversation_manager.to_out(row).model_dump())
                async for chunk in _records(conn, principal, row["id"]):
                    yield chunk
            if len(batch) < CONVERSATION_CHUNK:
                return
            last = batch[-1]["id"]


def _messages_after(principal: Principal, conversation_id: uuid.UUID, seq: int) -> Select[Any]:
    return (
        select(*MESSAGE_COLUMNS, *FEEDBACK_COLUMNS)
        .select_from(
            messages.outerjoin(
                feedback,
                and_(
                    feedback.c.message_id == messages.c.id,
                    feedback.c.user_id == principal.user_id,
                ),
            )
        )
        .where(
            messages.c.conversation_id == conversation_id,
            messages.c.deleted_at.is_(None),
            messages.c.seq > seq,
        )
        .order_by(messages.c.seq)
        .limit(MESSAGE_CHUNK)
    )


async def _records(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> AsyncIterator[bytes]:
    seq = 0
    while True:
        rows = (
            (await conn.execute(_messages_after(principal, conversation_id, seq))).mappings().all()
        )
        if rows:
            yield b"".join(
                _line("message", {**message_json(row), "feedback": feedback_json(row)})
                for row in rows
            )
        if len(rows) < MESSAGE_CHUNK:
            break
        seq = rows[-1]["seq"]
    found = await conn.execute(
        select(sessions)
        .where(sessions.c.conversation_id == conversation_id)
        .order_by(sessions.c.id)
    )
    for row in found.mappings():
        yield _line("session", session_rows.to_out(row).model_dump())
    found = await conn.execute(
        select(summaries)
        .where(summaries.c.conversation_id == conversation_id)
        .order_by(summaries.c.version)
    )
    for row in found.mappings():
        yield _line("summary", summary_rows.to_out(row).model_dump())
    context = (
        (await conn.execute(select(tracked).where(tracked.c.conversation_id == conversation_id)))
        .mappings()
        .one_or_none()
    )
    if context is not None:
        yield _line(
            "tracked_context",
            {
                "conversation_id": str(conversation_id),
                "version": context["version"],
                "data": context["data"],
                "updated_at": context["updated_at"],
                "updated_by": context["updated_by"],
            },
        )
    given = await conn.execute(
        select(feedback)
        .where(
            feedback.c.conversation_id == conversation_id,
            feedback.c.user_id == principal.user_id,
        )
        .order_by(feedback.c.created_at, feedback.c.message_id)
    )
    for row in given.mappings():
        yield _line(
            "feedback",
            {
                "conversation_id": row["conversation_id"],
                "message_id": row["message_id"],
                "agent_id": row["agent_id"],
                "rating": row["rating"],
                "comment": row["comment"],
                "tags": row["tags"],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
            },
        )
