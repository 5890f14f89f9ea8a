"""The context window an agent receives on each turn.

Cost is constant in the length of the history: the read touches the newest messages it returns
(fetched newest-first in small chunks until the budget is spent), the always-included ones
(system and pinned, through a partial index) and the newest summary. Token counts were stored
per message and encoding at write time, so nothing is recounted here.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import RowMapping, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ConversationNotFoundError, ValidationError
from conversation_service.models.memory import (
    ChatMessage,
    ConversationMemory,
    Encoding,
    MemoryPolicy,
    MemoryStrategy,
    OpenAIContext,
    SummaryOut,
)
from conversation_service.services import context_tracker, message_store, summaries
from conversation_service.services import sessions as session_service
from conversation_service.utils.memory_window import (
    WindowBudgetError,
    WindowCandidate,
    WindowSelection,
    select_window,
)

_TOKEN_COLUMN = {Encoding.CL100K: messages.c.tokens_cl100k, Encoding.O200K: messages.c.tokens_o200k}
_WINDOW_COLUMNS = (
    *message_store.MESSAGE_COLUMNS,
    messages.c.tokens_cl100k,
    messages.c.tokens_o200k,
)


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """Per-request overrides of the conversation's memory policy (None keeps the policy)."""

    strategy: MemoryStrategy | None = None
    max_tokens: int | None = None
    last_n: int | None = None
    encoding: Encoding | None = None


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
    metadata = row["metadata"] or {}
    calls = metadata.get("tool_calls") if row["role"] == "assistant" else None
    call_ids = tuple(
        str(call["id"]) for call in calls or () if isinstance(call, dict) and "id" in call
    )
    answered = metadata.get("tool_call_id") if row["role"] == "tool" else None
    return WindowCandidate(
        seq=row["seq"],
        role=row["role"],
        tokens=row["tokens_o200k"] if encoding is Encoding.O200K else row["tokens_cl100k"],
        pinned=metadata.get("pinned") is True,
        tool_call_ids=call_ids,
        tool_call_id=str(answered) if answered is not None else None,
    )


_SUMMARY_TOKENS = {Encoding.CL100K: "tokens_cl100k", Encoding.O200K: "tokens_o200k"}


@dataclass(frozen=True, slots=True)
class _Window:
    policy: MemoryPolicy
    summary: RowMapping | None
    selection: WindowSelection
    rows: list[RowMapping]
    session_id: uuid.UUID | None
    session_context: dict[str, Any] | None
    tracked: dict[str, Any]


def _chat_json(row: RowMapping) -> dict[str, Any]:
    metadata = row["metadata"] or {}
    role = row["role"]
    return {
        "role": role,
        "content": row["content"],
        "tool_call_id": metadata.get("tool_call_id") if role == "tool" else None,
        "tool_calls": metadata.get("tool_calls") if role == "assistant" else None,
    }


