"""OpenAI-compatible Conversations API (mounted at ``settings.openai_prefix``, ``/v1``).

The official ``openai`` SDK works against it unchanged (``base_url=<service>/v1``). Callers
authenticate with an API key (``Authorization: Bearer cs_…``) that acts as one user of one
tenant, so what they see is exactly what that user sees through ``/api/v1``. Errors are in
OpenAI's shape (see ``routes.openai_errors``).
"""

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conversation_service.errors import UnauthorizedError
from conversation_service.models.openai_compat import (
    DEFAULT_ITEMS_PAGE,
    MAX_ITEMS_PAGE,
    ConversationDeletedObject,
    ConversationObject,
    ConversationUpdateIn,
    Includable,
    MessageItemOut,
)
from conversation_service.models.openai_items import (
    ConversationCreateIn,
    ConversationListOut,
    ItemListOut,
    ItemsCreateIn,
    OpaqueItemOut,
)
from conversation_service.routes.deps import ResourcesDep, UoW
from conversation_service.routes.openai_errors import openai_errors
from conversation_service.services import api_keys, openai_compat
from conversation_service.services.auth import Principal

router = APIRouter(tags=["openai-compatible"])
T = TypeVar("T")

_api_key_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="API key issued by POST /internal/v1/api-keys or `conversation-service api-keys`",
)


async def api_key_user(
    uow: UoW,
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key_bearer)],
) -> Principal:
    """The user a live API key acts as, or 401."""
    if credentials is None:
        raise UnauthorizedError("missing API key: send `Authorization: Bearer <key>`")
    units = resources.units
    if units.replica is None:
        return await api_keys.authenticate(uow.conn, credentials.credentials)
    # With a read replica, a GET's unit may be on it: a key is checked on the primary, so a
    # new key works and a revoked one stops at once, and its last use can be recorded.
    async with units.read() as primary:
        return await api_keys.authenticate(primary.conn, credentials.credentials)


ApiKeyUser = Annotated[Principal, Depends(api_key_user)]

# The id formats are documented, not enforced: an id of any other form names nothing, which is
# a 404 like any unknown id (the answer the SDK's users expect), not a 400.
ConversationId = Annotated[
    str,
    Path(
        description="`conv_` and 32 lowercase hex digits.",
        json_schema_extra={"pattern": "^conv_[0-9a-f]{32}$"},
    ),
]
ItemId = Annotated[
    str,
    Path(description="The id the client gave the item, else `msg_` and 32 lowercase hex digits."),
]


def includes(
    bracketed: Annotated[
        list[Includable] | None,
        Query(alias="include[]", description="Extra fields to return (the SDK's `include`)."),
    ] = None,
    plain: Annotated[list[Includable] | None, Query(alias="include")] = None,
) -> frozenset[str]:
    """``include`` as the SDK sends it (``include[]=…``) or repeated plainly."""
    return frozenset([*(bracketed or ()), *(plain or ())])


Includes = Annotated[frozenset[str], Depends(includes)]


