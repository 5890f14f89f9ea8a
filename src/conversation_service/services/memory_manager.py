"""The context window an agent receives on each turn.

Cost is constant in the length of the history: the read touches the newest messages it returns
(fetched newest-first in small chunks until the budget is spent), the always-included ones
(system and pinned, through a partial index) and the newest summary. Token counts were stored
per message and encoding at write time, so nothing is recounted here.

It is the hottest read of the platform, so it is a few prebuilt statements: one for the policy,
the newest summary, the current session's context and the tracked context, one for the
always-included messages, and one per chunk of recent ones. The session context comes from its
durable copy, which every write updates in the same transaction as it updates the Redis hot
copy, so no Redis call is needed. There is one rendering of a window (``context_window``); the
``format=openai`` view is derived from it (``services.context_view.openai_view``).
"""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    Executable,
    RowMapping,
    Uuid,
    and_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import MAX_SEQ
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.db.tables import sessions_table as sessions_t
from conversation_service.db.tables import summaries_table as summaries_t
from conversation_service.db.tables import tracked_contexts_table as tracked_t
from conversation_service.db.types import UTCDateTime
from conversation_service.errors import ConversationNotFoundError, ValidationError
from conversation_service.models.memory import (
    Encoding,
    MemoryPolicy,
    MemoryStrategy,
)
from conversation_service.services import message_store, message_tree
from conversation_service.services.message_insert import unknown_reference
from conversation_service.services.sessions import TTL as SESSION_TTL
from conversation_service.utils.clock import utcnow
from conversation_service.utils.memory_window import (
    WindowBudgetError,
    WindowCandidate,
    WindowSelection,
    select_window,
)

# The stored per-message (and per-summary) token count of each encoding.
_TOKENS = {Encoding.CL100K: "tokens_cl100k", Encoding.O200K: "tokens_o200k"}
_WINDOW_COLUMNS = (
    *message_store.MESSAGE_COLUMNS,
    messages.c.tokens_cl100k,
    messages.c.tokens_o200k,
    messages.c.branch_id,
)


_SUMMARY_FIELDS = (
    "covers_until_message_id",
    "content",
    "version",
    "covers_until_seq",
    "token_count",
    "tokens_cl100k",
    "tokens_o200k",
    "method",
    "created_at",
)
_conversation_id: BindParameter[uuid.UUID] = bindparam("p_conversation_id")
_newer = summaries_t.alias("newer")
_latest_version = (
    select(func.max(_newer.c.version))
    .where(_newer.c.conversation_id == conversations.c.id)
    .correlate(conversations)
    .scalar_subquery()
)
_active = sessions_t.alias("active")
_current_session = (
    select(_active.c.id)
    .where(
        _active.c.conversation_id == conversations.c.id,
        _active.c.ended_at.is_(None),
        _active.c.last_activity_at > bindparam("p_active_since", type_=UTCDateTime()),
    )
    .order_by(_active.c.id.desc())
    .limit(1)
    .correlate(conversations)
    .scalar_subquery()
)
_leaf = messages.alias("leaf")
_leaf_run = messages.alias("leaf_run")
_covered = messages.alias("covered")
# Everything but the messages in one round trip: the policy, the newest summary (and where the
# message it ends at sits in the tree), the path's leaf (named, else the active one) with its
# run's ancestry, the current session's context (the durable copy, which every write updates)
# and the tracked context.
_HEAD = (
    select(
        conversations.c.memory_policy,
        *(summaries_t.c[name].label(f"summary_{name}") for name in _SUMMARY_FIELDS),
        _covered.c.branch_id.label("covered_branch"),
        _covered.c.seq.label("covered_seq"),
        _leaf.c.id.label("leaf_id"),
        _leaf.c.seq.label("leaf_seq"),
        _leaf.c.branch_id.label("leaf_branch"),
        _leaf.c.deleted_at.label("leaf_deleted_at"),
        _leaf_run.c.branch_ancestry.label("leaf_ancestry"),
        sessions_t.c.id.label("session_id"),
        sessions_t.c.context.label("session_context"),
        tracked_t.c.data.label("tracked_data"),
    )
    .select_from(
        conversations.outerjoin(
            summaries_t,
            and_(
                summaries_t.c.conversation_id == conversations.c.id,
                summaries_t.c.version == _latest_version,
            ),
        )
        .outerjoin(_covered, _covered.c.id == summaries_t.c.covers_until_message_id)
        .outerjoin(
            _leaf,
            and_(
                _leaf.c.conversation_id == conversations.c.id,
                _leaf.c.id
                == func.coalesce(bindparam("p_leaf", type_=Uuid()), conversations.c.active_leaf_id),
            ),
        )
        .outerjoin(_leaf_run, _leaf_run.c.id == _leaf.c.branch_id)
        .outerjoin(sessions_t, sessions_t.c.id == _current_session)
        .outerjoin(tracked_t, tracked_t.c.conversation_id == conversations.c.id)
    )
    .where(conversations.c.id == _conversation_id, conversations.c.deleted_at.is_(None))
)
_ALWAYS = (
    select(*_WINDOW_COLUMNS)
    .where(
        messages.c.conversation_id == _conversation_id,
        # The bare column, as the partial index states it: "IS true" or "= 1" would not
        # match the index predicate and scan the conversation instead.
        literal_column("messages.always_include"),
        messages.c.deleted_at.is_(None),
    )
    .order_by(messages.c.seq)
)
# Recent messages: newest first along the path's runs.
_PATH_READS = message_tree.segment_statements(_WINDOW_COLUMNS)


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """Per-request overrides of the conversation's memory policy (None keeps the policy)."""

    strategy: MemoryStrategy | None = None
    max_tokens: int | None = None
    last_n: int | None = None
    encoding: Encoding | None = None
    # The path's last message; None: the conversation's active leaf.
    leaf: uuid.UUID | None = None


