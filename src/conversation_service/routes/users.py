"""Per-user data erasure: ``DELETE /api/v1/users/me/data`` and its internal counterpart.

What is erased, and what is not kept, is described in ``services.lifecycle``. Erasure is
synchronous: when the answer arrives the database holds nothing of the user in that tenant, and
Redis has been cleared too (or, if Redis was unreachable, will be by the keys' TTLs).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from conversation_service.config.constants import MAX_ID_CHARS
from conversation_service.models.lifecycle import ErasureOut
from conversation_service.resources import Resources
from conversation_service.routes.deps import (
    AfterCommit,
    AfterCommitHooks,
    CurrentUser,
    ResourcesDep,
    UnitOfWork,
    internal_service,
)
from conversation_service.routes.errors import problems
from conversation_service.services import lifecycle
from conversation_service.services.auth import Principal

public = APIRouter(prefix="/api/v1/users", tags=["users"])
internal = APIRouter(
    prefix="/internal/v1/tenants", tags=["internal"], dependencies=[Depends(internal_service)]
)

# As in tokens and bodies: no control characters (PostgreSQL cannot even compare a NUL).
Identifier = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f]+$")]


def _clear_after_commit(
    hooks: AfterCommitHooks, resources: Resources, principal: Principal, erasure: lifecycle.Erasure
) -> None:
    async def clear() -> None:
        await lifecycle.clear_after_erasure(
            resources.redis, resources.relay.dispatcher.redis, erasure
        )
        await resources.limiter.forget(principal)

    hooks.add(clear)


@public.delete("/me/data", responses=problems(401))
async def erase_my_data(
    user: CurrentUser, hooks: AfterCommit, uow: UnitOfWork, resources: ResourcesDep
) -> ErasureOut:
    """Erase everything stored about the caller in their tenant; answers what was removed."""
    erasure = await lifecycle.erase_user(uow, user)
    _clear_after_commit(hooks, resources, user, erasure)
    return erasure.report


@internal.delete("/{tenant_id}/users/{user_id}/data", responses=problems(401, 422))
async def erase_user_data(
    tenant_id: Identifier,
    user_id: Identifier,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
) -> ErasureOut:
    """Erase everything stored about one user of one tenant (e.g. a GDPR request)."""
    principal = Principal(tenant_id=tenant_id, user_id=user_id)
    erasure = await lifecycle.erase_user(uow, principal)
    _clear_after_commit(hooks, resources, principal, erasure)
    return erasure.report
