"""Internal streaming routes: the orchestrator writes agent messages and streams replies.

``POST /internal/v1/conversations/{id}/messages`` creates an assistant, tool or system message,
``completed`` or ``streaming``; a streaming one grows by ``…/deltas`` (no database write per
delta) and ends with ``…/complete`` or ``…/fail``. Every step is published to the
conversation's event log after it commits.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response, status

from conversation_service.events.log import Delta
from conversation_service.models.message import MessageOut
from conversation_service.models.streaming import (
    AgentMessageCreate,
    DeltasAccepted,
    DeltasIn,
    StreamComplete,
    StreamFail,
    StreamResult,
)
from conversation_service.routes.deps import ConversationPath, ResourcesDep, UoW, internal_service
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import streaming

router = APIRouter(
    prefix="/internal/v1/conversations/{conversation_id}/messages",
    tags=["internal"],
    dependencies=[Depends(internal_service)],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses=problems(400, 401, 404, 409, 413, 415, 422),
)
async def create_agent_message(
    conversation_id: ConversationPath, body: AgentMessageCreate, uow: UoW, resources: ResourcesDep
) -> Response:
    """Append an agent, tool or system message; ``status: streaming`` opens it for deltas."""
    message = await streaming.create_agent_message(
        uow, resources.streams, conversation_id, body, settings=resources.settings
    )
    return JSONBytesResponse(message, status_code=201)


@router.post(
    "/{message_id}/deltas",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeltasAccepted,
    responses=problems(400, 401, 404, 409, 413, 415, 422),
)
async def append_deltas(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    body: DeltasIn,
    resources: ResourcesDep,
) -> Response:
    """Publish chunks of a streaming message at once; a re-sent ``index`` is ignored."""
    ids = await streaming.append_deltas(
        resources.units,
        resources.events,
        resources.streams,
        conversation_id,
        message_id,
        [Delta(delta.index, delta.text) for delta in body.deltas],
    )
    # Viewers on this process first, then the agent's answer (see ``fanned_out``); the newest
    # event id covers the others (None: every delta was a repeat, nothing was published).
    newest = next((event_id for event_id in reversed(ids) if event_id is not None), None)
    await resources.live.fanned_out(conversation_id, newest)
    return JSONBytesResponse({"message_id": str(message_id), "event_ids": ids}, status_code=202)


@router.post("/{message_id}/complete", responses=problems(400, 401, 404, 409, 413, 415, 422))
async def complete_message(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    uow: UoW,
    resources: ResourcesDep,
    body: Annotated[StreamComplete | None, Body()] = None,
) -> StreamResult:
    """Persist the final content (default: the deltas joined) and publish ``message.completed``."""
    outcome = await streaming.complete_message(
        uow,
        resources.streams,
        conversation_id,
        message_id,
        body or StreamComplete(),
        settings=resources.settings,
    )
    return StreamResult(message=outcome.message)


@router.post("/{message_id}/fail", responses=problems(400, 401, 404, 409, 413, 415, 422))
async def fail_message(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    body: StreamFail,
    uow: UoW,
    resources: ResourcesDep,
) -> StreamResult:
    """Mark the reply failed (partial content kept) and publish ``message.failed``."""
    outcome = await streaming.fail_message(
        uow, resources.streams, conversation_id, message_id, body.error
    )
    return StreamResult(message=outcome.message)