def resolve_policy(stored: dict[str, Any] | None, request: WindowRequest) -> MemoryPolicy:
    """The conversation's policy (or the default) with the request's overrides applied."""
    policy = MemoryPolicy.model_validate(stored or {})
    overrides = {
        name: value
        for name, value in (
            ("strategy", request.strategy),
            ("max_tokens", request.max_tokens),
            ("last_n", request.last_n),
            ("encoding", request.encoding),
        )
        if value is not None
    }
    return policy.model_copy(update=overrides)


def _candidate(row: RowMapping, encoding: Encoding) -> WindowCandidate:
    tokens = row[_TOKENS[encoding]]
    metadata = row["metadata"]
    if not metadata:  # most messages: no pin, no tool links
        return WindowCandidate(seq=row["seq"], role=row["role"], tokens=tokens)
    role = row["role"]
    calls = metadata.get("tool_calls") if role == "assistant" else None
    call_ids = tuple(
        str(call["id"]) for call in calls or () if isinstance(call, dict) and "id" in call
    )
    answered = metadata.get("tool_call_id") if role == "tool" else None
    return WindowCandidate(
        seq=row["seq"],
        role=role,
        tokens=tokens,
        pinned=metadata.get("pinned") is True,
        tool_call_ids=call_ids,
        tool_call_id=str(answered) if answered is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """What a window read found: the policy, the path, the summary used and the selection."""

    policy: MemoryPolicy
    path: message_tree.Path
    summary: dict[str, Any] | None
    selection: WindowSelection
    rows: list[RowMapping]
    session_id: uuid.UUID | None
    session_context: dict[str, Any] | None
    tracked: dict[str, Any]


async def _fetch(
    conn: AsyncConnection, stmt: Executable, params: dict[str, Any]
) -> list[RowMapping]:
    return list((await conn.execute(stmt, params)).mappings())


# Recent messages are read newest first in chunks of this many rows.
CHUNK = 64


async def context_window(
    conn: AsyncConnection, conversation_id: uuid.UUID, request: WindowRequest, *, chunk: int = CHUNK
) -> dict[str, Any]:
    """The window, summary, session context and tracked context of a conversation (JSON-ready,
    in the ``ConversationMemory`` shape); ``context_view.openai_view`` derives the chat form."""
    window = await load_window(conn, conversation_id, request, chunk=chunk)
    summary = window.summary
    return {
        "conversation_id": str(conversation_id),
        "strategy": window.policy.strategy.value,
        "encoding": window.policy.encoding.value,
        "budget": window.policy.max_tokens,
        "token_count": window.selection.tokens,
        "truncated": window.selection.truncated,
        "cut_seq": window.selection.cut_seq,
        "summary": (
            {
                "text": summary["content"],
                "version": summary["version"],
                "covers_until_seq": summary["covers_until_seq"],
                "token_count": summary["token_count"],
                "method": summary["method"],
                "created_at": summary["created_at"],
            }
            if summary is not None
            else None
        ),
        "messages": [message_store.message_json(row) for row in window.rows],
        "session_context": window.session_context,
        "session_id": str(window.session_id) if window.session_id else None,
        "tracked_context": window.tracked,
    }


async def load_window(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    request: WindowRequest,
    *,
    chunk: int = CHUNK,
) -> Window:
    """The window's reads and the choice they feed, along the path to ``request.leaf`` (the
    active path by default). A summary counts only when the message it ends at is on the path."""
    params = {
        "p_conversation_id": conversation_id,
        "p_active_since": utcnow() - SESSION_TTL,
        "p_leaf": request.leaf,
    }
    heads = await _fetch(conn, _HEAD, params)
    if not heads:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    head = heads[0]
    if request.leaf is not None and (head["leaf_id"] is None or head["leaf_deleted_at"]):
        raise unknown_reference("leaf", request.leaf)
    path = (
        message_tree.path_to(
            conversation_id,
            head["leaf_id"],
            head["leaf_branch"],
            head["leaf_seq"],
            head["leaf_ancestry"],
        )
        if head["leaf_id"] is not None
        else message_tree.EMPTY
    )
    policy = resolve_policy(head["memory_policy"], request)
    summary = (
        {name: head[f"summary_{name}"] for name in _SUMMARY_FIELDS}
        if policy.strategy is MemoryStrategy.SUMMARY_BUFFER
        and head["summary_version"] is not None
        and path.holds(head["covered_branch"], head["covered_seq"] or 0)
        else None
    )
    summary_tokens = summary[_TOKENS[policy.encoding]] if summary else 0
    floor = summary["covers_until_seq"] if summary else 0
    always = [
        row
        for row in await _fetch(conn, _ALWAYS, {"p_conversation_id": conversation_id})
        if path.holds(row["branch_id"], row["seq"])
    ]
    pinned = [_candidate(r, policy.encoding) for r in always]
    fixed_tokens = summary_tokens + sum(c.tokens for c in pinned)
    recent = await _recent(
        conn, conversation_id, path, policy, floor, policy.max_tokens - fixed_tokens, chunk
    )
    try:
        selection = select_window(
            [_candidate(r, policy.encoding) for r in reversed(recent)],
            strategy=policy.strategy.value,
            max_tokens=policy.max_tokens,
            last_n=policy.last_n if policy.strategy is MemoryStrategy.LAST_N else None,
            summary_tokens=summary_tokens,
            summary_covers_until_seq=floor,
            always_included=pinned,
        )
    except WindowBudgetError as exc:
        raise ValidationError(str(exc)) from exc
    by_seq = {row["seq"]: row for row in (*always, *recent)}
    session_id = head["session_id"]
    return Window(
        policy=policy,
        path=path,
        summary=summary,
        selection=selection,
        rows=[by_seq[seq] for seq in selection.seqs],
        session_id=session_id,
        session_context=head["session_context"] if session_id is not None else None,
        tracked=head["tracked_data"] if head["tracked_data"] is not None else {},
    )


async def _recent(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    path: message_tree.Path,
    policy: MemoryPolicy,
    floor: int,
    room: int,
    chunk_size: int,
) -> list[RowMapping]:
    """Newest-first rows of the path after ``floor``, just enough to decide the window."""
    wanted = policy.last_n + 1 if policy.strategy is MemoryStrategy.LAST_N else None
    column = _TOKENS[policy.encoding]
    rows: list[RowMapping] = []
    spent = 0
    below = MAX_SEQ
    while True:
        chunk = await message_tree.path_rows(
            conn,
            conversation_id,
            path,
            after=floor,
            before=below,
            ascending=False,
            limit=chunk_size,
            statements=_PATH_READS,
        )
        rows.extend(chunk)
        spent += sum(row[column] for row in chunk)
        if len(chunk) < chunk_size:
            return rows  # history exhausted
        below = chunk[-1]["seq"]
        enough = spent > room or (wanted is not None and len(rows) >= wanted)
        # A tool result at the edge needs its call (older) to be seen, or it would be
        # mistaken for an orphan instead of being truncated with its group.
        if enough and rows[-1]["role"] != "tool":
            return rows
