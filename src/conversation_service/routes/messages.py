"""Public message routes under ``/api/v1/conversations/{id}/messages``."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status

from conversation_service.config.constants import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_CHARS,
    MAX_PAGE_SIZE,
    MAX_SEQ,
)
from conversation_service.models.common import Page
from conversation_service.models.message import (
    MessageCreate,
    MessageOut,
    MessageUpdate,
    RegenerateAccepted,
)
from conversation_service.routes.deps import (
    ConversationPath,
    CurrentUser,
    IdempotencyKey,
    ResourcesDep,
    UoW,
)
from conversation_service.routes.errors import problems
from conversation_service.services import branches, history, messages
from conversation_service.utils import jsonio

router = APIRouter(prefix="/api/v1/conversations/{conversation_id}/messages", tags=["messages"])


class JSONBytesResponse(Response):
    """A response whose body is already JSON-ready data (skips a second validation pass)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses=problems(400, 401, 404, 409, 413, 415, 422),
)
async def append_message(
    conversation_id: ConversationPath,
    body: MessageCreate,
    user: CurrentUser,
    key: IdempotencyKey,
    uow: UoW,
    resources: ResourcesDep,
) -> Response:
    """Append a user message; retry safely with an ``Idempotency-Key`` header."""
    result = await messages.append_user_message(
        uow, user, conversation_id, body, settings=resources.settings, idempotency_key=key
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONBytesResponse(result.message, status_code=201, headers=headers)


@router.get("", response_model=Page[MessageOut], responses=problems(400, 401, 404, 422))
async def list_messages(
    conversation_id: ConversationPath,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    leaf: Annotated[
        uuid.UUID | None, Query(description="Show the path ending at this message.")
    ] = None,
    view: Annotated[
        Literal["path", "all"],
        Query(description="path: the active path (or ?leaf=); all: every message by seq."),
    ] = "path",
) -> Response:
    """A page of history by ``seq`` (keyset: ``after_seq``/``before_seq`` or ``cursor``): the
    active path root to leaf, the path to ``leaf``, or ``view=all``."""
    page = history.PageRequest(after_seq, before_seq, order, limit, cursor, leaf, view)
    return JSONBytesResponse(
        await history.list_messages(uow.conn, user, conversation_id, page, codec=resources.cursors)
    )


@router.get(
    "/{message_id}/siblings", response_model=Page[MessageOut], responses=problems(401, 404, 422)
)
async def list_siblings(
    conversation_id: ConversationPath, message_id: uuid.UUID, user: CurrentUser, uow: UoW
) -> Response:
    """Every child of the message's parent, the message included, in creation order."""
    return JSONBytesResponse(await branches.list_siblings(uow, user, conversation_id, message_id))


@router.post(
    "/{message_id}/regenerate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RegenerateAccepted,
    responses=problems(401, 404, 409, 422),
)
async def regenerate(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
) -> Response:
    """Ask the orchestrator for a new reply to a user message (or to the one a reply answers)."""
    accepted = await branches.request_regeneration(
        uow, user, conversation_id, message_id, settings=resources.settings
    )
    return JSONBytesResponse(accepted, status_code=202)


@router.get("/{message_id}", response_model=MessageOut, responses=problems(401, 404, 422))
async def get_message(
    conversation_id: ConversationPath, message_id: uuid.UUID, user: CurrentUser, uow: UoW
) -> Response:
    """Get one message."""
    return JSONBytesResponse(await messages.get_message(uow, user, conversation_id, message_id))


@router.patch(
    "/{message_id}", response_model=MessageOut, responses=problems(400, 401, 404, 413, 415, 422)
)
async def update_message(
    conversation_id: ConversationPath,
    message_id: uuid.UUID,
    body: MessageUpdate,
    user: CurrentUser,
    uow: UoW,
) -> Response:
    """Merge-patch a message's metadata."""
    return JSONBytesResponse(
        await messages.update_message_metadata(uow, user, conversation_id, message_id, body)
    )


@router.delete(
    "/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 404, 422),
)
async def delete_message(
    conversation_id: ConversationPath, message_id: uuid.UUID, user: CurrentUser, uow: UoW
) -> None:
    """Delete a message (its content is erased; its seq stays as a gap-free tombstone)."""
    await messages.delete_message(uow, user, conversation_id, message_id)
