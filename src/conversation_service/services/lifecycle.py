"""Data lifecycle: archive after inactivity, purge after the retention period, per-user erasure.

Retention (both rules off unless configured): a conversation with no message for
``retention_archive_after_days`` (counted from its last message, or its creation) is archived:
it stays readable and takes no new messages, and the orchestrator gets the usual
``conversation.archived`` callback. One inactive for ``retention_purge_after_days`` is purged,
whatever its status, soft-deleted ones included, with everything hanging off it; job and
callback rows older than the purge period go too. The rules run in a ``retention`` job. Every API
replica's ``RetentionScheduler`` records one per ``retention_interval_seconds``; its dedupe key
names the interval, so only one job per interval can exist however many replicas there are,
and the outbox sweep dispatches it even if the replica that recorded it dies.

Erasure (``DELETE /api/v1/users/me/data``, or the internal per-user route): every conversation of
the user in the tenant is purged in the request's transaction, with its messages, sessions,
summaries, tracked context and its versions, idempotency records, job rows (queued and running
work is cancelled: a worker that picks it up finds no row and skips it) and callback deliveries
with their attempts; then the user's API keys. Nothing is kept, not even an audit row: the
caller's own audit log records who asked. After the commit, Redis is cleared of the
conversations' event-stream tails, the partial content of their streams, their sessions' hot
context, the user's rate-limit counters and the RQ jobs of the cancelled work. A Redis outage
at that moment leaves those to their TTLs (24 h at most); a WebSocket event published by a
request that committed just before the erase can likewise outlive it until its stream expires.

Purging is explicit, children first, rather than trusting ``ON DELETE CASCADE`` (SQLite only
cascades with ``foreign_keys=ON``), in chunks so no statement carries too many parameters.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import api_keys_table as api_keys
from conversation_service.db.tables import callback_attempts_table as attempts
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import idempotency_table as idempotency
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.db.tables import messages_table as messages
from conversation_service.db.tables import sessions_table as sessions
from conversation_service.db.tables import summaries_table as summaries
from conversation_service.db.tables import tracked_context_versions_table as context_versions
from conversation_service.db.tables import tracked_contexts_table as tracked_contexts
from conversation_service.models.conversation import ConversationStatus
from conversation_service.models.lifecycle import ErasureOut
from conversation_service.queue.jobs import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobKind,
    JobSpec,
    queue_for,
    record_jobs,
)
from conversation_service.queue.producer import OutboxRelay
from conversation_service.services import conversation_manager
from conversation_service.services.auth import Principal
from conversation_service.services.sessions import context_key
from conversation_service.utils.clock import utcnow
from conversation_service.utils.tasks import stop_tasks
from conversation_service.websocket.events import (
    OPEN_STREAMS_KEY,
    EventPublisher,
    EventType,
    events_key,
    partial_key,
)

if TYPE_CHECKING:
    from conversation_service.queue.consumer import JobContext

log = logging.getLogger(__name__)

# Jobs of system-wide work (retention) belong to no tenant.
SYSTEM_TENANT: Final = "_system"
ID_CHUNK: Final = 500
PURGE_BATCH: Final = 100
ARCHIVE_BATCH: Final = 500
# Bounds one retention run (the job timeout is minutes); the next interval continues.
MAX_BATCHES: Final = 100
REDIS_CHUNK: Final = 500


def _chunks(values: Sequence[Any], size: int = ID_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class RedisLeftovers:
    """What Redis may still hold about purged conversations, to clear after the commit."""

    conversation_ids: list[uuid.UUID] = field(default_factory=list)
    message_ids: list[uuid.UUID] = field(default_factory=list)
    session_ids: list[uuid.UUID] = field(default_factory=list)
    rq_job_ids: list[str] = field(default_factory=list)

    def keys(self) -> list[str]:
        """Every Redis key that may hold data of these conversations."""
        return [
            *(events_key(cid) for cid in self.conversation_ids),
            *(f"cs:summary-lock:{cid}" for cid in self.conversation_ids),
            *(partial_key(mid) for mid in self.message_ids),
            *(context_key(sid) for sid in self.session_ids),
        ]


@dataclass
class PurgeCounts:
    """Rows removed by ``purge_conversations``."""

    conversations: int = 0
    messages: int = 0
    sessions: int = 0
    summaries: int = 0
    tracked_context_versions: int = 0
    jobs_cancelled: int = 0
    callbacks_deleted: int = 0
    leftovers: RedisLeftovers = field(default_factory=RedisLeftovers)


async def _deleted(conn: AsyncConnection, stmt: Any) -> int:
    return int((await conn.execute(stmt)).rowcount or 0)


async def purge_conversations(
    conn: AsyncConnection, conversation_ids: Sequence[uuid.UUID]
) -> PurgeCounts:
    """Erase conversations and every row that hangs off them, in the caller's transaction."""
    counts = PurgeCounts()
    leftovers = counts.leftovers
    for chunk in _chunks(list(conversation_ids)):
        leftovers.conversation_ids.extend(chunk)
        # Only agent messages can have streamed, so only they can have partial content.
        leftovers.message_ids.extend(
            (
                await conn.execute(
                    select(messages.c.id).where(
                        messages.c.conversation_id.in_(chunk), messages.c.role != "user"
                    )
                )
            ).scalars()
        )
        leftovers.session_ids.extend(
            (
                await conn.execute(
                    select(sessions.c.id).where(sessions.c.conversation_id.in_(chunk))
                )
            ).scalars()
        )
        active = (
            await conn.execute(
                select(jobs.c.id, jobs.c.kind, jobs.c.rq_job_id).where(
                    jobs.c.conversation_id.in_(chunk), jobs.c.status.in_(ACTIVE_STATUSES)
                )
            )
        ).all()
        counts.jobs_cancelled += len(active)
        for job in active:
            # A row stays pending once dispatched under its first RQ id; re-dispatches record
            # theirs.
            leftovers.rq_job_ids.append(f"{job.kind}-{job.id.hex}")
            if job.rq_job_id:
                leftovers.rq_job_ids.append(job.rq_job_id)
        chunk_deliveries = select(deliveries.c.id).where(deliveries.c.conversation_id.in_(chunk))
        await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(chunk_deliveries)))
        counts.callbacks_deleted += await _deleted(
            conn, delete(deliveries).where(deliveries.c.conversation_id.in_(chunk))
        )
        await conn.execute(delete(jobs).where(jobs.c.conversation_id.in_(chunk)))
        await conn.execute(delete(idempotency).where(idempotency.c.conversation_id.in_(chunk)))
        counts.messages += await _deleted(
            conn, delete(messages).where(messages.c.conversation_id.in_(chunk))
        )
        counts.summaries += await _deleted(
            conn, delete(summaries).where(summaries.c.conversation_id.in_(chunk))
        )
        counts.sessions += await _deleted(
            conn, delete(sessions).where(sessions.c.conversation_id.in_(chunk))
        )
        counts.tracked_context_versions += await _deleted(
            conn, delete(context_versions).where(context_versions.c.conversation_id.in_(chunk))
        )
        await conn.execute(
            delete(tracked_contexts).where(tracked_contexts.c.conversation_id.in_(chunk))
        )
        counts.conversations += await _deleted(
            conn, delete(conversations).where(conversations.c.id.in_(chunk))
        )
    return counts


