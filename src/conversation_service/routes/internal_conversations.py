"""Internal conversation routes for the orchestrator: handoffs between agents, conversations a
workflow starts, and the tenant-wide list (service keys only)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from conversation_service.config.constants import DEFAULT_PAGE_SIZE, MAX_CURSOR_CHARS, MAX_PAGE_SIZE
from conversation_service.models.common import Page
from conversation_service.models.conversation import ConversationOut, ConversationStatus
from conversation_service.models.handoff import HandoffIn, HandoffOut
from conversation_service.models.workflow import (
    WorkflowConversationCreate,
    WorkflowConversationOut,
)
from conversation_service.routes.deps import (
    ConversationPath,
    ResourcesDep,
    ServiceIdempotencyKey,
    UoW,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import conversation_manager, handoffs, workflows
from conversation_service.services.conversation_manager import ConversationFilters

router = APIRouter(
    prefix="/internal/v1/conversations", tags=["internal"], dependencies=[Depends(internal_service)]
)
# Ids in query strings: control characters refused like in every id.
QueryId = Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowConversationOut,
    responses=problems(400, 401, 409, 413, 415, 422, 503),
)
async def create_conversation(
    body: WorkflowConversationCreate,
    key: ServiceIdempotencyKey,
    uow: UoW,
    resources: ResourcesDep,
) -> Response:
    """Start a conversation owned by ``user`` (for a workflow), with opening messages."""
    result = await workflows.create_for_workflow(
        uow, body, settings=resources.settings, agents=resources.agents, idempotency_key=key
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONBytesResponse(result.body, status_code=201, headers=headers)


@router.get("", responses=problems(400, 401, 422))
async def list_conversations(
    uow: UoW,
    resources: ResourcesDep,
    tenant: QueryId,
    user: QueryId | None = None,
    workflow_id: QueryId | None = None,
    agent_id: QueryId | None = None,
    status_: Annotated[ConversationStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> Page[ConversationOut]:
    """One tenant's conversations (one user's with ``user``), newest first, keyset paged."""
    filters = ConversationFilters(agent_id=agent_id, workflow_id=workflow_id, status=status_)
    return await conversation_manager.list_in_tenant(
        uow.conn, tenant, user, filters, limit=limit, cursor=cursor, codec=resources.cursors
    )


@router.post(
    "/{conversation_id}/handoff",
    response_model=HandoffOut,
    responses=problems(400, 401, 404, 409, 413, 415, 422, 503),
)
async def hand_off(
    conversation_id: ConversationPath,
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
