"""Public conversation routes under ``/api/v1/conversations``."""

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from conversation_service.config.constants import DEFAULT_PAGE_SIZE, MAX_CURSOR_CHARS, MAX_PAGE_SIZE
from conversation_service.errors import ValidationError
from conversation_service.models.common import IsoDateTime, Page, Tag, utc_bound
from conversation_service.models.conversation import (
    ConversationCreate,
    ConversationOut,
    ConversationStatus,
    ConversationUpdate,
)
from conversation_service.routes.deps import ConversationPath, CurrentUser, ResourcesDep, UoW
from conversation_service.routes.errors import problems
from conversation_service.services import conversation_manager, conversations
from conversation_service.services.conversation_manager import ConversationFilters

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 401, 413, 415, 422, 503),
)
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, uow: UoW, resources: ResourcesDep
) -> ConversationOut:
    """Create a conversation owned by the caller (the agent is validated by the orchestrator)."""
    return await conversations.create_conversation(
        uow, user, body, settings=resources.settings, agents=resources.agents
    )


@router.get("", responses=problems(400, 401, 422))
async def list_conversations(
    request: Request,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
    # Control characters refused like in every id (PostgreSQL cannot even compare a NUL).
    agent_id: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    ] = None,
    workflow_id: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    ] = None,
    status_: Annotated[ConversationStatus | None, Query(alias="status")] = None,
    tag: Tag | None = None,
    created_after: IsoDateTime | None = None,
    created_before: IsoDateTime | None = None,
    updated_after: IsoDateTime | None = None,
    updated_before: IsoDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> Page[ConversationOut]:
    """List the caller's conversations, newest first; filter with ``metadata.<key>=<value>``."""
    filters = ConversationFilters(
        agent_id=agent_id,
        workflow_id=workflow_id,
        status=status_,
        tag=tag,
        metadata=_metadata_filters(request),
        created_after=utc_bound(created_after),
        created_before=utc_bound(created_before),
        updated_after=utc_bound(updated_after),
        updated_before=utc_bound(updated_before),
    )
    return await conversation_manager.list_conversations(
        uow.conn, user, filters, limit=limit, cursor=cursor, codec=resources.cursors
    )


def _metadata_filters(request: Request) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata."):
            continue
        key = name.removeprefix("metadata.")
        if not _METADATA_KEY.match(key) or len(value) > 512 or "\x00" in value:
            raise ValidationError(f"invalid metadata filter {name!r}")
        pairs.append((key, value))
    if len(pairs) > 8:
        raise ValidationError("at most 8 metadata filters")
    return tuple(pairs)


@router.get("/{conversation_id}", responses=problems(401, 404, 422))
async def get_conversation(
    conversation_id: ConversationPath, user: CurrentUser, uow: UoW
) -> ConversationOut:
    """Get one conversation."""
    return await conversation_manager.get_conversation(uow.conn, user, conversation_id)


@router.patch("/{conversation_id}", responses=problems(400, 401, 404, 413, 415, 422))
async def update_conversation(
    conversation_id: ConversationPath,
    body: ConversationUpdate,
    user: CurrentUser,
    uow: UoW,
) -> ConversationOut:
    """Update title, tags, priority, status or metadata (merge patch)."""
    return await conversations.update_conversation(uow, user, conversation_id, body)


@router.post("/{conversation_id}/archive", responses=problems(401, 404, 422))
async def archive_conversation(
    conversation_id: ConversationPath,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
) -> ConversationOut:
    """Archive a conversation: it stays readable and takes no new messages."""
    return await conversations.archive_conversation(
        uow, user, conversation_id, settings=resources.settings
    )


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 404, 422),
)
async def delete_conversation(
    conversation_id: ConversationPath,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
    purge: Annotated[bool, Query(description="Erase it and everything hanging off it")] = False,
) -> None:
    """Delete a conversation (hidden at once; ``purge=true`` erases it for good)."""
    await conversations.delete_conversation(
        uow, user, conversation_id, purge=purge, settings=resources.settings
    )