async def forget_in_redis(redis: Redis, leftovers: RedisLeftovers) -> int:
    """Remove what Redis holds about purged conversations; returns the keys removed."""
    removed = 0
    for chunk in _chunks(leftovers.keys(), REDIS_CHUNK):
        removed += int(await redis.unlink(*chunk))
    for chunk in _chunks([str(mid) for mid in leftovers.message_ids], REDIS_CHUNK):
        await redis.zrem(OPEN_STREAMS_KEY, *chunk)
    return removed


def drop_rq_jobs(redis: SyncRedis, rq_job_ids: Iterable[str]) -> int:
    """Delete cancelled jobs from RQ (blocking: call it in a thread); returns how many."""
    dropped = 0
    for rq_id in rq_job_ids:
        try:
            RQJob.fetch(rq_id, connection=redis).delete(remove_from_queue=True)
        except NoSuchJobError:
            continue
        dropped += 1
    return dropped


# -- per-user erasure -----------------------------------------------------------------------


@dataclass
class Erasure:
    """What an erase removed, and what to clear from Redis once it has committed."""

    report: ErasureOut
    leftovers: RedisLeftovers


async def erase_user(conn: AsyncConnection, principal: Principal) -> Erasure:
    """Erase everything stored about one user of one tenant, in the caller's transaction."""
    owned = (
        await conn.execute(
            select(conversations.c.id).where(
                conversations.c.tenant_id == principal.tenant_id,
                conversations.c.user_id == principal.user_id,
            )
        )
    ).scalars()
    counts = await purge_conversations(conn, list(owned))
    # Nothing should be left outside the conversations; these make sure of it.
    counts.sessions += await _deleted(
        conn,
        delete(sessions).where(
            sessions.c.tenant_id == principal.tenant_id, sessions.c.user_id == principal.user_id
        ),
    )
    await conn.execute(
        delete(idempotency).where(
            idempotency.c.tenant_id == principal.tenant_id,
            idempotency.c.user_id == principal.user_id,
        )
    )
    keys = await _deleted(
        conn,
        delete(api_keys).where(
            api_keys.c.tenant_id == principal.tenant_id, api_keys.c.user_id == principal.user_id
        ),
    )
    report = ErasureOut(
        conversations=counts.conversations,
        messages=counts.messages,
        sessions=counts.sessions,
        summaries=counts.summaries,
        tracked_context_versions=counts.tracked_context_versions,
        api_keys=keys,
        jobs_cancelled=counts.jobs_cancelled,
        callbacks_deleted=counts.callbacks_deleted,
    )
    log.info("user data erased", extra={"tenant_id": principal.tenant_id, **report.model_dump()})
    return Erasure(report=report, leftovers=counts.leftovers)


