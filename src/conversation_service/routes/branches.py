"""Branch routes of a conversation: select the active branch, fork."""

from fastapi import APIRouter, status

from conversation_service.models.conversation import ConversationOut, ForkCreate
from conversation_service.models.message import ActiveLeafUpdate
from conversation_service.routes.deps import ConversationPath, CurrentUser, ResourcesDep, UoW
from conversation_service.routes.errors import problems
from conversation_service.services import branches, forks

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


@router.put("/{conversation_id}/active-leaf", responses=problems(400, 401, 404, 413, 415, 422))
async def set_active_leaf(
    conversation_id: ConversationPath, body: ActiveLeafUpdate, user: CurrentUser, uow: UoW
) -> ConversationOut:
    """Show another branch: the active leaf becomes the newest message under ``message_id``."""
    return await branches.set_active_leaf(uow, user, conversation_id, body.message_id)


@router.post(
    "/{conversation_id}/fork",
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 401, 404, 413, 415, 422),
)
async def fork_conversation(
    conversation_id: ConversationPath,
    body: ForkCreate,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
) -> ConversationOut:
    """A new conversation holding a copy of the path up to ``message_id`` (the active leaf)."""
    return await forks.fork_conversation(
        uow, user, conversation_id, body, settings=resources.settings
    )
