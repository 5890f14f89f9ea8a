"""Server-Sent Events: ``GET /api/v1/conversations/{id}/events``.

The same frames as the WebSocket (see ``websocket.handlers``), one ``data:`` line each; logged
events carry an ``id:`` line so the browser's ``EventSource`` resumes with ``Last-Event-ID``.
``?after=`` does the same for clients that cannot set headers; browsers, which cannot set an
``Authorization`` header on ``EventSource`` either, may pass the JWT as ``?token=``.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from conversation_service.errors import UnauthorizedError
from conversation_service.events.log import parse_event_id
from conversation_service.models.streaming import EVENT_ID_PATTERN, check_event_id
from conversation_service.routes.deps import ConversationPath, ResourcesDep, WriteUoW
from conversation_service.routes.errors import problems
from conversation_service.services import subscriptions
from conversation_service.services.auth import Principal
from conversation_service.websocket import handlers

router = APIRouter(prefix="/api/v1/conversations/{conversation_id}", tags=["events"])
_bearer = HTTPBearer(auto_error=False, description="User JWT (HS256 or RS256) with sub and tenant")


def stream_user(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[
        str | None,
        Query(
            max_length=4096,
            pattern=r"^[A-Za-z0-9_.\-]+$",
            description="The JWT, for clients that cannot set headers",
        ),
    ] = None,
) -> Principal:
    """The user of a bearer JWT (header, or ``token`` query parameter), or 401."""
    presented = credentials.credentials if credentials is not None else token
    if not presented:
        raise UnauthorizedError("missing bearer token")
    return resources.verifier.verify(presented)


_SSE_EVENT = {
    "type": "object",
    "description": "One event; ``data`` is a JSON frame {id, type, conversation_id, data}",
    "properties": {
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}
_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An endless ``text/event-stream`` of the conversation's events",
        "content": {"text/event-stream": {"schema": _SSE_EVENT, "itemSchema": _SSE_EVENT}},
    }
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={**_SSE_RESPONSE, **problems(400, 401, 404, 422)},
)
async def conversation_events(
    conversation_id: ConversationPath,
    user: Annotated[Principal, Depends(stream_user)],
    uow: WriteUoW,
    resources: ResourcesDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Resume after this event id (a value that is not an event id is ignored)",
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(pattern=EVENT_ID_PATTERN, description="Resume after this event id"),
        AfterValidator(check_event_id),
    ] = None,
) -> StreamingResponse:
    """Live events of a conversation as Server-Sent Events, resumable by event id."""
    await subscriptions.authorize_subscription(uow.conn, user, conversation_id)
    await subscriptions.record_viewer_activity(uow, user, conversation_id, "sse")
    if parse_event_id(last_event_id) is None:
        last_event_id = None
    return StreamingResponse(
        handlers.sse_frames(resources, conversation_id, last_event_id or after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
