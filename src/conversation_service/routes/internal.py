"""Internal routes under ``/internal/v1``, for the Agent Orchestrator (service keys only)."""

import uuid

from fastapi import APIRouter, Depends

from conversation_service.models.conversation import ConversationOut
from conversation_service.routes.deps import UnitOfWork, internal_service
from conversation_service.routes.errors import problems
from conversation_service.services import conversation_manager

router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[Depends(internal_service)]
)


@router.get("/conversations/{conversation_id}", responses=problems(401, 404, 422))
async def get_conversation(conversation_id: uuid.UUID, uow: UnitOfWork) -> ConversationOut:
    """Any tenant's conversation, for the orchestrator."""
    return await conversation_manager.get_conversation_for_service(uow, conversation_id)
