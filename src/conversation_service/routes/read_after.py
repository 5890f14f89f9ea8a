"""Read-your-writes across API replicas: the ``Conversation-Read-After`` position.

A write answered while a read replica is configured carries, as the ``Conversation-Read-After``
response header and a cookie of the same name, the WAL position of its commit
(``db.replica``). A read that sends it back (header, or the cookie a browser returns by itself)
is served by the replica only once the replica has replayed that far, else by the primary, on
whichever API replica it lands. Nothing is stored server-side: the position is the whole state.
"""

from collections.abc import MutableMapping
from contextlib import suppress
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conversation_service.db.replica import READ_AFTER_HEADER, format_position, parse_position
from conversation_service.errors import BadRequestError

HEADER = READ_AFTER_HEADER
COOKIE = "conversation_read_after"
# Where the request's unit of work leaves the position of its commit for the middleware.
STATE_KEY = "read_after_position"
# Long past any sane replica lag: by then the replica shows the write anyway.
COOKIE_MAX_AGE = 300


def requested_position(request: Request) -> int | None:
    """The newest position the caller sent (header or cookie); 400 for a malformed header.

    A malformed cookie is ignored: a browser cannot be told to fix one, and without it the read
    is merely eventually consistent.
    """
    positions: list[int] = []
    header = request.headers.get(HEADER)
    if header is not None:
        try:
            positions.append(parse_position(header))
        except ValueError as exc:
            raise BadRequestError(
                f"{HEADER} must be a position from a previous response, like 16/B374D848"
            ) from exc
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        with suppress(ValueError):
            positions.append(parse_position(cookie))
    return max(positions, default=None)


def remember_position(request: Request, position: int | None) -> None:
    """Have the response carry ``position`` (the unit of work's commit), if any."""
    if position is not None:
        request.scope.setdefault("state", {})[STATE_KEY] = position


class ReadAfterMiddleware:
    """Adds the commit position a request's write left in its scope to the response headers.

    Pure ASGI: the unit of work commits after the handler returned its response object (function
    scope), so only the response's start message can still carry it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_position(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: MutableMapping[str, Any] = scope.get("state") or {}
                position = state.get(STATE_KEY)
                if isinstance(position, int):
                    value = format_position(position)
                    cookie = (
                        f"{COOKIE}={value}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; "
                        "SameSite=Lax"
                    )
                    message["headers"] = [
                        *message.get("headers", []),
                        (HEADER.lower().encode(), value.encode()),
                        (b"set-cookie", cookie.encode()),
                    ]
            await send(message)

        await self.app(scope, receive, send_with_position)
