"""Process-wide resources built by the app lifespan (never at import time)."""

import hashlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.events.log import EventPublisher
from conversation_service.events.store import StreamStore
from conversation_service.metrics import ServiceMetrics
from conversation_service.observability import Metrics
from conversation_service.queue.producer import OutboxRelay
from conversation_service.services.agents import AgentDirectory
from conversation_service.services.auth import TokenVerifier
from conversation_service.services.idempotency import InFlightGate
from conversation_service.services.rate_limits import RateLimiter
from conversation_service.services.unit_of_work import Units
from conversation_service.utils.cursors import CursorCodec
from conversation_service.websocket.connection_manager import ConnectionManager


@dataclass(slots=True)
class Resources:
    """What request handlers need: engine, Redis client, verifiers and codecs."""

    settings: ConversationSettings
    engine: AsyncEngine
    # Units of work on the engine, handing their jobs to ``relay`` and events to ``events``.
    units: Units
    redis: Redis
    verifier: TokenVerifier
    internal_keys: frozenset[str]
    cursors: CursorCodec
    in_flight: InFlightGate
    metrics: Metrics
    events: EventPublisher
    # Redis state of streaming messages (scripts registered once, not per request).
    streams: StreamStore
    live: ConnectionManager
    relay: OutboxRelay
    limiter: RateLimiter
    # Agent validation through the orchestrator; None when CONVERSATION_ORCHESTRATOR_URL is unset.
    agents: AgentDirectory | None = None
    # Backlog, realtime and event metrics (conversation_service.metrics), in ``metrics.registry``.
    operations: ServiceMetrics = field(default_factory=lambda: ServiceMetrics(CollectorRegistry()))


def cursor_key(settings: ConversationSettings) -> bytes:
    """Derive the cursor-signing key from the configured token key material."""
    material = settings.effective_jwt_secret() or ""
    if settings.jwt_public_key is not None:
        material += settings.jwt_public_key.get_secret_value()
    return hashlib.sha256(b"conversation-service/cursor\x00" + material.encode()).digest()
