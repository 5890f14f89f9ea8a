"""Internal streaming routes: the orchestrator writes agent messages and streams replies.

``POST /internal/v1/conversations/{id}/messages`` creates an assistant, tool or system message,
``completed`` or ``streaming``; a streaming one grows by ``…/deltas`` (no database write per
delta) and ends with ``…/complete`` or ``…/fail``. Every step is published to the
conversation's event log after it commits.
"""

import functools
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response, status

from conversation_service.models.message import MessageOut
from conversation_service.models.streaming import (
    AgentMessageCreate,
    DeltasAccepted,
    DeltasIn,
    StreamComplete,
    StreamFail,
    StreamResult,
)
from conversation_service.resources import Resources
from conversation_service.routes.deps import (
    AfterCommit,
    ResourcesDep,
    UnitOfWork,
    dispatch_after_commit,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import message_store, streaming
from conversation_service.websocket.events import Delta

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
    conversation_id: uuid.UUID,
    body: AgentMessageCreate,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
) -> Response:
    """Append an agent, tool or system message; ``status: streaming`` opens it for deltas."""
    message = await streaming.create_agent_message(uow, conversation_id, body)
    store = resources.streams
    hooks.add(functools.partial(streaming.after_create, resources.events, store, message))
    return JSONBytesResponse(message, status_code=201)


@router.post(
    "/{message_id}/deltas",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeltasAccepted,
    responses=problems(400, 401, 404, 409, 413, 415, 422),
)
async def append_deltas(
    conversation_id: uuid.UUID, message_id: uuid.UUID, body: DeltasIn, resources: ResourcesDep
) -> Response:
    """Publish chunks of a streaming message at once; a re-sent ``index`` is ignored."""
    return await publish_deltas(resources, conversation_id, message_id, body)


async def publish_deltas(
    resources: Resources, conversation_id: uuid.UUID, message_id: uuid.UUID, body: DeltasIn
) -> Response:
    """The delta publication behind the route and its fast twin (``routes.fast``)."""
    ids = await streaming.append_deltas(
        resources.events,
        resources.streams,
        resources.engine,
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
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
    body: Annotated[StreamComplete | None, Body()] = None,
) -> StreamResult:
    """Persist the final content (default: the deltas joined) and publish ``message.completed``."""
    store = resources.streams
    outcome = await streaming.complete_message(
        uow, store, conversation_id, message_id, body or StreamComplete()
    )
    hooks.add(functools.partial(streaming.after_finish, resources.events, store, outcome))
    if outcome.changed:
        # The final reply is processed like a user message (language, sentiment, summary).
        jobs = await message_store.record_processing(
            uow, resources.settings, conversation_id, message_id
        )
        dispatch_after_commit(hooks, resources.relay, jobs)
    return StreamResult(message=outcome.message)


@router.post("/{message_id}/fail", responses=problems(400, 401, 404, 409, 413, 415, 422))
async def fail_message(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: StreamFail,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
) -> StreamResult:
    """Mark the reply failed (partial content kept) and publish ``message.failed``."""
    store = resources.streams
    outcome = await streaming.fail_message(uow, store, conversation_id, message_id, body.error)
    hooks.add(functools.partial(streaming.after_finish, resources.events, store, outcome))
    return StreamResult(message=outcome.message)
