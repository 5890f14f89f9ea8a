"""Request dependencies: resources, the unit of work, credentials and load-or-404 guards."""

import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from conversation_service.config.constants import MAX_IDEMPOTENCY_KEY_CHARS
from conversation_service.errors import BadRequestError, UnauthorizedError
from conversation_service.resources import Resources
from conversation_service.routes.read_after import remember_position, requested_position
from conversation_service.services.auth import Principal, verify_service_key
from conversation_service.services.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    """The resources the lifespan built."""
    return _resources(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]

_V1_CONVERSATION_ID = re.compile(r"conv_([0-9a-f]{32})")


def _from_v1_form(value: object) -> object:
    """``conv_<32 hex>``, the id ``/v1`` shows, as the UUID it stands for; others unchanged."""
    if isinstance(value, str) and (match := _V1_CONVERSATION_ID.fullmatch(value)):
        return uuid.UUID(hex=match.group(1))
    return value


# A conversation id in a path: its UUID, or the `/v1` form of the same id.
ConversationPath = Annotated[
    uuid.UUID,
    BeforeValidator(_from_v1_form),
    Path(description="The conversation's id; its `/v1` form (`conv_` and 32 hex digits) too."),
]


_READ_METHODS = frozenset({"GET", "HEAD"})


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work: writes get one transaction, committed when the handler
    returns (rolled back if it raises), then the jobs and events the use case recorded are
    handed on. Function scope makes both happen before the response is sent, so a client never
    sees a 2xx for work that did not commit. Reads run in autocommit, on the read replica when
    one is configured and has replayed the caller's last write (``routes.read_after``)."""
    units = _resources(request).units
    if request.method in _READ_METHODS:
        after = requested_position(request) if units.replica is not None else None
        async with units.read(replica=True, after=after) as uow:
            yield uow
        return
    async with units.write() as uow:
        yield uow
    remember_position(request, uow.position)


UoW = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]


async def replica_unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """A read unit that may use the read replica whatever the method (a search or an export
    sent as POST): the same routing as a GET's."""
    units = _resources(request).units
    after = requested_position(request) if units.replica is not None else None
    async with units.read(replica=True, after=after) as uow:
        yield uow


ReplicaUoW = Annotated[UnitOfWork, Depends(replica_unit_of_work, scope="function")]


async def write_unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """A write unit of work whatever the method (a GET that records activity)."""
    async with _resources(request).units.write() as uow:
        yield uow
    remember_position(request, uow.position)


WriteUoW = Annotated[UnitOfWork, Depends(write_unit_of_work, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="User JWT (HS256 or RS256) with sub and tenant")
_service_bearer = HTTPBearer(
    auto_error=False, scheme_name="ServiceKey", description="Orchestrator service key"
)


# Route templates (any mount prefix) whose POST appends one message.
_APPEND_SUFFIXES = ("/conversations/{conversation_id}/messages",)


def _is_append(request: Request) -> bool:
    if request.method != "POST":
        return False
    template = getattr(request.scope.get("route"), "path", "")
    return isinstance(template, str) and template.endswith(_APPEND_SUFFIXES)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The user a valid bearer JWT names (401 otherwise), counted against the user's and the
    tenant's rate limits, and the message quota on an append.

    One flat dependency: a refused credential spends nobody's quota, and the hot routes solve
    one dependency for both checks.
    """
    if credentials is None:
        raise UnauthorizedError("missing bearer token")
    resources = _resources(request)
    user = resources.verifier.verify(credentials.credentials)
    await resources.limiter.check_user(user, message=_is_append(request))
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]


async def internal_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_service_bearer)],
) -> None:
    """Accept only a configured orchestrator service key, counted against its rate limit."""
    if credentials is None:
        raise UnauthorizedError("missing service key")
    resources = _resources(request)
    verify_service_key(credentials.credentials, resources.internal_keys)
    await resources.limiter.check_internal(credentials.credentials)


IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe key: a repeat with the same body returns the first response.",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        pattern=r"^[\x20-\x7e]+$",
    ),
]


async def idempotency_key(
    resources: ResourcesDep,
    user: CurrentUser,
    key: IdempotencyHeader = None,
) -> AsyncIterator[str | None]:
    """Validate the Idempotency-Key and hold it in-process until the request has committed.

    Declared before the unit of work in a route's signature, so it is released after the commit.
    """
    if key is None:
        yield None
        return
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise BadRequestError(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
        )
    with resources.in_flight.hold(user, key):
        yield key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key, scope="function")]

# The in-process holder of the orchestrator's keys (its records are scoped per tenant).
_ORCHESTRATOR_KEYS = Principal(tenant_id="~internal", user_id="~orchestrator")


async def service_idempotency_key(
    resources: ResourcesDep,
    key: IdempotencyHeader = None,
) -> AsyncIterator[str | None]:
    """The orchestrator's Idempotency-Key, held in-process until the request has committed."""
    if key is None:
        yield None
        return
    with resources.in_flight.hold(_ORCHESTRATOR_KEYS, key):
        yield key


ServiceIdempotencyKey = Annotated[str | None, Depends(service_idempotency_key, scope="function")]
