"""Internal routes that issue and revoke API keys for the OpenAI-compatible API."""

import uuid

from fastapi import APIRouter, Depends, Response, status

from conversation_service.models.api_key import ApiKeyCreate, ApiKeyCreated
from conversation_service.routes.deps import UoW, internal_service
from conversation_service.routes.errors import problems
from conversation_service.services import api_keys

router = APIRouter(
    prefix="/internal/v1/api-keys", tags=["internal"], dependencies=[Depends(internal_service)]
)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problems(400, 401, 413, 415, 422))
async def create_api_key(body: ApiKeyCreate, uow: UoW) -> ApiKeyCreated:
    """Issue an API key acting as one user of one tenant; the key is shown only in this answer."""
    issued = await api_keys.create_api_key(
        uow.conn, tenant_id=body.tenant, user_id=body.user, name=body.name
    )
    return ApiKeyCreated(
        id=issued.id,
        key=issued.key,
        prefix=issued.prefix,
        tenant=issued.tenant_id,
        user=issued.user_id,
        name=issued.name,
        created_at=issued.created_at,
    )


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 404, 422),
)
async def revoke_api_key(key_id: uuid.UUID, uow: UoW) -> None:
    """Revoke an API key: the next request that presents it gets 401."""
    await api_keys.revoke_api_key(uow.conn, key_id)
