"""Application factory: ``create_app(settings)`` builds everything in its lifespan."""

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from redis import Redis as SyncRedis

from conversation_service import __version__
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import assert_migrated, create_engine, read_engine
from conversation_service.db.replica import ReadReplica, ReplicaCollector
from conversation_service.metrics import ServiceMetrics
from conversation_service.observability import Metrics, RequestContextMiddleware
from conversation_service.queue.producer import Dispatcher, OutboxRelay
from conversation_service.resources import Resources, cursor_key
from conversation_service.routes import (
    api_keys,
    branches,
    conversations,
    feedback,
    health,
    imports,
    internal,
    internal_conversations,
    jobs,
    messages,
    openai_compat,
    search,
    sessions,
    users,
)
from conversation_service.routes import chat as chat_page
from conversation_service.routes import events as event_routes
from conversation_service.routes import rate_limits as limited
from conversation_service.routes import streaming as streaming_routes
from conversation_service.routes import ws as ws_routes
from conversation_service.routes.errors import install_error_handlers, problems
from conversation_service.routes.limits import BodyGuardMiddleware
from conversation_service.routes.openai_errors import OpenAIErrorMiddleware, openai_errors
from conversation_service.routes.read_after import ReadAfterMiddleware
from conversation_service.routes.webhooks import document_webhooks
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import TokenVerifier
from conversation_service.services.idempotency import InFlightGate
from conversation_service.services.rate_limits import RateLimiter, RateLimitMetrics
from conversation_service.services.retention import RetentionScheduler
from conversation_service.services.unit_of_work import Units
from conversation_service.telemetry import Telemetry
from conversation_service.utils.cursors import CursorCodec
from conversation_service.utils.memory_utils import preload_encoders
from conversation_service.utils.redis_client import async_redis
from conversation_service.websocket.runtime import Realtime

DESCRIPTION = """\
Conversation history, context windows, sessions and live streaming for an AI-agent platform.

* `/api/v1` — public API for users (bearer JWT with `sub` and `tenant`).
* `/internal/v1` — for the Agent Orchestrator only (service key).
* `/v1` — OpenAI-compatible Conversations API for the official `openai` SDK (API keys).

Every error is `application/problem+json` (RFC 9457) with a stable `type`, except under `/v1`,
which answers in OpenAI's error shape.
"""


