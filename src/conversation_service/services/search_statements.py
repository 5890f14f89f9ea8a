"""The search statements of each engine (``services.search`` runs them).

PostgreSQL matches ``to_tsquery('simple', …)`` with GIN and scores with ``ts_rank``; SQLite
matches FTS5 and scores with ``db.search_rank``. Each branch (content, title) keeps its best
``offset + limit``; a message found both ways counts once, with its better score. One statement
is built per shape of filters and dialect, then SQLAlchemy caches its SQL.
"""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.models.conversation import ConversationStatus
from conversation_service.services.auth import Principal
from conversation_service.services.search_query import (
    ParsedQuery,
    fts5_match,
    rank_terms,
    tsquery,
)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What narrows a search besides the query (all optional)."""

    conversation_id: uuid.UUID | None = None
    agent_id: str | None = None
    role: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_archived: bool = False


@dataclass(frozen=True, slots=True)
class _Shape:
    """Which filters a search has: one prebuilt statement per shape and dialect."""

    dialect: str
    conversation: bool
    agent: bool
    role: bool
    after: bool
    before: bool
    include_archived: bool

    @classmethod
    def of(cls, dialect: str, filters: SearchFilters) -> "_Shape":
        return cls(
            dialect,
            filters.conversation_id is not None,
            filters.agent_id is not None,
            filters.role is not None,
            filters.created_after is not None,
            filters.created_before is not None,
            filters.include_archived,
        )


def _params(
    principal: Principal,
    query: ParsedQuery,
    filters: SearchFilters,
    limit: int,
    offset: int,
    window: int,
) -> dict[str, Any]:
    return {
        "p_tenant": principal.tenant_id,
        "p_user": principal.user_id,
        "p_conversation_id": filters.conversation_id,
        "p_agent_id": filters.agent_id,
        "p_role": filters.role,
        "p_after": filters.created_after,
        "p_before": filters.created_before,
        # Each branch's best ``offset + limit`` hold every hit of the page, even after a
        # message found both ways is counted once.
        "p_top": offset + limit,
        "p_window": window,
        "p_limit": limit,
        "p_offset": offset,
        "mq": fts5_match(query),
        "tq": tsquery(query),
        "rq": rank_terms(query),
    }


def _conversation_scope(shape: _Shape) -> list[ColumnElement[bool]]:
    c = conversations.c
    where = [c.tenant_id == bindparam("p_tenant"), c.user_id == bindparam("p_user")]
    where.append(c.deleted_at.is_(None))
    if not shape.include_archived:
        where.append(c.status != literal_column(f"'{ConversationStatus.ARCHIVED.value}'"))
    if shape.conversation:
        where.append(c.id == bindparam("p_conversation_id", type_=c.id.type))
    if shape.agent:
        where.append(c.agent_id == bindparam("p_agent_id"))
    return where


def _message_scope(m: Any, shape: _Shape) -> list[ColumnElement[bool]]:
    where = [m.c.deleted_at.is_(None)]
    if shape.role:
        where.append(m.c.role == bindparam("p_role"))
    if shape.after:
        where.append(m.c.created_at > bindparam("p_after", type_=m.c.created_at.type))
    if shape.before:
        where.append(m.c.created_at < bindparam("p_before", type_=m.c.created_at.type))
    return where


# The stored vector of a message (migration 0008): the same expression, computed on write.
_MESSAGE_VECTOR: Final = literal_column("messages.search_vector", type_=TSVECTOR())


def _pg_vector(t: FromClause) -> ColumnElement[Any]:
    # Exactly the expression of the conversations' GIN index (migration 0007), or it would not
    # be used.
    simple: ColumnElement[Any] = literal_column("'simple'::regconfig")
    stems = func.setweight(func.to_tsvector(simple, t.c.search_stems), literal_column("'A'"))
    words = func.setweight(func.to_tsvector(simple, t.c.search_words), literal_column("'B'"))
    return stems.op("||")(words)


def _first_message(shape: _Shape) -> Any:
    """The first message of the outer row's conversation that the filters admit."""
    first = messages.alias("first_message")
    return (
        select(first.c.id)
        .where(first.c.conversation_id == conversations.c.id, *_message_scope(first, shape))
        .order_by(first.c.seq)
        .limit(1)
        .scalar_subquery()
    )


def _sqlite_rank(t: FromClause) -> ColumnElement[Any]:
    """SQLite's score of a row (``db.search_rank``, registered by ``db.engine``)."""
    terms = bindparam("rq", type_=String())
    return func.search_rank(t.c.search_stems, t.c.search_words, terms, type_=Float())


def _fts_hits(fts: str, match: Any) -> Any:
    """Rowids of one FTS5 table's matches."""
    return (
        select(literal_column(f"{fts}.rowid").label("rid"))
        .select_from(table(fts))
        .where(text(f"{fts} MATCH :mq").bindparams(match))
        .cte(f"{fts}_hits")
        .prefix_with("MATERIALIZED")
    )


