"""History pages: keyset pages of a conversation's messages by ``seq``, with signed cursors."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import MAX_SEQ
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import feedback_table as feedback
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ConversationNotFoundError, InvalidCursorError
from conversation_service.services.auth import Principal
from conversation_service.services.feedback import FEEDBACK_COLUMNS, feedback_json
from conversation_service.services.message_store import MESSAGE_COLUMNS, message_json
from conversation_service.utils.cursors import CursorCodec, CursorError


def _page_statement(ascending: bool) -> Any:
    """A history page as one prebuilt statement (compiled once, cached by SQLAlchemy)."""
    return (
        select(*MESSAGE_COLUMNS, *FEEDBACK_COLUMNS)
        .select_from(
            messages.join(conversations, conversations.c.id == messages.c.conversation_id)
            # The caller's own feedback, one primary-key probe per row.
            .outerjoin(
                feedback,
                and_(
                    feedback.c.message_id == messages.c.id,
                    feedback.c.user_id == bindparam("p_user_id"),
                ),
            )
        )
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


_PAGE_ASC = _page_statement(ascending=True)
_PAGE_DESC = _page_statement(ascending=False)
_OWNED = select(conversations.c.id).where(
    conversations.c.id == bindparam("p_conversation_id"),
    conversations.c.tenant_id == bindparam("p_tenant_id"),
    conversations.c.user_id == bindparam("p_user_id"),
    conversations.c.deleted_at.is_(None),
)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a history: keyset bounds by ``seq`` or a cursor, order and size."""

    after_seq: int | None
    before_seq: int | None
    order: str
    limit: int
    cursor: str | None = None


async def list_messages(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    page: PageRequest,
    *,
    codec: CursorCodec,
) -> dict[str, Any]:
    """One page of history in the ``Page[MessageOut]`` shape, a range scan on
    (conversation_id, seq) whatever the length.

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
    statement = _PAGE_ASC if order == "asc" else _PAGE_DESC
    rows = (await conn.execute(statement, params)).mappings().all()
    if not rows and (await conn.execute(_OWNED, params)).first() is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = codec.encode(
            {"k": "msg", "c": str(conversation_id), "o": order, "s": rows[-1]["seq"]}
        )
    return {
        "data": [{**message_json(row), "feedback": feedback_json(row)} for row in rows],
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
    }


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
