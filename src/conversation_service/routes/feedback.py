"""Feedback on replies: ``PUT``/``DELETE /api/v1/conversations/{id}/messages/{mid}/feedback``
and the orchestrator's aggregates, ``GET /internal/v1/agents/{agent_id}/feedback``."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from conversation_service.config.constants import MAX_ID_CHARS
from conversation_service.models.common import IsoDateTime, utc_bound
from conversation_service.models.feedback import AgentFeedback, FeedbackIn, FeedbackOut
from conversation_service.routes.deps import (
    ConversationPath,
    CurrentUser,
    ResourcesDep,
    UoW,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.services import feedback

public = APIRouter(
    prefix="/api/v1/conversations/{conversation_id}/messages/{message_id}/feedback",
    tags=["feedback"],
)
internal = APIRouter(
    prefix="/internal/v1/agents", tags=["internal"], dependencies=[Depends(internal_service)]
)

_ID = {"min_length": 1, "max_length": MAX_ID_CHARS, "pattern": r"^[^\x00-\x1f]+$"}


@public.put("", responses=problems(400, 401, 404, 413, 415, 422))
async def give_feedback(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    body: FeedbackIn,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
) -> FeedbackOut:
    """Set your feedback on a reply (a second PUT replaces the first)."""
    given = await feedback.give_feedback(
        uow, user, conversation_id, message_id, body, settings=resources.settings
    )
    return FeedbackOut.model_validate(given)


@public.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 404, 422),
)
async def withdraw_feedback(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
) -> None:
    """Withdraw your feedback on a reply (nothing to withdraw is not an error)."""
    await feedback.withdraw_feedback(
        uow, user, conversation_id, message_id, settings=resources.settings
    )


@internal.get("/{agent_id}/feedback", responses=problems(401, 422))
async def agent_feedback(
    agent_id: Annotated[str, Path(**_ID)],
    tenant: Annotated[str, Query(**_ID)],
    uow: UoW,
    from_: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    to: IsoDateTime | None = None,
) -> AgentFeedback:
    """An agent's thumbs up and down in ``[from, to)`` and its newest comments."""
    return AgentFeedback.model_validate(
        await feedback.agent_feedback(
            uow, tenant, agent_id, since=utc_bound(from_), until=utc_bound(to)
        )
    )
