"""History pages: keyset pages of a conversation's messages by ``seq``, with signed cursors.

A page shows one path of the message tree (``services.message_tree``): the active one, or the
one ending at ``leaf``; ``view="all"`` shows every message. Each message carries ``siblings``.
A cursor pins the path it was issued for, so a branch switch while paging does not mix paths.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import MAX_SEQ
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ConversationNotFoundError, InvalidCursorError
from conversation_service.services import message_tree
from conversation_service.services.auth import Principal
from conversation_service.services.feedback import feedback_on
from conversation_service.services.message_store import MESSAGE_COLUMNS, message_json
from conversation_service.utils.cursors import CursorCodec, CursorError


def _page_statement(ascending: bool) -> Any:
    """A history page as one prebuilt statement (compiled once, cached by SQLAlchemy)."""
    return (
        select(*MESSAGE_COLUMNS)
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
    leaf: uuid.UUID | None = None
    view: str = "path"


async def list_messages(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    page: PageRequest,
    *,
    codec: CursorCodec,
) -> dict[str, Any]:
    """One page of history in the ``Page[MessageOut]`` shape: range scans on the path's runs
    (or on (conversation_id, seq) for ``view="all"``) whatever the length.

    A cursor narrows the bounds and pins its path; unbounded sides get sentinel bounds so a few
    prebuilt statements serve every page. A conversation the caller does not own is a 404, not
    an empty list; a ``leaf`` that is not a live message of it is a 422.
    """
    order, after_seq, before_seq = page.order, page.after_seq, page.before_seq
    view, leaf, pinned = page.view, page.leaf, False
    if page.cursor is not None:
        order, position, view, cursor_leaf = _decode_cursor(codec, page.cursor, conversation_id)
        leaf, pinned = cursor_leaf, cursor_leaf is not None
        if order == "asc":
            after_seq = position if after_seq is None else max(after_seq, position)
        else:
            before_seq = position if before_seq is None else min(before_seq, position)
    after = after_seq if after_seq is not None else -1
    before = before_seq if before_seq is not None else MAX_SEQ
    if view == "all":
        rows = await _all_rows(conn, principal, conversation_id, order, after, before, page.limit)
    else:
        # A pinned leaf may have been deleted since: its path is still the one being paged.
        path = await message_tree.resolve_path(
            conn, principal, conversation_id, leaf, live=not pinned
        )
        leaf = path.leaf_id
        rows = await message_tree.path_rows(
            conn,
            conversation_id,
            path,
            after=after,
            before=before,
            ascending=order == "asc",
            limit=page.limit + 1,
        )
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        pin = {"v": "all"} if view == "all" else {"l": str(leaf)}
        next_cursor = codec.encode(
            {"k": "msg", "c": str(conversation_id), "o": order, "s": rows[-1]["seq"], **pin}
        )
    given = await feedback_on(conn, principal, [row["id"] for row in rows])
    items = [{**message_json(row), "feedback": given.get(row["id"])} for row in rows]
    return {
        "data": await message_tree.with_siblings(conn, conversation_id, items),
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
    }


async def _all_rows(
    conn: AsyncConnection,
    principal: Principal,
    conversation_id: uuid.UUID,
    order: str,
    after: int,
    before: int,
    limit: int,
) -> list[Any]:
    params = {
        "p_conversation_id": conversation_id,
        "p_tenant_id": principal.tenant_id,
        "p_user_id": principal.user_id,
        "p_after": after,
        "p_before": before,
        "p_limit": limit + 1,
    }
    statement = _PAGE_ASC if order == "asc" else _PAGE_DESC
    rows = list((await conn.execute(statement, params)).mappings().all())
    if not rows and (await conn.execute(_OWNED, params)).first() is None:
        raise ConversationNotFoundError(f"conversation {conversation_id} not found")
    return rows


def _decode_cursor(
    codec: CursorCodec, cursor: str, conversation_id: uuid.UUID
) -> tuple[str, int, str, uuid.UUID | None]:
    """(order, seq, view, pinned leaf); a cursor issued before trees reads as the active path."""
    try:
        payload = codec.decode(cursor)
        if payload.get("k") != "msg" or payload.get("c") != str(conversation_id):
            raise CursorError("cursor belongs to another list")
        order, seq = payload["o"], payload["s"]
        if order not in ("asc", "desc") or not isinstance(seq, int) or seq < 0:
            raise CursorError("cursor is not well-formed")
        leaf = payload.get("l")
        view = "all" if payload.get("v") == "all" else "path"
        return order, seq, view, uuid.UUID(leaf) if isinstance(leaf, str) else None
    except (CursorError, KeyError, ValueError) as exc:
        raise InvalidCursorError(str(exc)) from exc