class ConversationMemoryManager:
    """Builds ``ConversationMemory`` windows for one unit of work."""

    CHUNK = 64

    def __init__(self, conn: AsyncConnection, redis: Redis) -> None:
        self.conn = conn
        self.redis = redis

    async def build(self, conversation_id: uuid.UUID, request: WindowRequest) -> ConversationMemory:
        """The window, summary, session context and tracked context of a conversation."""
        window = await self._window(conversation_id, request)
        return ConversationMemory(
            conversation_id=conversation_id,
            strategy=window.policy.strategy,
            encoding=window.policy.encoding,
            budget=window.policy.max_tokens,
            token_count=window.selection.tokens,
            truncated=window.selection.truncated,
            cut_seq=window.selection.cut_seq,
            summary=summaries.to_out(window.summary) if window.summary else None,
            messages=[message_store.to_out(row) for row in window.rows],
            session_id=window.session_id,
            session_context=window.session_context,
            tracked_context=window.tracked,
        )

    async def build_json(
        self, conversation_id: uuid.UUID, request: WindowRequest, *, openai: bool = False
    ) -> dict[str, Any]:
        """The same window as JSON-ready data (``ConversationMemory`` or ``OpenAIContext``).

        The endpoint is the hottest read of the platform, so rows go straight to JSON without
        a model per message.
        """
        window = await self._window(conversation_id, request)
        head: dict[str, Any] = {
            "strategy": window.policy.strategy.value,
            "encoding": window.policy.encoding.value,
            "budget": window.policy.max_tokens,
            "token_count": window.selection.tokens,
            "truncated": window.selection.truncated,
            "cut_seq": window.selection.cut_seq,
            "conversation_id": str(conversation_id),
        }
        summary = window.summary
        if openai:
            chat = [_chat_json(row) for row in window.rows]
            if summary is not None:
                leading = next((i for i, m in enumerate(chat) if m["role"] != "system"), len(chat))
                chat.insert(
                    leading,
                    {
                        "role": "system",
                        "content": summaries.SUMMARY_PREFIX + summary["content"],
                        "tool_call_id": None,
                        "tool_calls": None,
                    },
                )
            return {**head, "messages": chat}
        return {
            **head,
            "summary": (
                {
                    "text": summary["content"],
                    "version": summary["version"],
                    "covers_until_seq": summary["covers_until_seq"],
                    "token_count": summary["token_count"],
                    "method": summary["method"],
                    "created_at": message_store.json_time(summary["created_at"]),
                }
                if summary is not None
                else None
            ),
            "messages": [message_store.message_json(row) for row in window.rows],
            "session_context": window.session_context,
            "session_id": str(window.session_id) if window.session_id else None,
            "tracked_context": window.tracked,
        }

    async def _window(self, conversation_id: uuid.UUID, request: WindowRequest) -> _Window:
        conversation = (
            await self.conn.execute(
                select(conversations.c.memory_policy).where(
                    conversations.c.id == conversation_id, conversations.c.deleted_at.is_(None)
                )
            )
        ).one_or_none()
        if conversation is None:
            raise ConversationNotFoundError(f"conversation {conversation_id} not found")
        policy = resolve_policy(conversation.memory_policy, request)
        summary = (
            await summaries.latest_summary(self.conn, conversation_id)
            if policy.strategy is MemoryStrategy.SUMMARY_BUFFER
            else None
        )
        summary_tokens = summary[_SUMMARY_TOKENS[policy.encoding]] if summary else 0
        floor = summary["covers_until_seq"] if summary else 0
        always = await self._always_included(conversation_id)
        fixed_tokens = summary_tokens + sum(_candidate(r, policy.encoding).tokens for r in always)
        recent = await self._recent(conversation_id, policy, floor, fixed_tokens)
        try:
            selection = select_window(
                [_candidate(r, policy.encoding) for r in reversed(recent)],
                strategy=policy.strategy.value,
                max_tokens=policy.max_tokens,
                last_n=policy.last_n if policy.strategy is MemoryStrategy.LAST_N else None,
                summary_tokens=summary_tokens,
                summary_covers_until_seq=floor,
                always_included=[_candidate(r, policy.encoding) for r in always],
            )
        except WindowBudgetError as exc:
            raise ValidationError(str(exc)) from exc
        by_seq = {row["seq"]: row for row in (*always, *recent)}
        session_id, session_context = await self._session_context(conversation_id)
        tracked = await context_tracker.get_tracked_context(self.conn, conversation_id)
        return _Window(
            policy=policy,
            summary=summary,
            selection=selection,
            rows=[by_seq[seq] for seq in selection.seqs],
            session_id=session_id,
            session_context=session_context,
            tracked=tracked.data,
        )

    async def _always_included(self, conversation_id: uuid.UUID) -> list[RowMapping]:
        stmt = (
            select(*_WINDOW_COLUMNS)
            .where(
                messages.c.conversation_id == conversation_id,
                # The bare column, as the partial index states it: "IS true" or "= 1" would not
                # match the index predicate and scan the conversation instead.
                literal_column("messages.always_include"),
                messages.c.deleted_at.is_(None),
            )
            .order_by(messages.c.seq)
        )
        return list((await self.conn.execute(stmt)).mappings().all())

    async def _recent(
        self, conversation_id: uuid.UUID, policy: MemoryPolicy, floor: int, fixed_tokens: int
    ) -> list[RowMapping]:
        """Newest-first rows after ``floor``, just enough to decide the window."""
        room = policy.max_tokens - fixed_tokens
        wanted = policy.last_n + 1 if policy.strategy is MemoryStrategy.LAST_N else None
        column = _TOKEN_COLUMN[policy.encoding]
        rows: list[RowMapping] = []
        spent = 0
        below: int | None = None
        while True:
            where = [
                messages.c.conversation_id == conversation_id,
                messages.c.deleted_at.is_(None),
                messages.c.seq > floor,
            ]
            if below is not None:
                where.append(messages.c.seq < below)
            chunk = (
                (
                    await self.conn.execute(
                        select(*_WINDOW_COLUMNS)
                        .where(*where)
                        .order_by(messages.c.seq.desc())
                        .limit(self.CHUNK)
                    )
                )
                .mappings()
                .all()
            )
            rows.extend(chunk)
            spent += sum(row[column.key] for row in chunk)
            if len(chunk) < self.CHUNK:
                return rows  # history exhausted
            below = chunk[-1]["seq"]
            enough = spent > room or (wanted is not None and len(rows) >= wanted)
            # A tool result at the edge needs its call (older) to be seen, or it would be
            # mistaken for an orphan instead of being truncated with its group.
            if enough and rows[-1]["role"] != "tool":
                return rows

    async def _session_context(
        self, conversation_id: uuid.UUID
    ) -> tuple[uuid.UUID | None, dict[str, Any] | None]:
        session_id = await session_service.current_session_id(self.conn, conversation_id)
        if session_id is None:
            return None, None
        context = await session_service.read_context(self.conn, self.redis, session_id)
        return session_id, context.variables


def to_openai(memory: ConversationMemory) -> OpenAIContext:
    """Chat-completions messages: the summary joins the leading system block, never the middle."""
    chat: list[ChatMessage] = []
    for message in memory.messages:
        metadata = message.metadata
        chat.append(
            ChatMessage(
                role=message.role.value,
                content=message.content,
                tool_call_id=metadata.get("tool_call_id") if message.role.value == "tool" else None,
                tool_calls=metadata.get("tool_calls")
                if message.role.value == "assistant"
                else None,
            )
        )
    if memory.summary is not None:
        leading = next((i for i, m in enumerate(chat) if m.role != "system"), len(chat))
        chat.insert(
            leading,
            ChatMessage(role="system", content=summaries.SUMMARY_PREFIX + memory.summary.text),
        )
    return OpenAIContext(
        conversation_id=memory.conversation_id,
        strategy=memory.strategy,
        encoding=memory.encoding,
        budget=memory.budget,
        token_count=memory.token_count,
        truncated=memory.truncated,
        cut_seq=memory.cut_seq,
        messages=chat,
    )


__all__ = [
    "ConversationMemoryManager",
    "SummaryOut",
    "WindowRequest",
    "WindowSelection",
    "to_openai",
]
