"""Pure ASGI guard that refuses oversized and non-JSON bodies before anything parses them."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conversation_service.errors import (
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from conversation_service.routes.errors import problem_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_GUARDED_PREFIXES = ("/api/", "/internal/")


class BodyGuardMiddleware:
    """413 for bodies over ``max_bytes`` (declared or streamed), 415 for non-JSON bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        extra_prefixes: tuple[str, ...] = (),
        ndjson_paths: tuple[str, ...] = (),
        ndjson_max_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefixes = _GUARDED_PREFIXES + extra_prefixes
        # Exact paths that take application/x-ndjson (and only it), with a bound of their own.
        self.ndjson_paths = frozenset(ndjson_paths)
        self.ndjson_max_bytes = ndjson_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or not scope["path"].startswith(self.prefixes)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ndjson = scope["path"] in self.ndjson_paths
        limit = self.ndjson_max_bytes if ndjson else self.max_bytes
        error = self._check_headers(headers, limit, ndjson=ndjson)
        if error is not None:
            await problem_response(error, scope["path"])(scope, receive, send)
            return

        # Every guarded endpoint parses the whole JSON body anyway, so reading it here first
        # costs nothing and lets a streamed oversize body be refused before any parser sees it.
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                error = PayloadTooLargeError(f"request body is over {limit} bytes")
                await problem_response(error, scope["path"])(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, replay_body(b"".join(chunks), receive), send)

    def _check_headers(
        self, headers: dict[bytes, bytes], limit: int, *, ndjson: bool
    ) -> ServiceError | None:
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return PayloadTooLargeError("invalid Content-Length")
            if int(length) > limit:
                return PayloadTooLargeError(f"request body is over {limit} bytes")
            if int(length) == 0:
                return None
        elif b"transfer-encoding" not in headers:
            return None  # no body at all
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ndjson:
            if content_type != b"application/x-ndjson":
                return UnsupportedMediaTypeError("this request body must be application/x-ndjson")
            return None
        if content_type != b"application/json" and not (
            content_type.startswith(b"application/") and content_type.endswith(b"+json")
        ):
            return UnsupportedMediaTypeError("request bodies must be application/json")
        return None


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) in one message, then defers."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
