"""Fast twins of the four hottest routes, served ahead of FastAPI's router (pure ASGI).

On every agent turn the platform appends a message, reads the context window, streams deltas
and clients page history. FastAPI 0.165 spends 0.3-1 ms of CPU per request before a handler
runs (its included routers match about a hundred routes one by one, and it rebuilds dependency
metadata on every request), which is more than the database work of an append or a page.

``FastRoutes`` recognises those four operations by method and path and runs the very code the
routes run (``messages.append``, ``messages.list_page``, ``internal.context_window``,
``streaming.publish_deltas``) after the same credential check and rate limit, rendering errors
with the same ``problem_for``. It only takes a request that is plainly valid: a missing or
malformed credential, a non-canonical id, a duplicated or out-of-range query parameter, a body
the model refuses or an ``Idempotency-Key`` sends the request on to FastAPI untouched (its body
replayed), which answers with the documented error or the general path. So the OpenAPI
document, the validation errors and the rare paths stay FastAPI's; tests compare both paths
response by response (``tests/routes/test_fast.py``).
"""

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast
from urllib.parse import parse_qsl

import pydantic
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conversation_service.config.constants import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_CHARS,
    MAX_PAGE_SIZE,
    MAX_SEQ,
)
from conversation_service.models.memory import Encoding, MemoryStrategy
from conversation_service.models.message import MessageCreate
from conversation_service.models.streaming import DeltasIn
from conversation_service.resources import Resources
from conversation_service.routes.deps import AfterCommitHooks
from conversation_service.routes.errors import problem_for
from conversation_service.routes.internal import context_window
from conversation_service.routes.limits import replay_body
from conversation_service.routes.messages import append, list_page
from conversation_service.routes.streaming import publish_deltas
from conversation_service.services.auth import Principal, verify_service_key
from conversation_service.services.memory_manager import WindowRequest
from conversation_service.services.message_store import PageRequest

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_MESSAGES = re.compile(rf"/api/v1/conversations/({_UUID})/messages")
_CONTEXT = re.compile(rf"/internal/v1/conversations/({_UUID})/context")
_DELTAS = re.compile(rf"/internal/v1/conversations/({_UUID})/messages/({_UUID})/deltas")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")
_STRATEGIES = frozenset(MemoryStrategy)
_ENCODINGS = frozenset(Encoding)
_PAGE_PARAMS = frozenset({"after_seq", "before_seq", "order", "limit", "cursor"})
_WINDOW_PARAMS = frozenset({"strategy", "max_tokens", "last_n", "encoding", "format"})
_Body = TypeVar("_Body", MessageCreate, DeltasIn)


class _DeclinedError(Exception):
    """The request is not plainly valid for a fast twin: FastAPI answers it."""


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """What ``scope["route"]`` carries for metrics: the template the route is declared with."""

    path: str


_MESSAGES_ROUTE = RouteTemplate("/api/v1/conversations/{conversation_id}/messages")
_CONTEXT_ROUTE = RouteTemplate("/internal/v1/conversations/{conversation_id}/context")
_DELTAS_ROUTE = RouteTemplate(
    "/internal/v1/conversations/{conversation_id}/messages/{message_id}/deltas"
)

Handler = Callable[[Resources, Scope, tuple[str, ...], bytes], Awaitable[Response]]


