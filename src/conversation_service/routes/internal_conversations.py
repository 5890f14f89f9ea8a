"""Internal conversation routes for the orchestrator: handoffs between agents, conversations a
workflow starts, and the tenant-wide list (service keys only)."""

import uuid

from fastapi import APIRouter, Depends, Response

from conversation_service.models.handoff import HandoffIn, HandoffOut
from conversation_service.routes.deps import (
    ResourcesDep,
    ServiceIdempotencyKey,
    UoW,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import handoffs

router = APIRouter(
    prefix="/internal/v1/conversations", tags=["internal"], dependencies=[Depends(internal_service)]
)


@router.post(
    "/{conversation_id}/handoff",
    response_model=HandoffOut,
    responses=problems(400, 401, 404, 409, 413, 415, 422, 503),
)
async def hand_off(
    conversation_id: uuid.UUID,
    body: HandoffIn,
    key: ServiceIdempotencyKey,
    uow: UoW,
    resources: ResourcesDep,
) -> Response:
    """Hand the conversation to another agent; ``from_agent_id`` guards against a race (409)."""
    result = await handoffs.hand_off(
        uow,
        conversation_id,
        body,
        settings=resources.settings,
        agents=resources.agents,
        idempotency_key=key,
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONBytesResponse(result.body, headers=headers)
