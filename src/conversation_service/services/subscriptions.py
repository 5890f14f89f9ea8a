"""Subscriptions of viewers: who may watch a conversation, and the snapshot a new one gets."""

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.config.constants import MAX_SEQ
from conversation_service.events import log as events
from conversation_service.events.store import StreamStore
from conversation_service.models.message import MessageOut, MessageStatus
from conversation_service.services import message_store, message_tree, sessions
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import (
    get_conversation_for_service,
    require_owned,
)
from conversation_service.services.unit_of_work import UnitOfWork

SNAPSHOT_MESSAGES = 50


async def authorize_subscription(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID
) -> None:
    """Check the caller may watch the conversation (404 otherwise)."""
    await require_owned(conn, principal, conversation_id)


async def record_viewer_activity(
    uow: UnitOfWork, principal: Principal, conversation_id: uuid.UUID, channel: str
) -> None:
    """Count watching as activity (sessions); publishes ``session.started`` when it starts
    one. Transports call it once the viewer is live, so the viewer sees that event too."""
    _, started = await sessions.touch_session(
        uow.conn, principal, conversation_id, sessions.SessionActivity(channel=channel)
    )
    if started:
        session = await sessions.current_session(uow.conn, principal, conversation_id)
        uow.publish(
            conversation_id,
            events.EventType.SESSION_STARTED,
            {"session": session.model_dump(mode="json")},
        )


async def snapshot(
    conn: AsyncConnection, store: StreamStore, conversation_id: uuid.UUID
) -> dict[str, Any]:
    """The conversation and the newest messages of its active path, with their ``siblings``
    (streaming ones with their partial content)."""
    conversation = await get_conversation_for_service(conn, conversation_id)
    leaf = conversation.active_leaf_id
    path = await message_tree.path_of(conn, conversation_id, leaf) if leaf else None
    rows = await message_tree.path_rows(
        conn,
        conversation_id,
        path or message_tree.EMPTY,
        after=-1,
        before=MAX_SEQ,
        ascending=False,
        limit=SNAPSHOT_MESSAGES + 1,
    )
    newest = [message_store.message_json(row) for row in reversed(rows[:SNAPSHOT_MESSAGES])]
    items = [
        MessageOut.model_validate(item)
        for item in await message_tree.with_siblings(conn, conversation_id, newest)
    ]
    dumped = []
    for item in items:
        data = item.model_dump(mode="json")
        if item.status is MessageStatus.STREAMING:
            with contextlib.suppress(RedisError, OSError):
                data["content"] += (await store.peek(conversation_id, item.id)).text
        dumped.append(data)
    return {
        "conversation": conversation.model_dump(mode="json"),
        "messages": dumped,
        "has_more": len(rows) > SNAPSHOT_MESSAGES,
    }


def snapshot_source(
    engine: AsyncEngine, store: StreamStore
) -> Callable[[uuid.UUID, str | None], Awaitable[str]]:
    """The live hub's snapshot builder: a ``snapshot`` frame whose id is the log's head."""

    async def build(conversation_id: uuid.UUID, head: str | None) -> str:
        async with engine.connect() as conn:
            data = await snapshot(conn, store, conversation_id)
        return events.build_frame(head, events.event_tail("snapshot", conversation_id, data))

    return build