def _pg_content(shape: _Shape, ts: ColumnElement[Any]) -> Select[Any]:
    """The newest ``p_window`` content matches, then their ``ts_rank``. The planner finds them
    through GIN (rare words) or the tenant's messages newest first (common words; custom plans,
    see ``hits``)."""
    joined = messages.join(conversations, conversations.c.id == messages.c.conversation_id)
    candidates = (
        select(messages.c.id, messages.c.created_at, _MESSAGE_VECTOR.label("vector"))
        .select_from(joined)
        .where(
            _MESSAGE_VECTOR.op("@@")(ts),
            messages.c.tenant_id == bindparam("p_tenant"),
            *_conversation_scope(shape),
            *_message_scope(messages, shape),
        )
        .order_by(messages.c.created_at.desc(), messages.c.id.desc())
        .limit(bindparam("p_window", type_=Integer()))
        .subquery("candidates")
    )
    return select(
        candidates.c.id.label("message_id"),
        func.ts_rank(candidates.c.vector, ts).label("score"),
        candidates.c.created_at.label("created_at"),
    )


def _sqlite_content(shape: _Shape) -> Select[Any]:
    """The newest ``p_window`` content matches (highest rowids), with their score."""
    fts = table("messages_fts")
    rowid: ColumnElement[Any] = literal_column("messages_fts.rowid")
    # The FTS5 table is walked first, newest rowid first, and stops after ``p_window`` rows
    # in scope: the score is only computed for those.
    candidates = (
        select(messages.c.id, messages.c.created_at, _sqlite_rank(messages).label("score"))
        .select_from(
            fts.join(messages, literal_column("messages.rowid") == rowid).join(
                conversations, conversations.c.id == messages.c.conversation_id
            )
        )
        .where(
            text("messages_fts MATCH :mq").bindparams(bindparam("mq", type_=String())),
            *_conversation_scope(shape),
            *_message_scope(messages, shape),
        )
        .order_by(rowid.desc())
        .limit(bindparam("p_window", type_=Integer()))
        .subquery("candidates")
    )
    return select(
        candidates.c.id.label("message_id"),
        candidates.c.score,
        candidates.c.created_at.label("created_at"),
    )


def _branches(shape: _Shape) -> list[Select[Any]]:
    """The message-content and the title match, each its ``p_top`` best (message id, score)."""
    scope = _conversation_scope(shape)
    top = bindparam("p_top", type_=Integer())
    if shape.dialect == "postgresql":
        ts = func.to_tsquery(literal_column("'simple'::regconfig"), bindparam("tq", type_=String()))
        c_vector = _pg_vector(conversations)
        content = _pg_content(shape, ts)
        title = select(
            _first_message(shape).label("message_id"),
            func.ts_rank(c_vector, ts).label("score"),
        ).where(c_vector.op("@@")(ts), *scope)
    else:
        match = bindparam("mq", type_=String())
        c_hits = _fts_hits("conversations_fts", match)
        content = _sqlite_content(shape)
        title = (
            select(
                _first_message(shape).label("message_id"),
                _sqlite_rank(conversations).label("score"),
            )
            .select_from(
                conversations.join(c_hits, c_hits.c.rid == literal_column("conversations.rowid"))
            )
            .where(*scope)
        )
    content = content.order_by(
        literal_column("score").desc(), literal_column("created_at").desc()
    ).limit(top)
    titled = title.subquery("titled")
    first = messages.alias("title_message")
    title_hits = (
        select(titled.c.message_id, titled.c.score, first.c.created_at)
        .join(first, first.c.id == titled.c.message_id)
        .order_by(titled.c.score.desc(), first.c.created_at.desc())
        .limit(top)
    )
    return [content, title_hits]


@functools.cache
def _statement(shape: _Shape) -> Any:
    """The page of hits for one shape of search, built once (SQLAlchemy then caches its SQL)."""
    both = union_all(*(b.subquery().select() for b in _branches(shape))).subquery("both")
    best = (
        select(both.c.message_id, func.max(both.c.score).label("score"))
        .group_by(both.c.message_id)
        .subquery("best")
    )
    score = best.c.score.cast(Float)
    return (
        select(
            messages.c.id,
            messages.c.conversation_id,
            messages.c.seq,
            messages.c.role,
            messages.c.created_at,
            messages.c.content,
            messages.c.language,
            conversations.c.title,
            score.label("score"),
        )
        .select_from(
            best.join(messages, messages.c.id == best.c.message_id).join(
                conversations, conversations.c.id == messages.c.conversation_id
            )
        )
        .order_by(score.desc(), messages.c.created_at.desc(), messages.c.id.desc())
        .limit(bindparam("p_limit", type_=Integer()))
        .offset(bindparam("p_offset", type_=Integer()))
    )


async def hits(
    conn: AsyncConnection,
    principal: Principal,
    query: ParsedQuery,
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
    window: int,
) -> list[Any]:
    """Rows of the page: message columns, the conversation's title and the score."""
    stmt = _statement(_Shape.of(conn.dialect.name, filters))
    params = _params(principal, query, filters, limit, offset, window)
    if conn.dialect.name != "postgresql":
        return list((await conn.execute(stmt, params)).all())
    # Which index serves a search depends on how common its words are, which a generic plan
    # of the prepared statement cannot know: plan each search for its own words.
    await conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
    try:
        return list((await conn.execute(stmt, params)).all())
    finally:
        await conn.exec_driver_sql("RESET plan_cache_mode")


__all__ = ["SearchFilters", "hits"]
