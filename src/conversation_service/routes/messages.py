"""Public message routes under ``/api/v1/conversations/{id}/messages``."""

import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Response, status

from conversation_service.config.constants import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_CHARS,
    MAX_PAGE_SIZE,
    MAX_SEQ,
)
from conversation_service.db.reads import AsyncpgReads
from conversation_service.models.common import Page
from conversation_service.models.message import MessageCreate, MessageOut, MessageUpdate
from conversation_service.resources import Resources
from conversation_service.routes.deps import (
    AfterCommit,
    AfterCommitHooks,
    CurrentUser,
    IdempotencyKey,
    ResourcesDep,
    UnitOfWork,
    dispatch_after_commit,
)
from conversation_service.routes.errors import problems
from conversation_service.services import fast_append, message_store
from conversation_service.services.auth import Principal
from conversation_service.services.message_store import PageRequest
from conversation_service.websocket.events import EventType, publish_after_commit

router = APIRouter(prefix="/api/v1/conversations/{conversation_id}/messages", tags=["messages"])


class JSONBytesResponse(Response):
    """A response whose body is already JSON-ready data (skips a second validation pass).

    ``UUID`` and UTC ``datetime`` values are rendered by orjson as Pydantic would
    (``…T12:00:00.5Z``), so hot paths can leave them unconverted (``message_wire``); asyncpg's
    own UUID type, which orjson does not know, goes through ``str``.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses=problems(400, 401, 404, 409, 413, 415, 422),
)
async def append_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    user: CurrentUser,
    key: IdempotencyKey,
    hooks: AfterCommit,
    resources: ResourcesDep,
) -> Response:
    """Append a user message; retry safely with an ``Idempotency-Key`` header."""
    return await append(resources, user, conversation_id, body, key, hooks)


async def append(
    resources: Resources,
    user: Principal,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    key: str | None,
    hooks: AfterCommitHooks,
) -> Response:
    """The append behind the route and its fast twin (``routes.fast``): write, then queue the
    relay hand-off and the events on ``hooks``."""
    result = None
    if key is None:
        result = await _append_in_one_round_trip(resources, user, conversation_id, body)
    if result is None:
        async with resources.engine.begin() as conn:
            result = await message_store.append_user_message(
                conn, user, conversation_id, body, settings=resources.settings, idempotency_key=key
            )
    dispatch_after_commit(hooks, resources.relay, result.jobs)
    if result.started_session is not None:
        publish_after_commit(
            hooks, resources.events, conversation_id, EventType.SESSION_STARTED,
            {"session": result.started_session.model_dump(mode="json")},
        )  # fmt: skip
    if not result.replayed:
        publish_after_commit(
            hooks, resources.events, conversation_id, EventType.MESSAGE_CREATED,
            {"message": result.message},
        )  # fmt: skip
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONBytesResponse(result.message, status_code=201, headers=headers)


async def _append_in_one_round_trip(
    resources: Resources, user: Principal, conversation_id: uuid.UUID, body: MessageCreate
) -> message_store.AppendResult | None:
    """The common case (``services.fast_append``); None: take the general path."""
    if isinstance(resources.reads, AsyncpgReads):
        async with resources.reads.connection() as conn:
            done = await fast_append.append_pg(
                conn, user, conversation_id, body, resources.settings
            )
    elif resources.writer is not None:
        done = await fast_append.append_sqlite(
            resources.writer, user, conversation_id, body, resources.settings
        )
    else:
        return None
    if done is None:
        return None
    started = (
        await fast_append.start_session_after(
            resources.engine, user, conversation_id, body, done.at
        )
        if done.session_id is None
        else None
    )
    return message_store.AppendResult(
        message=done.message, replayed=False, jobs=done.jobs, started_session=started
    )


@router.get("", response_model=Page[MessageOut], responses=problems(400, 401, 404, 422))
async def list_messages(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    resources: ResourcesDep,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> Response:
    """A page of history by ``seq`` (keyset: ``after_seq``/``before_seq`` or ``cursor``)."""
    page = PageRequest(after_seq, before_seq, order, limit, cursor)
    return await list_page(resources, user, conversation_id, page)


async def list_page(
    resources: Resources, user: Principal, conversation_id: uuid.UUID, page: PageRequest
) -> Response:
    """The history page behind the route and its fast twin (``routes.fast``)."""
    async with resources.reads.connection() as conn:
        body = await message_store.list_messages_json(
            conn, user, conversation_id, page, codec=resources.cursors
        )
    return Response(body, media_type="application/json")


@router.get("/{message_id}", response_model=MessageOut, responses=problems(401, 404, 422))
async def get_message(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, uow: UnitOfWork
) -> Response:
    """Get one message."""
    return JSONBytesResponse(
        await message_store.get_message(uow, user, conversation_id, message_id)
    )


@router.patch(
    "/{message_id}", response_model=MessageOut, responses=problems(400, 401, 404, 413, 415, 422)
)
async def update_message(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: MessageUpdate,
    user: CurrentUser,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
) -> Response:
    """Merge-patch a message's metadata."""
    message = await message_store.update_message_metadata(
        uow, user, conversation_id, message_id, body
    )
    publish_after_commit(
        hooks, resources.events, conversation_id, EventType.MESSAGE_UPDATED,
        {"message": message},
    )  # fmt: skip
    return JSONBytesResponse(message)


@router.delete(
    "/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 404, 422),
)
async def delete_message(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    user: CurrentUser,
    hooks: AfterCommit,
    uow: UnitOfWork,
    resources: ResourcesDep,
) -> None:
    """Delete a message (its content is erased; its seq stays as a gap-free tombstone)."""
    await message_store.delete_message(uow, user, conversation_id, message_id)
    publish_after_commit(
        hooks, resources.events, conversation_id, EventType.MESSAGE_DELETED,
        {"message_id": str(message_id)},
    )  # fmt: skip
