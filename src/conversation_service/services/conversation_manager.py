"""Conversations: create, read, list with filters and keyset pagination, update, delete."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    RowMapping,
    and_,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import idempotency_table, jobs_table, messages_table
from conversation_service.errors import ConversationNotFoundError, InvalidCursorError
from conversation_service.models.common import Page, Sentiment
from conversation_service.models.conversation import (
    ConversationOut,
    ConversationStatus,
)
from conversation_service.services.auth import Principal
from conversation_service.utils.clock import utcnow
from conversation_service.utils.cursors import CursorCodec, CursorError

COLUMNS = (
    conversations.c.id,
    conversations.c.user_id,
    conversations.c.agent_id,
    conversations.c.agents,
    conversations.c.workflow_id,
    conversations.c.title,
    conversations.c.status,
    conversations.c.priority,
    conversations.c.metadata,
    conversations.c.tags,
    conversations.c.memory_policy,
    conversations.c.last_seq,
    conversations.c.message_count,
    conversations.c.token_count,
    conversations.c.sentiment_label,
    conversations.c.sentiment_score,
    conversations.c.created_at,
    conversations.c.updated_at,
    conversations.c.last_message_at,
    conversations.c.active_leaf_id,
    conversations.c.forked_from,
)


@dataclass(frozen=True, slots=True)
class ConversationFilters:
    """Filters of ``GET /conversations``; all are ANDed."""

    agent_id: str | None = None
    workflow_id: str | None = None
    status: ConversationStatus | None = None
    tag: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


def to_out(m: RowMapping) -> ConversationOut:
    """Build the API shape from a row of ``COLUMNS``."""
    sentiment = (
        Sentiment(label=m["sentiment_label"], score=m["sentiment_score"])
        if m["sentiment_label"] is not None
        else None
    )
    return ConversationOut(
        id=m["id"],
        user_id=m["user_id"],
        agent_id=m["agent_id"],
        agents=m["agents"] or [m["agent_id"]],
        workflow_id=m["workflow_id"],
        title=m["title"],
        status=m["status"],
        priority=m["priority"],
        metadata=m["metadata"],
        tags=m["tags"],
        memory_policy=m["memory_policy"],
        last_seq=m["last_seq"],
        message_count=m["message_count"],
        token_count=m["token_count"],
        sentiment=sentiment,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_message_at=m["last_message_at"],
        active_leaf_id=m["active_leaf_id"],
        forked_from=m["forked_from"],
    )


def owned_by(principal: Principal, conversation_id: uuid.UUID) -> ColumnElement[bool]:
    """The WHERE clause every conversation access goes through (tenant + owner + not deleted)."""
    return and_(
        conversations.c.id == conversation_id,
        conversations.c.tenant_id == principal.tenant_id,
        conversations.c.user_id == principal.user_id,
        conversations.c.deleted_at.is_(None),
    )


async def get_conversation(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> ConversationOut:
    """Load one of the caller's conversations or raise ``ConversationNotFoundError``."""
    row = (
        await conn.execute(select(*COLUMNS).where(owned_by(principal, conversation_id)))
    ).one_or_none()
    if row is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return to_out(row._mapping)


