"""Rate-limit dependencies, attached to whole routers where the app includes them.

Each one authenticates first (the credential dependency is shared with the route, so it runs
once per request), then counts the request: a request refused by its credentials never spends
anyone's quota. Message appends, recognised by their route template, also count against the
per-user message limit, in the same Redis round trip. A ``/v1`` request may add up to 20 items,
so the ``/v1`` routes count its items themselves, one append each, once the body is read.
"""

from typing import Annotated

from fastapi import Depends, Request

from conversation_service.routes.deps import CurrentUser, ResourcesDep, internal_service
from conversation_service.routes.events import stream_user
from conversation_service.routes.openai_compat import ApiKeyUser
from conversation_service.services.auth import Principal

# Route templates (any mount prefix) whose POST appends one message.
_APPEND_SUFFIXES = ("/conversations/{conversation_id}/messages",)


def _is_append(request: Request) -> bool:
    if request.method != "POST":
        return False
    template = getattr(request.scope.get("route"), "path", "")
    return isinstance(template, str) and template.endswith(_APPEND_SUFFIXES)


async def limit_user(request: Request, resources: ResourcesDep, user: CurrentUser) -> None:
    """Count a public request (bearer JWT) for its user and tenant."""
    await resources.limiter.check_user(user, message=_is_append(request))


async def limit_stream_user(
    resources: ResourcesDep, user: Annotated[Principal, Depends(stream_user)]
) -> None:
    """Count an SSE request (JWT in the header or the ``token`` query parameter)."""
    await resources.limiter.check_user(user)


async def limit_api_key_user(resources: ResourcesDep, user: ApiKeyUser) -> None:
    """Count an OpenAI-compatible request (API key) for its user and tenant (items: the route)."""
    await resources.limiter.check_user(user)


async def limit_internal(
    request: Request,
    resources: ResourcesDep,
    _checked: Annotated[None, Depends(internal_service)],
) -> None:
    """Count an internal request for its service key (checked by ``internal_service``)."""
    key = request.headers.get("authorization", "").partition(" ")[2].strip()
    await resources.limiter.check_internal(key)
