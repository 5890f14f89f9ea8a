"""Feedback on replies: give or replace (``PUT``), withdraw (``DELETE``), and an agent's
aggregates for the orchestrator's dashboards.

Each user has at most one feedback per message; a second ``PUT`` replaces the first. Only
replies (assistant messages) take feedback. Giving or withdrawing publishes
``message.feedback`` to the conversation's log and, with a callback URL configured, sends the
orchestrator a signed ``message.feedback`` callback; both carry ``feedback: null`` for a
withdrawal. Withdrawing feedback that does not exist changes nothing and sends nothing.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import feedback_table as feedback
from conversation_service.errors import ValidationError
from conversation_service.events.log import EventType
from conversation_service.models.feedback import LATEST_COMMENTS, FeedbackIn
from conversation_service.models.message import Role
from conversation_service.services import callbacks
from conversation_service.services.auth import Principal
from conversation_service.services.message_store import visible_row
from conversation_service.services.unit_of_work import UnitOfWork
from conversation_service.utils.clock import utcnow

FEEDBACK_EVENT = EventType.MESSAGE_FEEDBACK.value
# What a message read joins in: the caller's feedback, if any.
FEEDBACK_COLUMNS = (feedback.c.rating, feedback.c.comment, feedback.c.tags)


def feedback_json(row: RowMapping | dict[str, Any]) -> dict[str, Any] | None:
    """The API shape of a feedback (None when there is none)."""
    if row.get("rating") is None:
        return None
    return {"rating": row["rating"], "comment": row["comment"], "tags": row["tags"]}


async def feedback_on(
    conn: AsyncConnection, principal: Principal, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The principal's feedback on each of the messages that has one (one indexed query)."""
    if not message_ids:
        return {}
    rows = await conn.execute(
        select(feedback.c.message_id, *FEEDBACK_COLUMNS).where(
            feedback.c.message_id.in_(message_ids), feedback.c.user_id == principal.user_id
        )
    )
    return {row.message_id: feedback_json(row._mapping) for row in rows}  # type: ignore[misc]


async def own_feedback(
    conn: AsyncConnection, principal: Principal, message_id: uuid.UUID
) -> dict[str, Any] | None:
    """The principal's feedback on one message, or None."""
    row = (
        (
            await conn.execute(
                select(*FEEDBACK_COLUMNS).where(
                    feedback.c.message_id == message_id, feedback.c.user_id == principal.user_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    return feedback_json(row) if row is not None else None


async def _reply(
    conn: AsyncConnection, principal: Principal, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> RowMapping:
    row = await visible_row(conn, principal, conversation_id, message_id)  # 404s
    if row["role"] != Role.ASSISTANT.value:
        raise ValidationError("feedback is given on replies (assistant messages) only")
    return row


async def give_feedback(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    data: FeedbackIn,
    *,
    settings: ConversationSettings,
) -> dict[str, Any]:
    """Set the caller's feedback on a reply (replacing theirs), then announce it."""
    reply = await _reply(uow.conn, principal, conversation_id, message_id)
    now = utcnow()
    values = {
        "rating": data.rating,
        "comment": data.comment,
        "tags": list(dict.fromkeys(data.tags)),
        "agent_id": reply["agent_id"],
        "updated_at": now,
    }
    dialect = postgresql if uow.conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(feedback).values(
        message_id=message_id,
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        conversation_id=conversation_id,
        created_at=now,
        **values,
    )
    await uow.conn.execute(
        stmt.on_conflict_do_update(index_elements=["message_id", "user_id"], set_=values)
    )
    given = feedback_json(values)
    await _announce(uow, principal, reply, given, settings)
    assert given is not None
    return given


async def withdraw_feedback(
    uow: UnitOfWork,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    settings: ConversationSettings,
) -> None:
    """Remove the caller's feedback on a reply; announce it if there was one."""
    reply = await _reply(uow.conn, principal, conversation_id, message_id)
    removed = await uow.conn.execute(
        delete(feedback).where(
            feedback.c.message_id == message_id, feedback.c.user_id == principal.user_id
        )
    )
    if removed.rowcount:
        await _announce(uow, principal, reply, None, settings)


async def _announce(
    uow: UnitOfWork,
    principal: Principal,
    reply: RowMapping,
    given: dict[str, Any] | None,
    settings: ConversationSettings,
) -> None:
    conversation_id = reply["conversation_id"]
    data = {
        "conversation_id": str(conversation_id),
        "message_id": str(reply["id"]),
        "agent_id": reply["agent_id"],
        "user_id": principal.user_id,
        "feedback": given,
    }
    if settings.orchestrator_callback_url:
        spec = await callbacks.record_callback(
            uow.conn,
            settings,
            tenant_id=principal.tenant_id,
            conversation_id=conversation_id,
            event_type=FEEDBACK_EVENT,
            data={"tenant_id": principal.tenant_id, **data},
            url=settings.orchestrator_callback_url,
        )
        await uow.record([spec])
    uow.publish(conversation_id, EventType.MESSAGE_FEEDBACK, data)


async def agent_feedback(
    uow: UnitOfWork,
    tenant_id: str,
    agent_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    """Up and down counts of an agent's replies in ``[since, until)`` (by when the feedback was
    last given), and its newest comments."""
    where = [feedback.c.tenant_id == tenant_id, feedback.c.agent_id == agent_id]
    if since is not None:
        where.append(feedback.c.updated_at >= since)
    if until is not None:
        where.append(feedback.c.updated_at < until)
    counted = await uow.conn.execute(
        select(feedback.c.rating, func.count()).where(*where).group_by(feedback.c.rating)
    )
    counts: dict[int, int] = {int(rating): int(n) for rating, n in counted.all()}
    comments = (
        await uow.conn.execute(
            select(
                feedback.c.conversation_id,
                feedback.c.message_id,
                feedback.c.rating,
                feedback.c.comment,
                feedback.c.tags,
                feedback.c.updated_at,
            )
            .where(*where, feedback.c.comment.is_not(None), feedback.c.comment != "")
            .order_by(feedback.c.updated_at.desc(), feedback.c.message_id.desc())
            .limit(LATEST_COMMENTS)
        )
    ).mappings()
    return {
        "up": counts.get(1, 0),
        "down": counts.get(-1, 0),
        "latest_comments": [dict(row) for row in comments],
    }