async def clear_after_erasure(redis: Redis, rq_redis: SyncRedis, erasure: Erasure) -> None:
    """After the commit: clear Redis of the erased conversations and their cancelled jobs."""
    try:
        await forget_in_redis(redis, erasure.leftovers)
        await asyncio.to_thread(drop_rq_jobs, rq_redis, erasure.leftovers.rq_job_ids)
    except (RedisError, OSError) as exc:
        log.warning("erased data left in Redis until it expires", extra={"error": str(exc)[:200]})


# -- retention ------------------------------------------------------------------------------


def _last_activity() -> ColumnElement[datetime]:
    return func.coalesce(conversations.c.last_message_at, conversations.c.created_at)


async def archive_inactive(
    engine: AsyncEngine, redis: Redis, settings: ConversationSettings, now: datetime
) -> int:
    """Archive active conversations with no message for the archive period; returns how many."""
    if settings.retention_archive_after_days is None:
        return 0
    cutoff = now - timedelta(days=settings.retention_archive_after_days)
    publisher = EventPublisher(redis)
    total = 0
    for _ in range(MAX_BATCHES):
        async with engine.begin() as conn:
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
            changed = []
            for row in archived:
                out = await conversation_manager.get_conversation_for_service(conn, row.id)
                principal = Principal(tenant_id=row.tenant_id, user_id=row.user_id)
                await conversation_manager.record_lifecycle(
                    conn, settings, principal, out, "conversation.archived"
                )
                changed.append(out)
        for out in changed:
            await publisher.publish_safely(
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
        old_jobs = await _deleted(
            conn, delete(jobs).where(jobs.c.status.in_(finished), jobs.c.created_at < cutoff)
        )
        old_deliveries = select(deliveries.c.id).where(
            deliveries.c.status != "pending", deliveries.c.created_at < cutoff
        )
        await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(old_deliveries)))
        old_callbacks = await _deleted(
            conn,
            delete(deliveries).where(
                deliveries.c.status != "pending", deliveries.c.created_at < cutoff
            ),
        )
    return {"purged": purged, "jobs": old_jobs, "callbacks": old_callbacks}


async def retention(ctx: "JobContext") -> dict[str, Any]:
    """The ``retention`` job: archive, then purge, by the configured periods."""
    now = utcnow()
    archived = await archive_inactive(ctx.engine, ctx.redis, ctx.settings, now)
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
        relay: OutboxRelay,
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