def create_app(
    settings: ConversationSettings | None = None, *, environ: Mapping[str, str] | None = None
) -> FastAPI:
    """Build the ASGI app; resources are created in the lifespan and disposed after it.

    ``environ`` holds the ``OTEL_*`` variables that configure traces (default: the process's).
    """
    settings = settings or ConversationSettings()
    metrics = Metrics()
    limit_metrics = RateLimitMetrics(metrics.registry)
    operations = ServiceMetrics(metrics.registry)
    telemetry = Telemetry.from_environ(os.environ if environ is None else environ)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        replica = (
            ReadReplica(
                read_engine(create_engine(settings, url=settings.database_read_url)),
                check_seconds=settings.database_read_check_seconds,
            )
            if settings.database_read_url
            else None
        )
        redis = async_redis(
            settings.effective_redis_url(),
            cluster=settings.redis_cluster,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
        )
        # RQ needs one Redis (never a cluster): the queue's, which is the same server unless
        # CONVERSATION_QUEUE_REDIS_URL names another one.
        queue_url = settings.effective_queue_redis_url()
        queue_redis = (
            redis
            if queue_url == settings.effective_redis_url() and not settings.redis_cluster
            else async_redis(queue_url, socket_connect_timeout=1.0, socket_timeout=2.0)
        )
        # RQ is synchronous: its client is only used from the relay's worker thread.
        rq_redis = SyncRedis.from_url(queue_url, socket_connect_timeout=1.0, socket_timeout=2.0)
        relay = OutboxRelay(engine, queue_redis, Dispatcher(rq_redis, settings), settings)
        realtime = Realtime(settings, engine, redis, on_published=operations.event_published)
        limiter = RateLimiter(settings, redis, metrics=limit_metrics)
        retention = RetentionScheduler(engine, relay, settings)
        # Agent validation's client: short timeouts, never follows redirects.
        agent_http = httpx.AsyncClient(timeout=settings.agent_validation_timeout_seconds)
        agents = (
            AgentDirectory(
                agent_http,
                settings.orchestrator_url,
                required=settings.agent_validation_required,
                timeout=settings.agent_validation_timeout_seconds,
            )
            if settings.orchestrator_url
            else None
        )
        if telemetry is not None:
            telemetry.instrument_engine(engine)
            telemetry.instrument_redis(redis)
            telemetry.instrument_http(agent_http)
        try:
            await assert_migrated(engine)
            # Token tables load now, not on the first append (0.2-0.4 s).
            await asyncio.to_thread(preload_encoders)
            app.state.resources = Resources(
                settings=settings,
                engine=engine,
                units=Units(
                    engine, relay, realtime.events, reader=read_engine(engine), replica=replica
                ),
                redis=redis,
                verifier=TokenVerifier(settings),
                internal_keys=settings.effective_internal_keys(),
                cursors=CursorCodec(cursor_key(settings)),
                in_flight=InFlightGate(),
                metrics=metrics,
                events=realtime.events,
                streams=realtime.store,
                live=realtime.live,
                relay=relay,
                limiter=limiter,
                agents=agents,
                operations=operations,
            )
            relay.start()
            retention.start()
            if replica is not None:
                metrics.registry.register(ReplicaCollector(replica))
                replica.start()
            await realtime.start(app.state.resources.units)
            yield
        finally:
            await realtime.stop()
            if replica is not None:
                await replica.stop()
            await retention.stop()
            await relay.stop()
            await agent_http.aclose()
            rq_redis.close()
            await limiter.aclose()
            if queue_redis is not redis:
                await queue_redis.aclose()
            await redis.aclose()
            await engine.dispose()
            if telemetry is not None:
                telemetry.shutdown()

    app = FastAPI(
        title="Conversation Service",
        version=__version__,
        # FastAPI's own OpenTelemetry hooks would ask the global providers on every request;
        # traces, when on, come from the official instrumentation (conversation_service.telemetry).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_webhooks(app)
    # Rate limits (services.rate_limits): per user and tenant on the public API, per service key
    # on the internal one, counted by the credential dependencies (routes.deps) after they
    # authenticate; SSE and /v1 routers count through their own dependencies.
    too_many = problems(429)
    app.include_router(imports.router, responses=too_many)
    app.include_router(conversations.router, responses=too_many)
    app.include_router(messages.router, responses=too_many)
    app.include_router(branches.router, responses=too_many)
    app.include_router(sessions.router, responses=too_many)
    app.include_router(internal.router, responses=too_many)
    app.include_router(internal_conversations.router, responses=too_many)
    app.include_router(streaming_routes.router, responses=too_many)
    app.include_router(
        event_routes.router,
        dependencies=[Depends(limited.limit_stream_user)],
        responses=too_many,
    )
    app.include_router(ws_routes.router)
    app.include_router(health.router)
    app.include_router(jobs.public, responses=too_many)
    app.include_router(jobs.internal, responses=too_many)
    app.include_router(api_keys.router, responses=too_many)
    app.include_router(users.public, responses=too_many)
    app.include_router(users.internal, responses=too_many)
    app.include_router(search.public, responses=too_many)
    app.include_router(search.internal, responses=too_many)
    app.include_router(feedback.public, responses=too_many)
    app.include_router(feedback.internal, responses=too_many)
    app.include_router(
        openai_compat.router,
        prefix=settings.openai_prefix,
        dependencies=[Depends(limited.limit_api_key_user)],
        responses=openai_errors(429),
    )
    chat_page.install(app, settings)
    app.add_middleware(
        BodyGuardMiddleware,
        max_bytes=settings.max_body_bytes,
        extra_prefixes=(settings.openai_prefix + "/",),
        ndjson_paths=(imports.IMPORT_PATH,),
        ndjson_max_bytes=settings.import_max_bytes,
    )
    app.add_middleware(OpenAIErrorMiddleware, prefix=settings.openai_prefix)
    if settings.database_read_url:
        # Only writes answered with a read replica configured carry a position.
        app.add_middleware(ReadAfterMiddleware)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        access_log=settings.access_log,
        prefixed=[(settings.openai_prefix, openai_compat.router.routes)],
    )
    if telemetry is not None:
        # Outermost, so the server span covers every middleware and the request id's log line.
        telemetry.instrument_app(app)
    return app