def _links(parameters: dict[str, str], *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links from a 200 answer to the operations its ids feed (clients and fuzzers)."""
    return {
        "links": {
            "".join(word.title() for word in op.split("_")[1:]): {
                "operationId": op,
                "parameters": parameters,
            }
            for op in operation_ids
        }
    }


_FROM_NEW_CONVERSATION = _links(
    {"conversation_id": "$response.body#/id"},
    "openai_get_conversation",
    "openai_update_conversation",
    "openai_delete_conversation",
    "openai_create_items",
    "openai_list_items",
)
_FROM_NEW_ITEMS = _links(
    {"conversation_id": "$request.path.conversation_id", "item_id": "$response.body#/first_id"},
    "openai_get_item",
    "openai_delete_item",
)


@router.post(
    "/conversations",
    operation_id="openai_create_conversation",
    responses={200: _FROM_NEW_CONVERSATION, **openai_errors(400, 401, 413, 415)},
)
async def create_conversation(
    body: ConversationCreateIn,
    user: ApiKeyUser,
    uow: UoW,
    resources: ResourcesDep,
) -> ConversationObject:
    """Create a conversation, optionally with up to 20 initial items."""
    # Each item is an append, counted like one POST /api/v1/…/messages (the router counted the
    # request itself).
    await resources.limiter.check_messages(user, len(body.items or ()))
    return await openai_compat.create_conversation(uow, user, body, settings=resources.settings)


@router.get(
    "/conversations",
    operation_id="openai_list_conversations",
    responses=openai_errors(400, 401),
)
async def list_conversations(
    user: ApiKeyUser,
    uow: UoW,
    after: Annotated[
        str | None, Query(max_length=128, description="List the conversations after this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_PAGE)] = DEFAULT_ITEMS_PAGE,
    order: Literal["asc", "desc"] = "desc",
) -> ConversationListOut:
    """List the key's conversations, newest first unless ``order=asc`` (Azure's extension)."""
    return await openai_compat.list_conversations(
        uow.conn, user, after=after, limit=limit, order=order
    )


@router.get(
    "/conversations/{conversation_id}",
    operation_id="openai_get_conversation",
    responses=openai_errors(401, 404),
)
async def get_conversation(
    conversation_id: ConversationId, user: ApiKeyUser, uow: UoW
) -> ConversationObject:
    """Get a conversation."""
    return await openai_compat.get_conversation(uow.conn, user, conversation_id)


@router.post(
    "/conversations/{conversation_id}",
    operation_id="openai_update_conversation",
    responses=openai_errors(400, 401, 404, 413, 415),
)
async def update_conversation(
    conversation_id: ConversationId,
    body: ConversationUpdateIn,
    user: ApiKeyUser,
    uow: UoW,
    resources: ResourcesDep,
) -> ConversationObject:
    """Replace a conversation's metadata."""
    return await openai_compat.update_conversation(uow, user, conversation_id, body)


@router.delete(
    "/conversations/{conversation_id}",
    operation_id="openai_delete_conversation",
    responses=openai_errors(401, 404),
)
async def delete_conversation(
    conversation_id: ConversationId, user: ApiKeyUser, uow: UoW, resources: ResourcesDep
) -> ConversationDeletedObject:
    """Delete a conversation."""
    return await openai_compat.delete_conversation(
        uow, user, conversation_id, settings=resources.settings
    )


@router.post(
    "/conversations/{conversation_id}/items",
    operation_id="openai_create_items",
    responses={200: _FROM_NEW_ITEMS, **openai_errors(400, 401, 404, 409, 413, 415)},
)
async def create_items(
    conversation_id: ConversationId,
    body: ItemsCreateIn,
    user: ApiKeyUser,
    uow: UoW,
    resources: ResourcesDep,
    include: Includes,
) -> ItemListOut:
    """Add up to 20 items to a conversation."""
    await resources.limiter.check_messages(user, len(body.items))
    return await openai_compat.add_items(
        uow, user, conversation_id, body.items, include, settings=resources.settings
    )


@router.get(
    "/conversations/{conversation_id}/items",
    operation_id="openai_list_items",
    responses=openai_errors(400, 401, 404),
)
async def list_items(
    conversation_id: ConversationId,
    user: ApiKeyUser,
    uow: UoW,
    resources: ResourcesDep,
    include: Includes,
    after: Annotated[
        str | None, Query(max_length=128, description="List the items after this item id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_PAGE)] = DEFAULT_ITEMS_PAGE,
    order: Literal["asc", "desc"] = "desc",
) -> ItemListOut:
    """List a conversation's items, newest first unless ``order=asc``."""
    return await openai_compat.list_items(
        uow.conn,
        user,
        conversation_id,
        after=after,
        limit=limit,
        order=order,
        include=include,
        codec=resources.cursors,
    )


@router.get(
    "/conversations/{conversation_id}/items/{item_id}",
    operation_id="openai_get_item",
    responses=openai_errors(400, 401, 404),
)
async def get_item(
    conversation_id: ConversationId,
    item_id: ItemId,
    user: ApiKeyUser,
    uow: UoW,
    include: Includes,
) -> MessageItemOut | OpaqueItemOut:
    """Get one item."""
    return await openai_compat.get_item(uow.conn, user, conversation_id, item_id, include)


@router.delete(
    "/conversations/{conversation_id}/items/{item_id}",
    operation_id="openai_delete_item",
    responses=openai_errors(401, 404),
)
async def delete_item(
    conversation_id: ConversationId,
    item_id: ItemId,
    user: ApiKeyUser,
    uow: UoW,
    resources: ResourcesDep,
) -> ConversationObject:
    """Delete an item; answers with the conversation."""
    return await openai_compat.delete_item(uow, user, conversation_id, item_id)
