"""Structured JSON logs (credentials redacted), Prometheus metrics, and the pure ASGI middleware
that feeds both."""

import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conversation_service.telemetry import log_fields

log = logging.getLogger("conversation_service.http")
_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
}


# Credentials a log line may carry (a request line with ``?token=`` or an ``Authorization`` header
# that a server logs at DEBUG, an error quoting a URL): replaced before any line is written.
_CREDENTIALS = re.compile(
    r"(?i)(?P<lead>\b(?:bearer|basic)\s+|[?&](?:token|access_token|api_key|key)=)[^\s&\"',;]+"
    r"|eyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*"
    r"|\bcs_[\w-]{20,}"
    r"|\bwhsec_[\w+/=]{16,}"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, JWTs, API keys and webhook secrets replaced."""
    return _CREDENTIALS.sub(lambda match: (match.group("lead") or "") + "[redacted]", text)


class RedactingFormatter(logging.Formatter):
    """The plain-text formatter, with credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields.

    With traces on, a line logged inside a span carries its ``trace_id`` and ``span_id``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED:
                entry[key] = value
        trace = log_fields()
        if trace is not None:
            entry.update(trace)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Send logs to stderr, as JSON lines unless asked otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JSONFormatter() if json_lines else RedactingFormatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Children(Generic[_Metric]):
    """A labelled metric's children by label values: ``labels()`` runs once per label set.

    ``labels()`` takes a lock and builds a key on every call (2-3 µs); on the per-request path
    a plain dictionary lookup is enough.
    """

    def __init__(self, metric: _Metric) -> None:
        self.metric: _Metric = metric
        self._children: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        """The child for these label values."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    """The service's Prometheus collectors, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests_by = Children(self.requests)
        self.latency_by = Children(self.latency)


class RequestContextMiddleware:
    """Request id (echoed in ``X-Request-Id``), one structured log line and metrics per request.

    Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and it sees the
    route template that the router leaves in the scope. It runs on every request, so its own
    cost is kept to a few microseconds: a generated id is a random per-process prefix and a
    counter (a ``uuid4`` reads the OS's random source each time), and the metrics are updated
    through their cached children (``Children``).

    The route left in the scope is the one its router declared: a router included with a prefix
    (``/v1``) leaves its routes' paths without it. ``prefixed`` names such routers' routes and
    their prefix, so every label is the full template (``/v1/conversations``).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        access_log: bool = False,
        prefixed: Iterable[tuple[str, Iterable[BaseRoute]]] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # By identity: starlette routes compare by value and are unhashable.
        self._prefixes = {id(route): prefix for prefix, routes in prefixed for route in routes}
        self._id_prefix = secrets.token_hex(8)
        self._next_id = itertools.count()

    def new_request_id(self) -> str:
        """32 hex characters, unique across processes (random prefix) and within one."""
        return f"{self._id_prefix}{next(self._next_id):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or self.new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None)
            template = self._prefixes.get(id(route), "") + path if path else "unmatched"
            method = scope["method"]
            self.metrics.requests_by(method, template, str(status)).inc()
            self.metrics.latency_by(method, template).observe(elapsed)
            if status >= 500 or self.access_log:
                log.log(
                    logging.ERROR if status >= 500 else logging.INFO,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            # Only echo ids that cannot break logs or headers.
            if 0 < len(candidate) <= 128 and candidate.isascii() and candidate.isprintable():
                return candidate
    return None
