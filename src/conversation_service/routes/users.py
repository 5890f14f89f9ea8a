"""Per-user data: erasure (``DELETE /api/v1/users/me/data``) and export
(``GET /api/v1/users/me/export``), each with its internal counterpart.

What is erased, and what is not kept, is described in ``services.erasure``. Erasure is
synchronous: when the answer arrives the database holds nothing of the user in that tenant, and
Redis has been cleared too (or, if Redis was unreachable, will be by the keys' TTLs).
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse

from conversation_service.config.constants import MAX_ID_CHARS
from conversation_service.models.lifecycle import ErasureOut
from conversation_service.routes.deps import CurrentUser, ResourcesDep, UoW, internal_service
from conversation_service.routes.errors import problems
from conversation_service.services import erasure, export
from conversation_service.services.auth import Principal

public = APIRouter(prefix="/api/v1/users", tags=["users"])
internal = APIRouter(
    prefix="/internal/v1/tenants", tags=["internal"], dependencies=[Depends(internal_service)]
)

# As in tokens and bodies: no control characters (PostgreSQL cannot even compare a NUL).
Identifier = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f]+$")]


@public.delete("/me/data", responses=problems(401))
async def erase_my_data(user: CurrentUser, uow: UoW, resources: ResourcesDep) -> ErasureOut:
    """Erase everything stored about the caller in their tenant; answers what was removed."""
    return await _erase(uow, resources, user)


@internal.delete("/{tenant_id}/users/{user_id}/data", responses=problems(401, 422))
async def erase_user_data(
    tenant_id: Identifier, user_id: Identifier, uow: UoW, resources: ResourcesDep
) -> ErasureOut:
    """Erase everything stored about one user of one tenant (e.g. a GDPR request)."""
    return await _erase(uow, resources, Principal(tenant_id=tenant_id, user_id=user_id))


async def _erase(uow: UoW, resources: ResourcesDep, principal: Principal) -> ErasureOut:
    return await erasure.erase_user(
        uow,
        principal,
        redis=resources.redis,
        rq_redis=resources.relay.dispatcher.redis,
        limiter=resources.limiter,
    )


_EXPORT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One JSON object per line: {type, data}; see the README's export format.",
        "content": {export.MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


@public.get(
    "/me/export",
    response_class=StreamingResponse,
    responses={**_EXPORT_RESPONSE, **problems(401, 422)},
)
async def export_my_data(
    user: CurrentUser, resources: ResourcesDep, after: uuid.UUID | None = None
) -> StreamingResponse:
    """Everything stored about the caller in their tenant, as NDJSON; ``after`` resumes."""
    return _export(resources, user, after)


@internal.get(
    "/{tenant_id}/users/{user_id}/export",
    response_class=StreamingResponse,
    responses={**_EXPORT_RESPONSE, **problems(401, 422)},
)
async def export_user_data(
    tenant_id: Identifier,
    user_id: Identifier,
    resources: ResourcesDep,
    after: uuid.UUID | None = None,
) -> StreamingResponse:
    """Everything stored about one user of one tenant, as NDJSON; ``after`` resumes."""
    return _export(resources, Principal(tenant_id=tenant_id, user_id=user_id), after)


def _export(
    resources: ResourcesDep, principal: Principal, after: uuid.UUID | None
) -> StreamingResponse:
    # The export opens its own snapshot as it streams: a request's unit of work ends before
    # the body is sent.
    units = resources.units
    body = export.export_user(
        units.reader or units.engine, resources.settings, principal, after=after
    )
    return StreamingResponse(body, media_type=export.MEDIA_TYPE)
