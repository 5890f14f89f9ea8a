"""Application factory: ``create_app(settings)`` builds everything in its lifespan."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from redis import Redis as SyncRedis

from conversation_service import __version__
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import assert_migrated, create_engine, read_engine
from conversation_service.observability import Metrics, RequestContextMiddleware
from conversation_service.queue.producer import Dispatcher, OutboxRelay
from conversation_service.resources import Resources, cursor_key
from conversation_service.routes import (
    api_keys,
    branches,
    conversations,
    health,
    internal,
    internal_conversations,
    jobs,
    messages,
    openai_compat,
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
from conversation_service.routes.webhooks import document_webhooks
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import TokenVerifier
from conversation_service.services.idempotency import InFlightGate
from conversation_service.services.rate_limits import RateLimiter, RateLimitMetrics
from conversation_service.services.retention import RetentionScheduler
from conversation_service.services.unit_of_work import Units
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


def create_app(settings: ConversationSettings | None = None) -> FastAPI:
    """Build the ASGI app; resources are created in the lifespan and disposed after it."""
    settings = settings or ConversationSettings()
    metrics = Metrics()
    limit_metrics = RateLimitMetrics(metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        redis = async_redis(
            settings.effective_redis_url(), socket_connect_timeout=1.0, socket_timeout=2.0
        )
        # RQ is synchronous: its client is only used from the relay's worker thread.
        rq_redis = SyncRedis.from_url(
            settings.effective_redis_url(), socket_connect_timeout=1.0, socket_timeout=2.0
        )
        relay = OutboxRelay(engine, redis, Dispatcher(rq_redis, settings), settings)
        realtime = Realtime(settings, engine, redis)
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
        try:
            await assert_migrated(engine)
            # Token tables load now, not on the first append (0.2-0.4 s).
            await asyncio.to_thread(preload_encoders)
            app.state.resources = Resources(
                settings=settings,
                engine=engine,
                units=Units(engine, relay, realtime.events, reader=read_engine(engine)),
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
                limiter=RateLimiter(settings, redis, metrics=limit_metrics),
                agents=agents,
            )
            relay.start()
            retention.start()
            await realtime.start(app.state.resources.units)
            yield
        finally:
            await realtime.stop()
            await retention.stop()
            await relay.stop()
            await agent_http.aclose()
            rq_redis.close()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Conversation Service",
        version=__version__,
        # Prometheus (/metrics) is the service's telemetry; FastAPI's OpenTelemetry hooks would
        # ask the global providers on every request.
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
    )
    app.add_middleware(OpenAIErrorMiddleware, prefix=settings.openai_prefix)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        access_log=settings.access_log,
        prefixed=[(settings.openai_prefix, openai_compat.router.routes)],
    )
    return app
