"""Application factory: ``create_app(settings)`` builds everything in its lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from conversation_service import __version__
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import assert_migrated, create_engine
from conversation_service.observability import Metrics, RequestContextMiddleware
from conversation_service.resources import Resources, cursor_key
from conversation_service.routes import conversations, health, internal, messages, sessions
from conversation_service.routes.errors import install_error_handlers
from conversation_service.routes.limits import BodyGuardMiddleware
from conversation_service.services.auth import TokenVerifier
from conversation_service.services.idempotency import InFlightGate
from conversation_service.utils.cursors import CursorCodec

DESCRIPTION = """\
Conversation history, context windows, sessions and live streaming for an AI-agent platform.

* `/api/v1` — public API for users (bearer JWT with `sub` and `tenant`).
* `/internal/v1` — for the Agent Orchestrator only (service key).

Every error is `application/problem+json` (RFC 9457) with a stable `type`.
"""


def create_app(settings: ConversationSettings | None = None) -> FastAPI:
    """Build the ASGI app; resources are created in the lifespan and disposed after it."""
    settings = settings or ConversationSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        redis = Redis.from_url(
            settings.effective_redis_url(), socket_connect_timeout=1.0, socket_timeout=2.0
        )
        try:
            await assert_migrated(engine)
            app.state.resources = Resources(
                settings=settings,
                engine=engine,
                redis=redis,
                verifier=TokenVerifier(settings),
                internal_keys=settings.effective_internal_keys(),
                cursors=CursorCodec(cursor_key(settings)),
                in_flight=InFlightGate(),
                metrics=metrics,
            )
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Conversation Service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(conversations.router)
    app.include_router(messages.router)
    app.include_router(sessions.router)
    app.include_router(internal.router)
    app.include_router(health.router)
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, access_log=settings.access_log)
    return app
