"""Request dependencies: resources, the unit of work, credentials and load-or-404 guards."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.config.constants import MAX_IDEMPOTENCY_KEY_CHARS
from conversation_service.errors import BadRequestError, UnauthorizedError
from conversation_service.queue.jobs import JobSpec
from conversation_service.queue.producer import OutboxRelay
from conversation_service.resources import Resources
from conversation_service.services.auth import Principal, verify_service_key

log = logging.getLogger(__name__)


async def get_resources(request: Request) -> Resources:
    """The resources the lifespan built."""
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


_READ_METHODS = frozenset({"GET", "HEAD"})


async def unit_of_work(request: Request, resources: ResourcesDep) -> AsyncIterator[AsyncConnection]:
    """One connection per request; writes get one transaction, committed when the handler
    returns and rolled back if it raises. Function scope makes the commit happen before the
    response is sent, so a client never sees a 2xx for work that did not commit.

    Reads run in autocommit: under READ COMMITTED each statement sees committed data either
    way, and skipping BEGIN/COMMIT saves two round trips per read.
    """
    async with resources.engine.connect() as conn:
        if request.method in _READ_METHODS:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        async with conn.begin():
            yield conn


UnitOfWork = Annotated[AsyncConnection, Depends(unit_of_work, scope="function")]


class AfterCommitHooks:
    """Work that must follow a successful commit (cache refreshes, event publication)."""

    def __init__(self) -> None:
        self._hooks: list[Callable[[], Awaitable[None]]] = []

    def add(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once the request's transaction has committed."""
        self._hooks.append(hook)

    async def run(self) -> None:
        """Run the hooks in order; a failing hook is logged and does not hide the others."""
        for hook in self._hooks:
            try:
                await hook()
            except Exception:
                log.exception("after-commit hook failed")


def dispatch_after_commit(
    hooks: AfterCommitHooks, relay: OutboxRelay, jobs: Sequence[JobSpec]
) -> None:
    """Hand the outbox rows written in this request to the relay once the request commits."""
    if not jobs:
        return
    pending = tuple(jobs)

    async def dispatch() -> None:
        relay.submit(pending)

    hooks.add(dispatch)


async def after_commit() -> AsyncIterator[AfterCommitHooks]:
    """Hooks that run after the unit of work commits; dropped if the request fails.

    Declared before ``UnitOfWork`` in a route's signature, so its exit runs after the commit.
    """
    hooks = AfterCommitHooks()
    yield hooks
    await hooks.run()


AfterCommit = Annotated[AfterCommitHooks, Depends(after_commit, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="User JWT (HS256 or RS256) with sub and tenant")
_service_bearer = HTTPBearer(
    auto_error=False, scheme_name="ServiceKey", description="Orchestrator service key"
)


async def current_user(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The user a valid bearer JWT names, or 401."""
    if credentials is None:
        raise UnauthorizedError("missing bearer token")
    return resources.verifier.verify(credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def internal_service(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_service_bearer)],
) -> None:
    """Accept only a configured orchestrator service key."""
    if credentials is None:
        raise UnauthorizedError("missing service key")
    verify_service_key(credentials.credentials, resources.internal_keys)


async def idempotency_key(
    resources: ResourcesDep,
    user: CurrentUser,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retry-safe key: a repeat with the same body returns the first response.",
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY_CHARS,
            pattern=r"^[\x20-\x7e]+$",
        ),
    ] = None,
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
