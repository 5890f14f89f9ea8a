"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

Traces are on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp`` for the exporter's
default address) and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` says
otherwise. Off, nothing of OpenTelemetry is imported and the service pays one ``None`` check
where a span would start. On, it needs the ``telemetry`` extra (the SDK, the OTLP/HTTP exporter
and the official FastAPI, SQLAlchemy, redis and httpx instrumentations).

Each ``Telemetry`` has a tracer provider of its own, handed to every instrumentation, rather
than the process-global one (which can be set only once): an app and the worker runtime each
own theirs and flush it when they stop. The exporter reads the rest of its configuration
(headers, timeout, compression) and the provider its sampler (``OTEL_TRACES_SAMPLER``) and
resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) from the standard variables.

Context crosses the outbox as a W3C ``traceparent`` kept in the job row's arguments
(``TRACE_ARG``): the worker's job span continues the trace of the request that recorded it, and
the callback's HTTP request carries ``traceparent`` to the orchestrator.
"""

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from redis.asyncio import Redis
    from sqlalchemy import RowMapping
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
TRACE_ARG = "traceparent"
# Probes and scrapes would drown the traces that matter.
_EXCLUDED_URLS = "/health/live,/health/ready,/metrics"
_FALSE = ("", "false", "0", "no")


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` turns traces on (see the module's docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() not in _FALSE:
        return False
    exporters = {
        part.strip().lower()
        for part in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if part.strip()
    }
    if "none" in exporters:
        return False
    return (
        "otlp" in exporters
        or bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        or bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    )


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL ``environ`` names (None: the exporter's default)."""
    if specific := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return specific
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    return None


class Telemetry:
    """A tracer provider exporting over OTLP/HTTP, and the instrumentations that use it."""

    def __init__(self, provider: "TracerProvider", service: str) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("conversation_service")
        self._trace = trace
        self.service = service

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, service: str = "conversation-service"
    ) -> "Telemetry | None":
        """Telemetry as ``environ`` configures it, or None when traces are off."""
        if not enabled(environ):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_* variables turn traces on, but the telemetry extra is not installed: "
                "pip install 'conversation-service[telemetry]' (or unset them)"
            ) from exc

        # The standard variables name the service when they say so; else ``service``.
        named = bool(environ.get("OTEL_SERVICE_NAME")) or "service.name=" in environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        )
        resource = Resource.create({} if named else {SERVICE_NAME: service})
        provider = TracerProvider(resource=resource, shutdown_on_exit=True)
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint(environ)))
        )
        activate()
        return cls(provider, service)

    def instrument_app(self, app: "FastAPI") -> None:
        """Server spans for every HTTP request and WebSocket (FastAPI/ASGI instrumentation)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=_EXCLUDED_URLS,
            # One span per request, not one per ASGI message sent or received.
            exclude_spans=["receive", "send"],
        )

    def instrument_engine(self, engine: "AsyncEngine") -> None:
        """A span per SQL statement on ``engine`` (the SQLAlchemy instrumentation's tracer).

        ``EngineTracer`` on this engine only: ``SQLAlchemyInstrumentor().instrument()`` would
        wrap ``create_engine`` process-wide, once, with one provider.
        """
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.instrumentation.sqlalchemy.version import __version__
        from opentelemetry.metrics import NoOpMeterProvider

        usage = (
            NoOpMeterProvider()
            .get_meter("conversation_service")
            .create_up_down_counter("db.client.connections.usage")
        )
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
        EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def instrument_redis(self, client: "Redis") -> None:
        """A span per Redis command of ``client``."""
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_http(self, client: "httpx.AsyncClient") -> None:
        """A client span per request of ``client``, which carries ``traceparent``."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    @contextmanager
    def job_span(self, row: "RowMapping") -> Iterator["Span"]:
        """The span of one job run, continuing the trace its row carries."""
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        args = row.get("args") or {}
        parent = extract({TRACE_ARG: args[TRACE_ARG]}) if TRACE_ARG in args else None
        attributes: dict[str, str | int] = {
            "messaging.system": "rq",
            "messaging.operation.type": "process",
            "messaging.destination.name": str(row.get("queue")),
            "conversation.job.id": str(row.get("id")),
            "conversation.job.kind": str(row.get("kind")),
            "conversation.job.attempt": int(row.get("attempts") or 0),
        }
        with self.tracer.start_as_current_span(
            f"job {row.get('kind')}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span

    def flush(self) -> None:
        """Export what is buffered now (a work horse exits without running ``atexit``)."""
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self.provider.shutdown()
        deactivate()


# Set while some ``Telemetry`` is active in this process: the outbox and the log formatter ask
# it, so that with traces off they cost one global read.
_active = 0
_process: dict[int, "Telemetry | None"] = {}


def activate() -> None:
    """Let the outbox and JSON logs read the current trace (a ``Telemetry`` started)."""
    global _active
    _active += 1


def deactivate() -> None:
    """A ``Telemetry`` stopped."""
    global _active
    _active = max(_active - 1, 0)


def trace_carrier() -> dict[str, str] | None:
    """``{"traceparent": …}`` of the current span, or None (traces off or no span)."""
    if not _active:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return {TRACE_ARG: carrier[TRACE_ARG]} if TRACE_ARG in carrier else None


def log_fields() -> dict[str, str] | None:
    """``trace_id`` and ``span_id`` of the current span for a log line, or None."""
    if not _active:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def for_process(service: str = "conversation-service-worker") -> Telemetry | None:
    """This process's telemetry for job runs (made once per pid, from ``os.environ``)."""
    pid = os.getpid()
    if pid not in _process:
        _process[pid] = Telemetry.from_environ(os.environ, service=service)
    return _process[pid]
