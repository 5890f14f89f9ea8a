"""Internal routes under ``/internal/v1``, for the Agent Orchestrator (service keys only)."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response

from conversation_service.config.constants import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from conversation_service.models.common import Page
from conversation_service.models.context import (
    TrackedContextOut,
    TrackedContextPatch,
    TrackedContextVersionOut,
)
from conversation_service.models.conversation import ConversationOut
from conversation_service.models.memory import (
    ConversationMemory,
    Encoding,
    MemoryStrategy,
    OpenAIContext,
)
from conversation_service.models.session import SessionContext, SessionContextPatch
from conversation_service.routes.deps import ConversationPath, ResourcesDep, UoW, internal_service
from conversation_service.routes.errors import problems
from conversation_service.routes.messages import JSONBytesResponse
from conversation_service.services import context_tracker, conversation_manager, sessions
from conversation_service.services.context_view import openai_view
from conversation_service.services.memory_manager import WindowRequest, context_window

router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[Depends(internal_service)]
)


@router.get("/conversations/{conversation_id}", responses=problems(401, 404, 422))
async def get_conversation(conversation_id: ConversationPath, uow: UoW) -> ConversationOut:
    """Any tenant's conversation, for the orchestrator."""
    return await conversation_manager.get_conversation_for_service(uow.conn, conversation_id)


@router.get(
    "/conversations/{conversation_id}/context",
    response_model=ConversationMemory | OpenAIContext,
    responses=problems(401, 404, 422),
)
async def get_context(
    conversation_id: ConversationPath,
    uow: UoW,
    strategy: MemoryStrategy | None = None,
    max_tokens: Annotated[int | None, Query(ge=16, le=2_000_000)] = None,
    last_n: Annotated[int | None, Query(ge=1, le=1000)] = None,
    encoding: Encoding | None = None,
    format_: Annotated[Literal["native", "openai"], Query(alias="format")] = "native",
    for_agent: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=r"^[^\x00-\x1f]+$",
            description="With format=openai: other agents' messages become quoted user "
            "messages instead of this agent's own turns.",
        ),
    ] = None,
    leaf: Annotated[
        uuid.UUID | None,
        Query(description="Build the window from the path ending here (default: active path)."),
    ] = None,
) -> Response:
    """The context window for the agent's next turn (policy defaults, overridable here), built
    from the active path of the message tree or from ``leaf``'s."""
    request = WindowRequest(
        strategy=strategy, max_tokens=max_tokens, last_n=last_n, encoding=encoding, leaf=leaf
    )
    window = await context_window(uow.conn, conversation_id, request)
    if format_ == "openai":
        return JSONBytesResponse(openai_view(window, for_agent=for_agent))
    return JSONBytesResponse(window)


@router.get("/sessions/{session_id}/context", responses=problems(401, 404, 422))
async def get_session_context(
    session_id: uuid.UUID, uow: UoW, resources: ResourcesDep
) -> SessionContext:
    """A session's variables (hot copy from Redis, durable copy as fallback)."""
    return await sessions.read_context(uow.conn, resources.redis, session_id)


@router.patch("/sessions/{session_id}/context", responses=problems(400, 401, 404, 413, 415, 422))
async def patch_session_context(
    session_id: uuid.UUID,
    body: SessionContextPatch,
    uow: UoW,
    resources: ResourcesDep,
) -> SessionContext:
    """JSON merge patch of a session's variables; both copies agree once it returns."""
    return await sessions.patch_context(uow, resources.redis, session_id, body.variables)


# The one ``If-Match`` form accepted, in the OpenAPI document as the header's ``pattern``.
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$'


def _parse_if_match(value: str | None) -> int | None:
    """The version ``If-Match`` names (None: no condition).

    Decision: the header's format is documented as a ``pattern`` and enforced like every other
    parameter, so a value outside it is a 422 naming the header, and 412 keeps its one meaning:
    a well-formed version that is no longer current. The forms are the ``ETag`` the service sends
    (``"3"``), the bare number, the weak form ``W/"3"``, and ``*`` (RFC 9110: any current
    version, which always exists; version 0 is the empty context). A list of several tags is not
    accepted: a writer names the one version it read.
    """
    if value is None or value == "*":
        return None
    return int(value.removeprefix("W/").strip('"'))


@router.get("/conversations/{conversation_id}/tracked-context", responses=problems(401, 404, 422))
async def get_tracked_context(
    conversation_id: ConversationPath, uow: UoW, response: Response
) -> TrackedContextOut:
    """Tracked context (entities, topics, intent, variables…); the version is the ``ETag``."""
    await conversation_manager.get_conversation_for_service(uow.conn, conversation_id)
    tracked = await context_tracker.get_tracked_context(uow.conn, conversation_id)
    response.headers["ETag"] = f'"{tracked.version}"'
    return tracked


@router.patch(
    "/conversations/{conversation_id}/tracked-context",
    responses=problems(400, 401, 404, 412, 413, 415, 422),
)
async def patch_tracked_context(
    conversation_id: ConversationPath,
    body: TrackedContextPatch,
    uow: UoW,
    resources: ResourcesDep,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            description='The version last read (its `ETag`), e.g. `"3"`, `3` or `W/"3"`; `*`: any',
            pattern=IF_MATCH_PATTERN,
        ),
    ] = None,
    changed_by: Annotated[
        str, Header(alias="X-Changed-By", min_length=1, max_length=128)
    ] = "orchestrator",
) -> TrackedContextOut:
    """JSON merge patch with optimistic concurrency: a stale ``If-Match`` answers 412."""
    tracked = await context_tracker.patch_tracked_context(
        uow,
        conversation_id,
        body.model_dump(mode="json", exclude_unset=True),
        if_match=_parse_if_match(if_match),
        changed_by=changed_by,
        settings=resources.settings,
    )
    response.headers["ETag"] = f'"{tracked.version}"'
    return tracked


@router.get(
    "/conversations/{conversation_id}/tracked-context/history",
    responses=problems(400, 401, 404, 422),
)
async def tracked_context_history(
    conversation_id: ConversationPath,
    uow: UoW,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    before_version: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
) -> Page[TrackedContextVersionOut]:
    """Versions newest first: who changed what, and the document after each change."""
    await conversation_manager.get_conversation_for_service(uow.conn, conversation_id)
    return await context_tracker.tracked_context_history(
        uow.conn, conversation_id, limit=limit, before_version=before_version
    )


__all__: list[Any] = ["router"]
