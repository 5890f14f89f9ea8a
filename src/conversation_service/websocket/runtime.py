"""The realtime parts the app lifespan starts and stops: publisher, live hub, idle sweeper."""

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.events.log import EventPublisher
from conversation_service.events.store import StreamStore
from conversation_service.services.stream_expiry import run_idle_sweeper
from conversation_service.services.subscriptions import snapshot_source
from conversation_service.services.unit_of_work import Units
from conversation_service.utils.tasks import stop_tasks
from conversation_service.websocket.connection_manager import ConnectionManager


class Realtime:
    """Event publisher, this process's live hub and the idle-stream sweeper."""

    def __init__(
        self,
        settings: ConversationSettings,
        engine: AsyncEngine,
        redis: Redis,
        *,
        on_published: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.events = EventPublisher(redis, on_published=on_published)
        self.store = StreamStore(redis)
        self.live = ConnectionManager(
            redis_url=settings.effective_redis_url(),
            cluster=settings.redis_cluster,
            redis=redis,
            snapshot=snapshot_source(engine, self.store),
        )
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, units: Units) -> None:
        """Connect the live hub and start sweeping idle streams (in ``units``)."""
        await self.live.start()
        self._sweeper = asyncio.create_task(
            run_idle_sweeper(units, self.store, idle_seconds=self.settings.stream_idle_timeout),
            name="idle-stream-sweeper",
        )

    async def stop(self) -> None:
        """Close every live client (1012) and stop the background tasks."""
        if self._sweeper is not None:
            await stop_tasks(self._sweeper)
        await self.live.stop()
