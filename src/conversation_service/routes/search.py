"""Search over history: ``GET /api/v1/search`` (the caller's own) and ``GET /internal/v1/search``
(any user's, for the orchestrator's recall tool). Both call ``services.search.search``."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from conversation_service.config.constants import MAX_CURSOR_CHARS, MAX_ID_CHARS
from conversation_service.models.common import IsoDateTime, Page, utc_bound
from conversation_service.models.message import Role
from conversation_service.models.search import (
    DEFAULT_SEARCH_LIMIT,
    MAX_QUERY_CHARS,
    MAX_SEARCH_LIMIT,
    SearchHit,
)
from conversation_service.routes.deps import (
    CurrentUser,
    ResourcesDep,
    UoW,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import search as search_service
from conversation_service.services.auth import Principal

public = APIRouter(prefix="/api/v1/search", tags=["search"])
internal = APIRouter(
    prefix="/internal/v1/search", tags=["internal"], dependencies=[Depends(internal_service)]
)

_ID = {"min_length": 1, "max_length": MAX_ID_CHARS, "pattern": r"^[^\x00-\x1f]+$"}
Q = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        # Something that is not whitespace (a blank q is the one refused query).
        pattern=r"\S",
        description='Words, "quoted phrases", -excluded words and prefix* words.',
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)]


def _filters(
    conversation_id: uuid.UUID | None = None,
    agent_id: Annotated[str | None, Query(**_ID)] = None,
    role: Role | None = None,
    created_after: IsoDateTime | None = None,
    created_before: IsoDateTime | None = None,
    include_archived: bool = False,
) -> search_service.SearchFilters:
    return search_service.SearchFilters(
        conversation_id=conversation_id,
        agent_id=agent_id,
        role=role.value if role is not None else None,
        created_after=utc_bound(created_after),
        created_before=utc_bound(created_before),
        include_archived=include_archived,
    )


Filters = Annotated[search_service.SearchFilters, Depends(_filters)]


@public.get("", response_model=Page[SearchHit], responses=problems(400, 401, 422))
async def search_my_history(
    q: Q,
    filters: Filters,
    user: CurrentUser,
    uow: UoW,
    resources: ResourcesDep,
    limit: Limit = DEFAULT_SEARCH_LIMIT,
    cursor: Cursor = None,
) -> JSONBytesResponse:
    """Search the caller's conversations (messages and titles) in their tenant."""
    page = await search_service.search(
        uow, user, q, filters, limit=limit, cursor=cursor, codec=resources.cursors
    )
    return JSONBytesResponse(page)


@internal.get("", response_model=Page[SearchHit], responses=problems(400, 401, 422))
async def search_user_history(
    tenant: Annotated[str, Query(**_ID)],
    user: Annotated[str, Query(**_ID)],
    q: Q,
    filters: Filters,
    uow: UoW,
    resources: ResourcesDep,
    limit: Limit = DEFAULT_SEARCH_LIMIT,
    cursor: Cursor = None,
) -> JSONBytesResponse:
    """Search one user's conversations, for the orchestrator's recall tool."""
    principal = Principal(tenant_id=tenant, user_id=user)
    page = await search_service.search(
        uow, principal, q, filters, limit=limit, cursor=cursor, codec=resources.cursors
    )
    return JSONBytesResponse(page)
