"""Messages: the append hot path, keyset history pages, metadata updates and deletion.

The append is one statement on PostgreSQL (a data-modifying CTE bumps the conversation's
``last_seq`` under its row lock and inserts the message with that seq), two on SQLite. The row
lock is what makes ``seq`` gap-free and unique under concurrency; a rolled-back append rolls
back its increment too.
"""

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, NoReturn

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    RowMapping,
    String,
    bindparam,
    insert,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import MAX_SEQ
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.reads import ReadConnection, ReadQuery, Row
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import (
    ConversationNotFoundError,
    ConversationNotWritableError,
    InvalidCursorError,
    MessageNotFoundError,
)
from conversation_service.models.common import Sentiment
from conversation_service.models.conversation import ConversationStatus
from conversation_service.models.message import (
    MessageCreate,
    MessageOut,
    MessageStatus,
    MessageUpdate,
    Role,
)
from conversation_service.models.session import SessionOut
from conversation_service.queue.jobs import JobKind, JobSpec, queue_for, record_jobs
from conversation_service.services import callbacks, idempotency
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import owned_by, require_owned
from conversation_service.services.sessions import SessionActivity, get_session, touch_session
from conversation_service.utils.clock import new_id, utcnow
from conversation_service.utils.cursors import CursorCodec, CursorError
from conversation_service.utils.json_merge import merge_patch
from conversation_service.utils.memory_utils import SUPPORTED_ENCODINGS, message_tokens

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.seq,
    messages.c.role,
    messages.c.content,
    messages.c.content_parts,
    messages.c.status,
    messages.c.metadata,
    messages.c.token_count,
    messages.c.language,
    messages.c.sentiment_label,
    messages.c.sentiment_score,
    messages.c.sentiment_model,
    messages.c.parent_id,
    messages.c.created_at,
    messages.c.updated_at,
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The appended message, or the stored one when an Idempotency-Key was replayed.

    ``jobs`` is the work recorded in the same transaction (outbox rows), to hand to the relay
    once the transaction has committed.
    """

    message: dict[str, Any]
    replayed: bool
    jobs: tuple[JobSpec, ...] = ()
    # The session this activity started, if it started one (for the session.started event).
    started_session: SessionOut | None = None


def json_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, exactly as Pydantic renders it."""
    return value.isoformat().replace("+00:00", "Z")


