"""OpenAI's error dialect for the OpenAI-compatible API, as a pure ASGI middleware.

Errors are raised and rendered once, by the one handler, as problem+json. Under the OpenAI
prefix this middleware rewrites every problem document into OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``, whatever produced it (a route, a dependency,
the router's 404/405, the body guard's 413/415), so the official SDK raises the exception class
its status maps to and reads ``param`` and ``code``. Validation failures become 400 (OpenAI
never answers 422) with the offending parameter in ``param``; a bad key is 401
``invalid_api_key``. Everything outside the prefix is left alone.
"""

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conversation_service.models.openai_compat import DISCRIMINATOR_TAGS, OpenAIError
from conversation_service.models.openai_items import ITEM_TAGS

log = logging.getLogger("conversation_service.errors")

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
# Pydantic's labels for union members and validators, e.g. ``function-after[...]``.
_PYDANTIC_LABEL = re.compile(r"^[a-z-]+\[.+\]$")
_VALIDATION_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "unsupported_item_type": "unsupported_item_type",
}
_DESCRIPTIONS = {
    400: "Invalid request (bad parameter, unsupported item type, malformed JSON)",
    401: "Missing, unknown or revoked API key",
    404: "No such conversation or item (or not yours)",
    409: "The conversation does not accept items (archived or closed)",
    413: "Body too large",
    415: "Body is not JSON",
}


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given statuses, in OpenAI's error shape."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Error"),
            "model": OpenAIError,
        }
        for status in statuses
    }


def param_from_loc(loc: Sequence[str]) -> str | None:
    """``["body", "items", "0", "content"]`` → ``items[0].content`` (OpenAI's notation)."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    param = ""
    after_index = False
    for part in parts:
        part = part.removesuffix("[]")  # a query array as the SDK names it: include[]
        if part.isdigit():
            param += f"[{part}]"
            after_index = True
            continue
        if (
            (after_index and (part in DISCRIMINATOR_TAGS or part in ITEM_TAGS))
            or _PYDANTIC_LABEL.match(part)
            or part == "[key]"  # the key of a dict entry, rather than its value, was refused
        ):
            continue
        param += f".{part}" if param else part
        after_index = False
    return param or None


def openai_error(status: int, problem: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error body for a problem document."""
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or "error"
    message = str(problem.get("detail") or problem.get("title") or "error")
    param = problem.get("param")
    code: str | None = slug.replace("-", "_")
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        first = errors[0]
        status = 400
        param = param_from_loc([str(part) for part in first.get("loc", ())])
        code = _VALIDATION_CODES.get(str(first.get("type")), "invalid_value")
        # Pydantic prefixes what a validator raised; OpenAI's messages are plain sentences.
        reason = str(first.get("msg") or "invalid value").removeprefix("Value error, ")
        reason = reason.rstrip(".")
        if param is None:
            message = f"{reason}."
        elif code == "missing_required_parameter":
            message = f"Missing required parameter: '{param}'."
        elif code == "unknown_parameter":
            message = f"Unknown parameter: '{param}'."
        else:
            message = f"Invalid '{param}': {reason}."
    elif status == 401:
        code = "invalid_api_key"
    body = {
        "error": {
            "message": message,
            "type": "server_error" if status >= 500 else "invalid_request_error",
            "param": param if isinstance(param, str) else None,
            "code": code,
        }
    }
    return status, body


class OpenAIErrorMiddleware:
    """Rewrites problem+json responses under ``prefix`` into OpenAI's error shape."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        path: str = scope["path"]
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []
        started = False

        async def translate(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                content_type = MutableHeaders(raw=message["headers"]).get("content-type", "")
                if content_type.startswith("application/problem+json"):
                    held = message
                    return
                started = True
                await send(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            start, held = held, None
            started = True
            await self._send_translated(start, b"".join(chunks), send)

        try:
            await self.app(scope, receive, translate)
        except Exception:
            if started:
                raise
            # The app-wide handler for the unexpected sits outside every middleware, so it would
            # answer in problem+json: answer here instead, and log what it would have logged.
            log.exception("unhandled error", extra={"path": scope["path"]})
            await self._send(500, _server_error(), [], send)

    async def _send_translated(self, start: Message, body: bytes, send: Send) -> None:
        try:
            problem = orjson.loads(body)
        except orjson.JSONDecodeError:
            problem = None
        if not isinstance(problem, dict):
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        status, error = openai_error(int(start["status"]), problem)
        kept = [
            (name, value)
            for name, value in start["headers"]
            if name.lower() not in (b"content-type", b"content-length")
        ]
        # The SDK retries 409 by default; only a lost race ("conflict") is worth retrying.
        if status == 409 and error["error"]["code"] != "conflict":
            kept.append((b"x-should-retry", b"false"))
        await self._send(status, error, kept, send)

    @staticmethod
    async def _send(
        status: int, error: dict[str, Any], headers: list[tuple[bytes, bytes]], send: Send
    ) -> None:
        payload = orjson.dumps(error)
        raw = [
            *headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def _server_error() -> dict[str, Any]:
    return {
        "error": {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
