"""Job status (public and internal), task requests and callback redelivery (internal)."""

import uuid

from fastapi import APIRouter, Depends, status

from conversation_service.models.job import (
    CallbackDeliveryOut,
    JobOut,
    RedeliveryOut,
    TaskRequest,
)
from conversation_service.routes.deps import (
    ConversationPath,
    CurrentUser,
    ResourcesDep,
    UoW,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.services import callbacks, jobs

public = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
internal = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[Depends(internal_service)]
)


@public.get("/{job_id}", responses=problems(401, 404, 422))
async def get_job(job_id: uuid.UUID, user: CurrentUser, uow: UoW) -> JobOut:
    """Status and result of a job on one of the caller's conversations."""
    return await jobs.get_job_for_user(uow.conn, user, job_id)


@internal.post(
    "/conversations/{conversation_id}/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(400, 401, 404, 413, 415, 422),
)
async def request_task(
    conversation_id: ConversationPath,
    body: TaskRequest,
    uow: UoW,
    resources: ResourcesDep,
) -> JobOut:
    """Queue a summary, sentiment or processing task; ``task.completed``/``failed`` follow."""
    return await jobs.request_task(uow, resources.settings, conversation_id, body)


@internal.get("/jobs/{job_id}", responses=problems(401, 404, 422))
async def get_any_job(job_id: uuid.UUID, uow: UoW) -> JobOut:
    """Status and result of any job."""
    return await jobs.get_job(uow.conn, job_id)


@internal.get("/callbacks/{delivery_id}", responses=problems(401, 404, 422))
async def get_delivery(delivery_id: uuid.UUID, uow: UoW) -> CallbackDeliveryOut:
    """A callback delivery with every attempt (status code, latency, error)."""
    return CallbackDeliveryOut.model_validate(
        await callbacks.delivery_with_attempts(uow.conn, delivery_id)
    )


@internal.post(
    "/callbacks/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 404, 422),
)
async def redeliver(delivery_id: uuid.UUID, uow: UoW, resources: ResourcesDep) -> RedeliveryOut:
    """Send a callback again, with the same ``webhook-id`` so the receiver can dedupe."""
    return await jobs.redeliver(uow, resources.settings, delivery_id)