def message_wire(m: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """The API shape of a message row with ids and times left as ``UUID``/``datetime``.

    For responses rendered by orjson with ``OPT_UTC_Z`` (``JSONBytesResponse``), which writes
    them exactly as ``message_json`` spells them, in C: converting them in Python cost about
    8 µs per message, most of a history page. ``MessageOut`` documents this shape.
    """
    label = m["sentiment_label"]
    return {
        "id": m["id"],
        "conversation_id": m["conversation_id"],
        "seq": m["seq"],
        "role": m["role"],
        "content": m["content"],
        "content_parts": m["content_parts"],
        "status": m["status"],
        "metadata": m["metadata"],
        "token_count": m["token_count"],
        "language": m["language"],
        "sentiment": (
            {"label": label, "score": m["sentiment_score"], "model": m["sentiment_model"]}
            if label is not None
            else None
        ),
        "parent_id": m["parent_id"],
        "created_at": m["created_at"],
        "updated_at": m["updated_at"],
    }


def message_json(m: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """The API shape of a message row as JSON-ready values (plain ``str`` ids and times).

    For payloads stored or handed to code that does not render with ``OPT_UTC_Z``.
    """
    out = message_wire(m)
    parent = out["parent_id"]
    out["id"] = str(out["id"])
    out["conversation_id"] = str(out["conversation_id"])
    out["parent_id"] = str(parent) if parent is not None else None
    out["created_at"] = json_time(out["created_at"])
    out["updated_at"] = json_time(out["updated_at"])
    return out


def to_out(m: Mapping[str, Any] | RowMapping) -> MessageOut:
    """Build the API shape from a row of ``MESSAGE_COLUMNS``."""
    sentiment = (
        Sentiment(
            label=m["sentiment_label"], score=m["sentiment_score"], model=m["sentiment_model"]
        )
        if m["sentiment_label"] is not None
        else None
    )
    return MessageOut(
        id=m["id"],
        conversation_id=m["conversation_id"],
        seq=m["seq"],
        role=m["role"],
        content=m["content"],
        content_parts=m["content_parts"],
        status=m["status"],
        metadata=m["metadata"],
        token_count=m["token_count"],
        language=m["language"],
        sentiment=sentiment,
        parent_id=m["parent_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A message to append, whoever wrote it (user API, orchestrator, OpenAI-compatible API)."""

    role: Role
    content: str
    content_parts: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: MessageStatus = MessageStatus.COMPLETED
    parent_id: uuid.UUID | None = None


def user_draft(data: MessageCreate) -> MessageDraft:
    """The draft of a user message as the public API received it."""
    return MessageDraft(
        role=Role.USER,
        content=data.content,
        content_parts=(
            [part.model_dump(mode="json", exclude_none=True) for part in data.content_parts]
            if data.content_parts is not None
            else None
        ),
        metadata=data.metadata,
        parent_id=data.parent_id,
    )


# What a message row holds before its processing job has run.
UNPROCESSED: Final[dict[str, Any]] = {
    "language": None,
    "sentiment_label": None,
    "sentiment_score": None,
    "sentiment_model": None,
}


async def row_for(
    principal: Principal,
    conversation_id: uuid.UUID,
    draft: MessageDraft,
    message_id: uuid.UUID,
    now: datetime,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The ``INSERT_COLUMNS`` of a new message, token counts included."""
    tokens = await count_message_tokens(draft.role.value, draft.content)
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "tenant_id": principal.tenant_id,
        "role": draft.role.value,
        "content": draft.content,
        "content_parts": draft.content_parts,
        "status": draft.status.value,
        "metadata": draft.metadata,
        "parent_id": draft.parent_id,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "updated_at": now,
        "tokens_cl100k": tokens["cl100k_base"],
        "tokens_o200k": tokens["o200k_base"],
        "token_count": tokens["o200k_base"],
        "always_include": is_always_included(draft.role.value, draft.metadata),
    }


async def append_user_message(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    data: MessageCreate,
    *,
    settings: ConversationSettings,
    idempotency_key: str | None = None,
) -> AppendResult:
    """Append a user message and record its work (processing, the orchestrator's callback).

    A repeated Idempotency-Key returns the first response and records nothing.
    """
    draft = user_draft(data)
    fingerprint = {"conversation_id": str(conversation_id), **data.model_dump(mode="json")}
    result = await append_message(
        conn,
        principal,
        conversation_id,
        draft,
        settings=settings,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        defer_outbox=True,
    )
    if result.replayed:
        return result
    session_id, started = await touch_session(
        conn, principal, conversation_id, activity(data.metadata)
    )
    if started:
        result = replace(result, started_session=await get_session(conn, session_id))
    specs = list(result.jobs)
    if settings.orchestrator_callback_url:
        # The orchestrator runs the agent on this callback: a person is waiting, so it is urgent.
        specs.append(
            await callbacks.record_callback(
                conn,
                settings,
                tenant_id=principal.tenant_id,
                conversation_id=conversation_id,
                event_type="message.created",
                data={"conversation_id": str(conversation_id), "message": result.message},
                url=settings.orchestrator_callback_url,
                urgent=True,
            )
        )
    # Every outbox row of the append in one insert.
    return replace(result, jobs=tuple(await record_jobs(conn, specs)))


def activity(metadata: dict[str, Any]) -> SessionActivity:
    """Channel, client and locale of a message's session, from its metadata."""

    def text(key: str, limit: int) -> str | None:
        value = metadata.get(key)
        return value[:limit] if isinstance(value, str) and value else None

    return SessionActivity(
        channel=text("channel", 64), client=text("client", 256), locale=text("locale", 35)
    )


async def append_message(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    draft: MessageDraft,
    *,
    settings: ConversationSettings | None = None,
    idempotency_key: str | None = None,
    fingerprint: dict[str, Any] | None = None,
    defer_outbox: bool = False,
) -> AppendResult:
    """Append a message with the next seq of the principal's conversation.

    With an ``idempotency_key``, ``fingerprint`` (the request as received) decides whether a
    repeat is a replay (same request) or a misuse (different request). With ``settings`` the
    message's processing job is recorded in the same transaction (the outbox), or only returned
    with ``defer_outbox`` for the caller to record with its own rows in one insert.
    """
    scope = None
    if idempotency_key is not None:
        scope = idempotency.IdempotencyScope.build(principal, idempotency_key, fingerprint or {})
        replay = await idempotency.find_replay(conn, scope)
        if replay is not None:
            return AppendResult(message=replay, replayed=True)

    now = utcnow()
    message_id = new_id()
    values = await row_for(principal, conversation_id, draft, message_id, now, idempotency_key)
    seq = await _insert_with_next_seq(conn, principal, conversation_id, values, now)
    message = message_json({**values, **UNPROCESSED, "seq": seq})
    if scope is not None:
        await idempotency.record_response(
            conn, scope, conversation_id=conversation_id, status_code=201, response=message
        )
    jobs: list[JobSpec] = []
    if settings is not None:
        jobs = [
            JobSpec(
                kind=JobKind.PROCESS_MESSAGE,
                queue=queue_for(JobKind.PROCESS_MESSAGE, urgent=draft.role is Role.USER),
                tenant_id=principal.tenant_id,
                conversation_id=conversation_id,
                message_id=message_id,
                max_attempts=settings.job_max_attempts,
            )
        ]
        if not defer_outbox:
            jobs = await record_jobs(conn, jobs)
    return AppendResult(message=message, replayed=False, jobs=tuple(jobs))


async def record_processing(
    conn: AsyncConnection,
    settings: ConversationSettings,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
) -> list[JobSpec]:
    """Record the processing job of a message whose content became final (agent replies).

    One per message, ever (dedupe key): language, token counts, sentiment and the summary check.
    """
    tenant = await conn.scalar(
        select(conversations.c.tenant_id).where(conversations.c.id == conversation_id)
    )
    if tenant is None:
        return []
    spec = JobSpec(
        kind=JobKind.PROCESS_MESSAGE,
        queue=queue_for(JobKind.PROCESS_MESSAGE),
        tenant_id=str(tenant),
        conversation_id=conversation_id,
        message_id=message_id,
        max_attempts=settings.job_max_attempts,
        dedupe_key=f"process:{message_id}",
    )
    return await record_jobs(conn, [spec])


# Content up to this size is counted inline; longer content is counted in a worker thread so
# the event loop keeps serving other requests meanwhile.
_INLINE_COUNT_CHARS = 4096


async def count_message_tokens(role: str, content: str) -> dict[str, int]:
    """Exact per-message tokens (with chat overhead) for every supported encoding."""

    def count() -> dict[str, int]:
        return {
            encoding: message_tokens(role, content, encoding) for encoding in SUPPORTED_ENCODINGS
        }

    if len(content) <= _INLINE_COUNT_CHARS:
        return count()
    return await asyncio.to_thread(count)


def is_always_included(role: str, metadata: dict[str, Any]) -> bool:
    """System messages and messages pinned in metadata are in every context window."""
    return role == Role.SYSTEM.value or metadata.get("pinned") is True


INSERT_COLUMNS = (
    "id",
    "conversation_id",
    "tenant_id",
    "role",
    "content",
    "content_parts",
    "status",
    "metadata",
    "parent_id",
    "idempotency_key",
    "created_at",
    "updated_at",
    "tokens_cl100k",
    "tokens_o200k",
    "token_count",
    "always_include",
)


def bump_statement() -> Any:
    """UPDATE … RETURNING last_seq under the conversation's row lock (bind parameters only)."""
    return (
        update(conversations)
        .where(
            conversations.c.id == bindparam("b_conversation_id"),
            conversations.c.tenant_id == bindparam("b_tenant_id"),
            conversations.c.user_id == bindparam("b_user_id"),
            conversations.c.deleted_at.is_(None),
            # Constants inline (not anonymous binds): INSERT … FROM SELECT executed with a
            # parameter dict requires every bind to be named in it.
            conversations.c.status == literal_column(f"'{ConversationStatus.ACTIVE.value}'"),
        )
        .values(
            last_seq=conversations.c.last_seq + literal_column("1"),
            message_count=conversations.c.message_count + literal_column("1"),
            token_count=conversations.c.token_count + bindparam("b_tokens", type_=Integer()),
            updated_at=bindparam("b_now", type_=messages.c.created_at.type),
            last_message_at=bindparam("b_now", type_=messages.c.created_at.type),
        )
        .returning(conversations.c.last_seq)
    )


def append_statement(seq: ColumnElement[int]) -> Any:
    """INSERT … SELECT of the message in the ``m_<column>`` parameters, with ``seq``.

    With ``bump_statement().cte("bumped").c.last_seq`` it is the whole append in one statement
    on PostgreSQL; on SQLite ``seq`` is a parameter holding what the bump returned.
    ``services.fast_append`` adds the outbox rows and the session touch around it.
    """
    # Bind names must not be column names: a parameter dict whose keys match columns would
    # also become SET clauses of the CTE's UPDATE.
    source = select(
        *(bindparam(f"m_{name}", type_=messages.c[name].type) for name in INSERT_COLUMNS), seq
    )
    return insert(messages).from_select([*INSERT_COLUMNS, "seq"], source)


# Built once: every append reuses the compiled form from SQLAlchemy's statement cache.
_BUMP = bump_statement()
_PG_APPEND = append_statement(bump_statement().cte("bumped").c.last_seq).returning(messages.c.seq)
_INSERT = insert(messages)


async def _insert_with_next_seq(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    values: dict[str, Any],
    now: Any,
) -> int:
    params = {
        "b_conversation_id": conversation_id,
        "b_tenant_id": principal.tenant_id,
        "b_user_id": principal.user_id,
        "b_tokens": values["token_count"],
        "b_now": now,
    }
    seq: int | None
    if conn.dialect.name == "postgresql":
        row_params = {f"m_{name}": values[name] for name in INSERT_COLUMNS}
        seq = (await conn.execute(_PG_APPEND, {**params, **row_params})).scalar_one_or_none()
    else:
        seq = (await conn.execute(_BUMP, params)).scalar_one_or_none()
        if seq is not None:
            await conn.execute(_INSERT, {**values, "seq": seq})
    if seq is None:
        await _explain_refused_append(conn, principal, conversation_id)
    return int(seq)


async def _explain_refused_append(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> NoReturn:
    status = (
        await conn.execute(
            select(conversations.c.status).where(owned_by(principal, conversation_id))
        )
    ).scalar_one_or_none()
    if status is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    raise ConversationNotWritableError(
        f"conversation is {status}; set its status to active to add messages"
    )


def _page_statement(ascending: bool, columns: tuple[Any, ...] = MESSAGE_COLUMNS) -> Any:
    """A history page as one prebuilt statement (compiled once, cached by SQLAlchemy)."""
    return (
        select(*columns)
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(
            messages.c.conversation_id == bindparam("p_conversation_id"),
            messages.c.deleted_at.is_(None),
            messages.c.seq > bindparam("p_after", type_=BigInteger()),
            messages.c.seq < bindparam("p_before", type_=BigInteger()),
            conversations.c.tenant_id == bindparam("p_tenant_id"),
            conversations.c.user_id == bindparam("p_user_id"),
            conversations.c.deleted_at.is_(None),
        )
        .order_by(messages.c.seq.asc() if ascending else messages.c.seq.desc())
        .limit(bindparam("p_limit", type_=Integer()))
    )


def _sqlite_uuid_text(column: str) -> str:
    # Ids are stored as 32 lower-case hex digits; the API spells them 8-4-4-4-12.
    parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    return " || '-' || ".join(f"substr({column}, {start}, {size})" for start, size in parts)


# A message as its API JSON (``message_wire`` rendered by ``JSONBytesResponse``), built on the
# read connection's thread by SQLite's JSON functions (C, without the GIL) instead of converting
# 16 columns per row to Python objects and back to JSON. SQLite writes the middle of the object,
# from ``seq`` to ``parent_id``: strings escaped as orjson escapes them, stored JSON (orjson's
# text) copied as it is, the one float (the sentiment score, rounded to 4 decimals where it is
# computed) in 15 significant digits as orjson writes it. The ends are plain ASCII that Python
# splices on faster than SQLite's string functions build them (``_wire_message``): the id, the
# page's one conversation id and the two times (formatting those in SQL was half the query's
# time). ``tests/services/test_wire_page.py`` checks both renderings agree on arbitrary messages.
_SQLITE_MESSAGE_JSON: Final = f"""json_object(
    'seq', messages.seq,
    'role', messages.role,
    'content', messages.content,
    'content_parts', CASE WHEN messages.content_parts = 'null' THEN NULL
        ELSE json(messages.content_parts) END,
    'status', messages.status,
    'metadata', json(messages.metadata),
    'token_count', messages.token_count,
    'language', messages.language,
    'sentiment', CASE WHEN messages.sentiment_label IS NULL THEN NULL ELSE json_object(
        'label', messages.sentiment_label,
        'score', messages.sentiment_score,
        'model', messages.sentiment_model) END,
    'parent_id', CASE WHEN messages.parent_id IS NULL THEN NULL
        ELSE {_sqlite_uuid_text("messages.parent_id")} END)"""
_WIRE_COLUMNS: Final[tuple[Any, ...]] = (
    literal_column(_SQLITE_MESSAGE_JSON).label("wire"),
    # As stored (no type processors): 32 hex digits, naive "YYYY-MM-DD HH:MM:SS.ffffff" UTC.
    type_coerce(messages.c.id, String()).label("id_text"),
    type_coerce(messages.c.created_at, String()).label("created_text"),
    type_coerce(messages.c.updated_at, String()).label("updated_text"),
    messages.c.seq,
)


def _wire_message(row: Row, conversation_id: str) -> str:
    """A message's API JSON from a ``_WIRE_COLUMNS`` row."""
    h = row["id_text"]
    return (
        f'{{"id":"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",'
        f'"conversation_id":"{conversation_id}",{row["wire"][1:-1]},'
        f'"created_at":"{_wire_time(row["created_text"])}",'
        f'"updated_at":"{_wire_time(row["updated_text"])}"}}'
    )


def _wire_time(stored: str) -> str:
    # orjson's OPT_UTC_Z spelling of a stored time: "T", "Z", no fraction when it is zero.
    return stored.replace(" ", "T").replace(".000000", "") + "Z"


_PAGE_ASC = ReadQuery(_page_statement(ascending=True))
_PAGE_DESC = ReadQuery(_page_statement(ascending=False))
_WIRE_PAGE_ASC = ReadQuery(_page_statement(ascending=True, columns=_WIRE_COLUMNS))
_WIRE_PAGE_DESC = ReadQuery(_page_statement(ascending=False, columns=_WIRE_COLUMNS))
_OWNED = ReadQuery(
    select(conversations.c.id).where(
        conversations.c.id == bindparam("p_conversation_id"),
        conversations.c.tenant_id == bindparam("p_tenant_id"),
        conversations.c.user_id == bindparam("p_user_id"),
        conversations.c.deleted_at.is_(None),
    )
)


def _visible(principal: Principal, conversation_id: uuid.UUID) -> list[ColumnElement[bool]]:
    # Joining the owner check into the page query keeps a history read to one round trip.
    return [
        messages.c.conversation_id == conversation_id,
        messages.c.deleted_at.is_(None),
        conversations.c.id == messages.c.conversation_id,
        owned_by(principal, conversation_id),
    ]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a history: keyset bounds by ``seq`` or a cursor, order and size."""

    after_seq: int | None
    before_seq: int | None
    order: str
    limit: int
    cursor: str | None = None


async def list_messages(
    conn: ReadConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    page: PageRequest,
    *,
    codec: CursorCodec,
    render: Callable[[Mapping[str, Any]], dict[str, Any]] = message_json,
) -> dict[str, Any]:
    """One page of history, a range scan on (conversation_id, seq) whatever the length.

    Returned in the ``Page[MessageOut]`` shape, each row rendered by ``render``.
    """
    rows, next_cursor = await _page_rows(
        conn, principal, conversation_id, page, codec, (_PAGE_ASC, _PAGE_DESC)
    )
    return {
        "data": [render(row) for row in rows],
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
    }


async def list_messages_json(
    conn: ReadConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    page: PageRequest,
    *,
    codec: CursorCodec,
) -> bytes:
    """``list_messages`` rendered as the API's JSON body (the history route's hot path).

    On SQLite each message arrives as its JSON from the database (``_SQLITE_MESSAGE_JSON``).
    """
    if conn.dialect_name != "sqlite":
        rendered = await list_messages(
            conn, principal, conversation_id, page, codec=codec, render=message_wire
        )
        # asyncpg's own UUID type, which orjson does not know, goes through ``str``.
        return orjson.dumps(rendered, default=str, option=orjson.OPT_UTC_Z)
    rows, next_cursor = await _page_rows(
        conn, principal, conversation_id, page, codec, (_WIRE_PAGE_ASC, _WIRE_PAGE_DESC)
    )
    conversation = str(conversation_id)
    items = ",".join([_wire_message(row, conversation) for row in rows])
    tail = orjson.dumps({"has_more": next_cursor is not None, "next_cursor": next_cursor})
    return b'{"data":[' + items.encode() + b"]," + tail[1:]


async def _page_rows(
    conn: ReadConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    page: PageRequest,
    codec: CursorCodec,
    queries: tuple[ReadQuery, ReadQuery],
) -> tuple[Sequence[Row], str | None]:
    """The page's rows (by the ascending or descending query) and the next page's cursor.

    A cursor narrows the bounds; unbounded sides get sentinel bounds so one prebuilt statement
    per order serves every page. An empty page of a conversation the caller does not own is a
    404, not an empty list.
    """
    order, after_seq, before_seq = page.order, page.after_seq, page.before_seq
    if page.cursor is not None:
        order, position = _decode_cursor(codec, page.cursor, conversation_id)
        if order == "asc":
            after_seq = position if after_seq is None else max(after_seq, position)
        else:
            before_seq = position if before_seq is None else min(before_seq, position)
    params = {
        "p_conversation_id": conversation_id,
        "p_tenant_id": principal.tenant_id,
        "p_user_id": principal.user_id,
        "p_after": after_seq if after_seq is not None else -1,
        "p_before": before_seq if before_seq is not None else MAX_SEQ,
        "p_limit": page.limit + 1,
    }
    ascending, descending = queries
    rows = await conn.fetch(ascending if order == "asc" else descending, params)
    if not rows and not await conn.fetch(_OWNED, params):
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    if len(rows) <= page.limit:
        return rows, None
    kept = rows[: page.limit]
    cursor = codec.encode({"k": "msg", "c": str(conversation_id), "o": order, "s": kept[-1]["seq"]})
    return kept, cursor


def _decode_cursor(codec: CursorCodec, cursor: str, conversation_id: uuid.UUID) -> tuple[str, int]:
    try:
        payload = codec.decode(cursor)
        if payload.get("k") != "msg" or payload.get("c") != str(conversation_id):
            raise CursorError("cursor belongs to another list")
        order, seq = payload["o"], payload["s"]
        if order not in ("asc", "desc") or not isinstance(seq, int) or seq < 0:
            raise CursorError("cursor is not well-formed")
        return order, seq
    except (CursorError, KeyError) as exc:
        raise InvalidCursorError(str(exc)) from exc


async def get_message(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> dict[str, Any]:
    """One visible message of one of the caller's conversations (JSON-ready)."""
    return message_json(await _visible_row(conn, principal, conversation_id, message_id))


async def _visible_row(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> RowMapping:
    stmt = (
        select(*MESSAGE_COLUMNS)
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(*_visible(principal, conversation_id), messages.c.id == message_id)
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        await require_owned(conn, principal, conversation_id)
        raise MessageNotFoundError(f"message {message_id} not found")
    return row


async def update_message_metadata(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    patch: MessageUpdate,
) -> dict[str, Any]:
    """Merge-patch a message's metadata (RFC 7396)."""
    current = await _visible_row(conn, principal, conversation_id, message_id)
    metadata = merge_patch(current["metadata"], patch.metadata)
    stmt = (
        update(messages)
        .where(messages.c.id == message_id, messages.c.conversation_id == conversation_id)
        .values(
            metadata=metadata,
            always_include=is_always_included(current["role"], metadata),
            updated_at=utcnow(),
        )
        .returning(*MESSAGE_COLUMNS)
    )
    return message_json((await conn.execute(stmt)).mappings().one())


async def delete_message(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """Delete a message: its content is erased and it disappears from every read.

    The row stays as a tombstone so ``seq`` remains gap-free for clients that resume by seq.
    """
    current = await _visible_row(conn, principal, conversation_id, message_id)
    now = utcnow()
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.conversation_id == conversation_id)
        .values(
            content="",
            content_parts=None,
            metadata={},
            always_include=False,
            deleted_at=now,
            updated_at=now,
        )
    )
    await conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(
            message_count=conversations.c.message_count - 1,
            token_count=conversations.c.token_count - (current["token_count"] or 0),
            updated_at=now,
        )
    )
