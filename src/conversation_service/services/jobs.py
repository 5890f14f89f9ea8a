"""Job status, task requests from the orchestrator, and callback redelivery."""

import uuid
from typing import Any

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import MessageNotFoundError, NotFoundError
from conversation_service.models.job import JobOut, RedeliveryOut, TaskRequest
from conversation_service.services import callbacks
from conversation_service.services.auth import Principal
from conversation_service.services.conversation_manager import get_conversation_for_service
from conversation_service.services.outbox import JobKind, JobSpec, queue_for
from conversation_service.services.processing import summary_spec
from conversation_service.services.unit_of_work import UnitOfWork


class JobNotFoundError(NotFoundError):
    """Unknown job (or not the caller's)."""

    code = "job-not-found"
    title = "Job not found"


def to_out(row: RowMapping) -> JobOut:
    """API shape of a job row."""
    return JobOut(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        queue=row["queue"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


async def get_job(conn: AsyncConnection, job_id: uuid.UUID) -> JobOut:
    """Any job, for the orchestrator."""
    row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one_or_none()
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    return to_out(row)


async def get_job_for_user(
    conn: AsyncConnection, principal: Principal, job_id: uuid.UUID
) -> JobOut:
    """A job of one of the caller's conversations (404 otherwise, never 403)."""
    stmt = (
        select(jobs)
        .join(conversations, conversations.c.id == jobs.c.conversation_id)
        .where(
            jobs.c.id == job_id,
            conversations.c.tenant_id == principal.tenant_id,
            conversations.c.user_id == principal.user_id,
            conversations.c.deleted_at.is_(None),
        )
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    return to_out(row)


async def request_task(
    uow: UnitOfWork,
    settings: ConversationSettings,
    conversation_id: uuid.UUID,
    request: TaskRequest,
) -> JobOut:
    """Record the job an orchestrator asked for; dispatched after the commit."""
    conn = uow.conn
    if request.callback_url is not None:
        callbacks.check_url(request.callback_url, settings)
    conversation = await get_conversation_for_service(conn, conversation_id)
    tenant_id = await conn.scalar(
        select(conversations.c.tenant_id).where(conversations.c.id == conversation_id)
    )
    priority = (request.priority or conversation.priority).value
    spec: JobSpec
    if request.kind == "summary":
        spec = summary_spec(
            settings,
            conversation_id,
            str(tenant_id),
            priority,
            until_seq=request.until_seq or max(conversation.last_seq, 1),
            queue=queue_for(JobKind.GENERATE_SUMMARY, priority),
            callback_url=request.callback_url,
            notify=True,
        )
    else:
        kind = JobKind.ANALYZE_SENTIMENT if request.kind == "sentiment" else JobKind.PROCESS_MESSAGE
        message_id = await _target_message(conn, conversation_id, request.message_id)
        spec = JobSpec(
            kind=kind,
            queue=queue_for(kind, priority),
            tenant_id=str(tenant_id),
            conversation_id=conversation_id,
            message_id=message_id,
            args={"notify": True},
            callback_url=request.callback_url,
            max_attempts=settings.job_max_attempts,
        )
    await uow.record([spec])
    return await get_job(conn, spec.id)


async def _target_message(
    conn: AsyncConnection, conversation_id: uuid.UUID, message_id: uuid.UUID | None
) -> uuid.UUID:
    where: list[Any] = [
        messages.c.conversation_id == conversation_id,
        messages.c.deleted_at.is_(None),
    ]
    if message_id is not None:
        where.append(messages.c.id == message_id)
    found = await conn.scalar(
        select(messages.c.id).where(*where).order_by(messages.c.seq.desc()).limit(1)
    )
    if found is None:
        raise MessageNotFoundError("no such message in this conversation")
    return found  # type: ignore[no-any-return]


async def redeliver(
    uow: UnitOfWork, settings: ConversationSettings, delivery_id: uuid.UUID
) -> RedeliveryOut:
    """Queue another delivery of the same event (same ``webhook-id``)."""
    conn = uow.conn
    row = (
        (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise callbacks.CallbackNotFoundError(f"delivery {delivery_id} not found")
    await conn.execute(
        update(deliveries).where(deliveries.c.id == delivery_id).values(status="pending")
    )
    spec = JobSpec(
        kind=JobKind.DELIVER_CALLBACK,
        queue=queue_for(JobKind.DELIVER_CALLBACK),
        tenant_id=row["tenant_id"],
        conversation_id=row["conversation_id"],
        args={"delivery_id": str(delivery_id), "redelivery": True},
        max_attempts=settings.callback_max_attempts,
    )
    await uow.record([spec])
    return RedeliveryOut(delivery_id=delivery_id, job_id=spec.id)


async def notify_requester(
    uow: UnitOfWork,
    settings: ConversationSettings,
    job: RowMapping,
    event_type: str,
    outcome: dict[str, Any],
) -> None:
    """Tell whoever requested a task (its callback URL and the orchestrator) how it ended
    (``task.completed`` or ``task.failed``); jobs nobody requested notify nobody."""
    if not job["args"].get("notify"):
        return
    urls = dict.fromkeys(u for u in (job["callback_url"], settings.orchestrator_callback_url) if u)
    data = {
        "job_id": str(job["id"]),
        "kind": job["kind"],
        "conversation_id": str(job["conversation_id"]) if job["conversation_id"] else None,
        **outcome,
    }
    specs = [
        await callbacks.record_callback(
            uow.conn,
            settings,
            tenant_id=job["tenant_id"],
            conversation_id=job["conversation_id"],
            event_type=event_type,
            data=data,
            url=url,
        )
        for url in urls
    ]
    await uow.record(specs)