class FastRoutes:
    """Pure ASGI middleware: serves the fast twins, passes everything else through."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if self.enabled and scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        handler, template, ids, has_body = found
        body = b""
        if has_body:
            body_or_none = await _read_body(receive)
            if body_or_none is None:
                return  # the client went away
            body = body_or_none
        resources: Resources = scope["app"].state.resources
        try:
            response = await handler(resources, scope, ids, body)
        except _DeclinedError:
            resources.metrics.fast_routes_by(template.path, "declined").inc()
            await self.app(scope, replay_body(body, receive) if has_body else receive, send)
            return
        except Exception as exc:
            response = problem_for(exc, scope["path"])
        scope["route"] = template
        resources.metrics.fast_routes_by(template.path, "served").inc()
        await response(scope, receive, send)

    @staticmethod
    def _match(scope: Scope) -> tuple[Handler, RouteTemplate, tuple[str, ...], bool] | None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/api/v1/conversations/"):
            match = _MESSAGES.fullmatch(path)
            if match is None:
                return None
            if method == "GET":
                return _list, _MESSAGES_ROUTE, match.groups(), False
            if method == "POST":
                return _append, _MESSAGES_ROUTE, match.groups(), True
            return None
        if path.startswith("/internal/v1/conversations/"):
            if method == "GET" and (match := _CONTEXT.fullmatch(path)) is not None:
                return _context, _CONTEXT_ROUTE, match.groups(), False
            if method == "POST" and (match := _DELTAS.fullmatch(path)) is not None:
                return _deltas, _DELTAS_ROUTE, match.groups(), True
        return None


async def _list(resources: Resources, scope: Scope, ids: tuple[str, ...], _: bytes) -> Response:
    query = _query(scope, _PAGE_PARAMS)
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise _DeclinedError
    cursor = query.get("cursor")
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise _DeclinedError
    user = await _user(resources, scope, message=False)
    page = PageRequest(
        after_seq=_int(query, "after_seq", 0, MAX_SEQ),
        before_seq=_int(query, "before_seq", 1, MAX_SEQ),
        order=order,
        limit=_int(query, "limit", 1, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE,
        cursor=cursor,
    )
    return await list_page(resources, user, uuid.UUID(ids[0]), page)


async def _append(resources: Resources, scope: Scope, ids: tuple[str, ...], raw: bytes) -> Response:
    if _header(scope, b"idempotency-key") is not None:
        raise _DeclinedError  # the general path holds the key while it writes
    body = _model(MessageCreate, raw)
    user = await _user(resources, scope, message=True)
    hooks = AfterCommitHooks()
    response = await append(resources, user, uuid.UUID(ids[0]), body, None, hooks)
    await hooks.run()
    return response


async def _context(resources: Resources, scope: Scope, ids: tuple[str, ...], _: bytes) -> Response:
    query = _query(scope, _WINDOW_PARAMS)
    strategy = query.get("strategy")
    encoding = query.get("encoding")
    format_ = query.get("format", "native")
    if (
        (strategy is not None and strategy not in _STRATEGIES)
        or (encoding is not None and encoding not in _ENCODINGS)
        or format_ not in ("native", "openai")
    ):
        raise _DeclinedError
    request = WindowRequest(
        strategy=MemoryStrategy(strategy) if strategy is not None else None,
        max_tokens=_int(query, "max_tokens", 16, 2_000_000),
        last_n=_int(query, "last_n", 1, 1000),
        encoding=Encoding(encoding) if encoding is not None else None,
    )
    await _service(resources, scope)
    return await context_window(resources, uuid.UUID(ids[0]), request, openai=format_ == "openai")


async def _deltas(resources: Resources, scope: Scope, ids: tuple[str, ...], raw: bytes) -> Response:
    body = _model(DeltasIn, raw)
    await _service(resources, scope)
    return await publish_deltas(resources, uuid.UUID(ids[0]), uuid.UUID(ids[1]), body)


async def _user(resources: Resources, scope: Scope, *, message: bool) -> Principal:
    """``current_user`` then ``limit_user``, as the public routers run them."""
    user = resources.verifier.verify(_bearer(scope))
    await resources.limiter.check_user(user, message=message)
    return user


async def _service(resources: Resources, scope: Scope) -> None:
    """``internal_service`` then ``limit_internal``, as the internal routers run them."""
    key = _bearer(scope)
    verify_service_key(key, resources.internal_keys)
    await resources.limiter.check_internal(key)


def _bearer(scope: Scope) -> str:
    """The credentials of a plain ``Bearer <token>`` header; anything else is FastAPI's."""
    value = _header(scope, b"authorization")
    if value is None:
        raise _DeclinedError
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        raise _DeclinedError
    return credentials


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value).decode("latin-1")
    return None


def _query(scope: Scope, known: frozenset[str]) -> dict[str, str]:
    """The known query parameters; a repeated one is FastAPI's to judge."""
    found: dict[str, str] = {}
    raw: bytes = scope["query_string"]
    if raw:
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if key in known:
                if key in found:
                    raise _DeclinedError
                found[key] = value
    return found


def _int(query: dict[str, str], name: str, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if _DIGITS.fullmatch(value) is None or not low <= int(value) <= high:
        raise _DeclinedError
    return int(value)


def _model(model: type[_Body], raw: bytes) -> _Body:
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError:
        raise _DeclinedError from None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