async def require_owned(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> None:
    """Raise ``ConversationNotFoundError`` unless the caller owns the conversation."""
    found = (
        await conn.execute(select(conversations.c.id).where(owned_by(principal, conversation_id)))
    ).one_or_none()
    if found is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")


async def list_conversations(
    conn: AsyncConnection,
    principal: Principal,
    filters: ConversationFilters,
    *,
    limit: int,
    cursor: str | None,
    codec: CursorCodec,
) -> Page[ConversationOut]:
    """The caller's conversations, newest first, one keyset page at a time."""
    return await list_in_tenant(
        conn,
        principal.tenant_id,
        principal.user_id,
        filters,
        limit=limit,
        cursor=cursor,
        codec=codec,
    )


async def list_in_tenant(
    conn: AsyncConnection,
    tenant_id: str,
    user_id: str | None,
    filters: ConversationFilters,
    *,
    limit: int,
    cursor: str | None,
    codec: CursorCodec,
) -> Page[ConversationOut]:
    """One tenant's conversations (one user's when ``user_id`` is given), newest first, one
    keyset page at a time: the user's list and the orchestrator's share it."""
    c = conversations.c
    where: list[ColumnElement[bool]] = [c.tenant_id == tenant_id, c.deleted_at.is_(None)]
    if user_id is not None:
        where.append(c.user_id == user_id)
    if cursor is not None:
        where.append(c.id < _decode_cursor(codec, cursor))
    if filters.agent_id is not None:
        where.append(c.agent_id == filters.agent_id)
    if filters.workflow_id is not None:
        where.append(c.workflow_id == filters.workflow_id)
    if filters.status is not None:
        where.append(c.status == filters.status.value)
    if filters.created_after is not None:
        where.append(c.created_at > filters.created_after)
    if filters.created_before is not None:
        where.append(c.created_at < filters.created_before)
    if filters.updated_after is not None:
        where.append(c.updated_at > filters.updated_after)
    if filters.updated_before is not None:
        where.append(c.updated_at < filters.updated_before)
    dialect = conn.dialect.name
    if filters.tag is not None:
        where.append(_tag_clause(dialect, filters.tag))
    for key, value in filters.metadata:
        where.append(_metadata_clause(dialect, key, value))
    stmt = select(*COLUMNS).where(*where).order_by(c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(stmt)).all()
    has_more = len(rows) > limit
    items = [to_out(row._mapping) for row in rows[:limit]]
    next_cursor = codec.encode({"k": "conv", "id": str(items[-1].id)}) if has_more else None
    return Page(data=items, has_more=has_more, next_cursor=next_cursor)


def _decode_cursor(codec: CursorCodec, cursor: str) -> uuid.UUID:
    try:
        payload = codec.decode(cursor)
        if payload.get("k") != "conv":
            raise CursorError("cursor belongs to another list")
        return uuid.UUID(str(payload["id"]))
    except (CursorError, KeyError, ValueError) as exc:
        raise InvalidCursorError(str(exc)) from exc


def _tag_clause(dialect: str, tag: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return type_coerce(conversations.c.tags, JSONB).contains([tag])
    each = func.json_each(conversations.c.tags).table_valued("value").alias("tag_each")
    return select(each.c.value).where(each.c.value == tag).exists()


def _metadata_clause(dialect: str, key: str, value: str) -> ColumnElement[bool]:
    # Query strings carry text, so metadata.<key>=<value> matches string values only.
    if dialect == "postgresql":
        return type_coerce(conversations.c.metadata, JSONB).contains({key: value})
    path = '$."' + key.replace('"', "") + '"'
    return and_(
        func.json_type(conversations.c.metadata, path) == "text",
        func.json_extract(conversations.c.metadata, path) == value,
    )


async def purge_conversation(conn: AsyncConnection, conversation_id: uuid.UUID) -> None:
    """Erase a conversation and every row hanging off it (no soft-delete left behind)."""
    # Children explicitly first: SQLite only cascades with foreign_keys=ON, and being explicit
    # keeps purge correct for tables added later without ON DELETE CASCADE.
    await conn.execute(
        delete(idempotency_table).where(idempotency_table.c.conversation_id == conversation_id)
    )
    await conn.execute(
        delete(messages_table).where(messages_table.c.conversation_id == conversation_id)
    )
    # Queued work on the erased data is cancelled; lifecycle callbacks still go out.
    await conn.execute(
        update(jobs_table)
        .where(
            jobs_table.c.conversation_id == conversation_id,
            jobs_table.c.status.in_(("pending", "queued")),
            jobs_table.c.kind != "deliver_callback",
        )
        .values(status="cancelled", updated_at=utcnow())
    )
    await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))


async def get_conversation_for_service(
    conn: AsyncConnection, conversation_id: uuid.UUID
) -> ConversationOut:
    """A conversation of any tenant, for trusted internal callers."""
    row = (
        await conn.execute(
            select(*COLUMNS).where(
                conversations.c.id == conversation_id, conversations.c.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return to_out(row._mapping)


async def tenant_of(conn: AsyncConnection, conversation_id: uuid.UUID) -> str:
    """The tenant a conversation belongs to."""
    tenant = await conn.scalar(
        select(conversations.c.tenant_id).where(conversations.c.id == conversation_id)
    )
    if tenant is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return str(tenant)
