"""Retention: archive after inactivity, purge after the retention period.

Both rules are off unless configured. A conversation with no message for
``retention_archive_after_days`` (counted from its last message, or its creation) is archived:
it stays readable and takes no new messages, and the orchestrator gets the usual
``conversation.archived`` callback. One inactive for ``retention_purge_after_days`` is purged,
whatever its status, soft-deleted ones included, with everything hanging off it
(``services.erasure.purge_conversations``); job and callback rows older than the purge period go
too. The rules run in a ``retention`` job. Every API replica's ``RetentionScheduler`` records one
per ``retention_interval_seconds``; its dedupe key names the interval, so only one job per
interval can exist however many replicas there are, and the outbox sweep dispatches it even if
the replica that recorded it dies.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_attempts_table as attempts
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.events.log import (
    EventType,
)
from conversation_service.models.conversation import ConversationStatus
from conversation_service.services import conversation_manager
from conversation_service.services.auth import Principal
from conversation_service.services.conversations import record_lifecycle
from conversation_service.services.erasure import (
    MAX_BATCHES,
    deleted_count,
    forget_in_redis,
    purge_conversations,
)
from conversation_service.services.job_context import JobContext
from conversation_service.services.outbox import (
    TERMINAL_STATUSES,
    JobKind,
    JobSpec,
    queue_for,
    record_jobs,
)
from conversation_service.services.unit_of_work import JobSink, Units
from conversation_service.utils.clock import utcnow
from conversation_service.utils.tasks import stop_tasks

log = logging.getLogger(__name__)

ARCHIVE_BATCH: Final = 500
PURGE_BATCH: Final = 100
# Jobs of system-wide work (retention) belong to no tenant.
SYSTEM_TENANT: Final = "_system"


# -- retention ------------------------------------------------------------------------------


def _last_activity() -> ColumnElement[datetime]:
    return func.coalesce(conversations.c.last_message_at, conversations.c.created_at)


async def archive_inactive(units: Units, settings: ConversationSettings, now: datetime) -> int:
    """Archive active conversations with no message for the archive period; returns how many.

    Each is announced as an archive made through the API is: ``conversation.archived`` to the
    orchestrator, ``conversation.updated`` on its event log.
    """
    if settings.retention_archive_after_days is None:
        return 0
    cutoff = now - timedelta(days=settings.retention_archive_after_days)
    total = 0
    for _ in range(MAX_BATCHES):
        async with units.write() as uow:
            conn = uow.conn
            due = (
                select(conversations.c.id)
                .where(
                    conversations.c.status == ConversationStatus.ACTIVE.value,
                    conversations.c.deleted_at.is_(None),
                    _last_activity() < cutoff,
                )
                .limit(ARCHIVE_BATCH)
            )
            archived = (
                await conn.execute(
                    update(conversations)
                    .where(
                        conversations.c.id.in_(due),
                        conversations.c.status == ConversationStatus.ACTIVE.value,
                    )
                    .values(status=ConversationStatus.ARCHIVED.value, updated_at=now)
                    .returning(
                        conversations.c.id, conversations.c.tenant_id, conversations.c.user_id
                    )
                )
            ).all()
            for row in archived:
                out = await conversation_manager.get_conversation_for_service(conn, row.id)
                principal = Principal(tenant_id=row.tenant_id, user_id=row.user_id)
                await record_lifecycle(uow, settings, principal, out, "conversation.archived")
                uow.publish(
                    out.id,
                    EventType.CONVERSATION_UPDATED,
                    {"conversation": out.model_dump(mode="json")},
                )
        total += len(archived)
        if len(archived) < ARCHIVE_BATCH:
            break
    return total


async def purge_expired(
    engine: AsyncEngine, redis: Redis, settings: ConversationSettings, now: datetime
) -> dict[str, int]:
    """Purge conversations inactive for the retention period, then old job and callback rows."""
    if settings.retention_purge_after_days is None:
        return {"purged": 0, "jobs": 0, "callbacks": 0}
    cutoff = now - timedelta(days=settings.retention_purge_after_days)
    purged = 0
    for _ in range(MAX_BATCHES):
        async with engine.begin() as conn:
            due = list(
                (
                    await conn.execute(
                        select(conversations.c.id)
                        .where(_last_activity() < cutoff)
                        .limit(PURGE_BATCH)
                    )
                ).scalars()
            )
            counts = await purge_conversations(conn, due)
        try:
            await forget_in_redis(redis, counts.leftovers)
        except (RedisError, OSError) as exc:
            log.warning("purged data left in Redis until it expires", extra={"error": str(exc)})
        purged += counts.conversations
        if len(due) < PURGE_BATCH:
            break
    finished = TERMINAL_STATUSES
    async with engine.begin() as conn:
        old_jobs = await deleted_count(
            conn, delete(jobs).where(jobs.c.status.in_(finished), jobs.c.created_at < cutoff)
        )
        old_deliveries = select(deliveries.c.id).where(
            deliveries.c.status != "pending", deliveries.c.created_at < cutoff
        )
        await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(old_deliveries)))
        old_callbacks = await deleted_count(
            conn,
            delete(deliveries).where(
                deliveries.c.status != "pending", deliveries.c.created_at < cutoff
            ),
        )
    return {"purged": purged, "jobs": old_jobs, "callbacks": old_callbacks}


async def retention(ctx: JobContext) -> dict[str, Any]:
    """The ``retention`` job: archive, then purge, by the configured periods."""
    now = utcnow()
    archived = await archive_inactive(ctx.units(), ctx.settings, now)
    purged = await purge_expired(ctx.engine, ctx.redis, ctx.settings, now)
    result = {"archived": archived, **purged}
    log.info("retention run", extra=result)
    return result


def retention_spec(settings: ConversationSettings, bucket: int) -> JobSpec:
    """The retention job of one interval (its dedupe key makes it one per interval)."""
    return JobSpec(
        kind=JobKind.RETENTION,
        queue=queue_for(JobKind.RETENTION),
        tenant_id=SYSTEM_TENANT,
        conversation_id=None,
        args={"interval": bucket},
        max_attempts=settings.job_max_attempts,
        dedupe_key=f"retention:{bucket}",
    )


class RetentionScheduler:
    """Records one ``retention`` job per interval, from every replica, without duplicates."""

    def __init__(
        self,
        engine: AsyncEngine,
        relay: JobSink,
        settings: ConversationSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.relay = relay
        self.settings = settings
        self.clock = clock
        self.interval = settings.retention_interval_seconds
        self._last_bucket: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether any retention rule is configured."""
        return (
            self.settings.retention_archive_after_days is not None
            or self.settings.retention_purge_after_days is not None
        )

    def start(self) -> None:
        """Start scheduling (in the app lifespan); does nothing when retention is off."""
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="retention-scheduler")

    async def stop(self) -> None:
        """Stop scheduling."""
        if self._task is not None:
            await stop_tasks(self._task)
            self._task = None

    async def schedule_due(self) -> JobSpec | None:
        """Record this interval's job unless it exists; returns it when this call wrote it."""
        bucket = int(self.clock() // self.interval)
        if bucket == self._last_bucket:
            return None
        async with self.engine.begin() as conn:
            written = await record_jobs(conn, [retention_spec(self.settings, bucket)])
        self._last_bucket = bucket
        if not written:
            return None
        self.relay.submit(written)
        return written[0]

    async def _run(self) -> None:
        tick = min(self.interval, 60.0)
        while True:
            try:
                await self.schedule_due()
            except Exception:  # try again next tick: the database may be back
                log.warning("retention job not scheduled", exc_info=True)
            await asyncio.sleep(tick)
