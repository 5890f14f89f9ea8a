"""Rate-limit dependencies of the SSE and ``/v1`` routers, attached where the app includes them.

(``routes.deps.current_user`` and ``internal_service`` count the public and internal requests
themselves.) Each one authenticates first (the credential dependency is shared with the route,
so it runs once per request), then counts the request: a request refused by its credentials
never spends anyone's quota. A ``/v1`` request may add up to 20 items, so the ``/v1`` routes
count its items themselves, one append each, once the body is read.
"""

from typing import Annotated

from fastapi import Depends

from conversation_service.routes.deps import ResourcesDep
from conversation_service.routes.events import stream_user
from conversation_service.routes.openai_compat import ApiKeyUser
from conversation_service.services.auth import Principal


async def limit_stream_user(
    resources: ResourcesDep, user: Annotated[Principal, Depends(stream_user)]
) -> None:
    """Count an SSE request (JWT in the header or the ``token`` query parameter)."""
    await resources.limiter.check_user(user)


async def limit_api_key_user(resources: ResourcesDep, user: ApiKeyUser) -> None:
    """Count an OpenAI-compatible request (API key) for its user and tenant (items: the route)."""
    await resources.limiter.check_user(user)
