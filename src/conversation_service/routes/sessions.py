"""Public session and summary routes under ``/api/v1/conversations/{id}``."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from conversation_service.config.constants import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from conversation_service.errors import SummaryNotFoundError
from conversation_service.models.common import Page
from conversation_service.models.memory import SummaryOut
from conversation_service.models.session import SessionOut, SessionStart
from conversation_service.routes.deps import ConversationPath, CurrentUser, ResourcesDep, UoW
from conversation_service.routes.errors import problems
from conversation_service.services import sessions, summaries
from conversation_service.services.conversation_manager import require_owned

router = APIRouter(prefix="/api/v1/conversations/{conversation_id}", tags=["sessions"])


@router.get("/sessions", responses=problems(400, 401, 404, 422))
async def list_sessions(
    conversation_id: ConversationPath,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[SessionOut]:
    """Sessions of a conversation, newest first."""
    return await sessions.list_sessions(
        uow.conn, user, conversation_id, limit=limit, cursor=cursor, codec=resources.cursors
    )


@router.post(
    "/sessions", status_code=status.HTTP_201_CREATED, responses=problems(400, 401, 404, 415, 422)
)
async def start_session(
    conversation_id: ConversationPath,
    body: SessionStart,
    user: CurrentUser,
    uow: UoW,
) -> SessionOut:
    """Start a session explicitly (channel, client, locale), ending the current one."""
    return await sessions.start_session(uow, user, conversation_id, body)


@router.get("/sessions/current", responses=problems(401, 404, 422))
async def current_session(
    conversation_id: ConversationPath, user: CurrentUser, uow: UoW
) -> SessionOut:
    """The active session (404 when the user has been inactive longer than the session TTL)."""
    return await sessions.current_session(uow.conn, user, conversation_id)


@router.post("/sessions/current/end", responses=problems(401, 404, 422))
async def end_current_session(
    conversation_id: ConversationPath,
    user: CurrentUser,
    uow: UoW,
) -> SessionOut:
    """End the active session now."""
    return await sessions.end_current_session(uow, user, conversation_id)


@router.get("/summary", responses=problems(401, 404, 422))
async def get_summary(conversation_id: ConversationPath, user: CurrentUser, uow: UoW) -> SummaryOut:
    """The newest summary of the conversation (earlier versions are kept)."""
    await require_owned(uow.conn, user, conversation_id)
    row = await summaries.latest_summary(uow.conn, conversation_id)
    if row is None:
        raise SummaryNotFoundError("this conversation has no summary yet")
    return summaries.to_out(row)
