"""Purging conversations, and per-user erasure (``services.retention`` purges by age).

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
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import api_keys_table as api_keys
from conversation_service.db.tables import callback_attempts_table as attempts
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import feedback_table as feedback
from conversation_service.db.tables import idempotency_table as idempotency
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.db.tables import messages_table as messages
from conversation_service.db.tables import sessions_table as sessions
from conversation_service.db.tables import summaries_table as summaries
from conversation_service.db.tables import tracked_context_versions_table as context_versions
from conversation_service.db.tables import tracked_contexts_table as tracked_contexts
from conversation_service.events.log import (
    OPEN_STREAMS_KEY,
    events_key,
    partial_key,
    summary_lock_key,
)
from conversation_service.events.store import index_member
from conversation_service.models.lifecycle import ErasureOut
from conversation_service.services.auth import Principal
from conversation_service.services.outbox import (
    ACTIVE_STATUSES,
)
from conversation_service.services.rate_limits import RateLimiter
from conversation_service.services.sessions import context_key
from conversation_service.services.unit_of_work import UnitOfWork

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
    # (conversation id, message id) of every message that may have streamed.
    message_ids: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    session_ids: list[uuid.UUID] = field(default_factory=list)
    rq_job_ids: list[str] = field(default_factory=list)

    def keys(self) -> list[str]:
        """Every Redis key that may hold data of these conversations."""
        return [
            *(events_key(cid) for cid in self.conversation_ids),
            *(summary_lock_key(cid) for cid in self.conversation_ids),
            *(partial_key(cid, mid) for cid, mid in self.message_ids),
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


async def deleted_count(conn: AsyncConnection, stmt: Any) -> int:
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
            (row.conversation_id, row.id)
            for row in await conn.execute(
                select(messages.c.conversation_id, messages.c.id).where(
                    messages.c.conversation_id.in_(chunk), messages.c.role != "user"
                )
            )
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
        counts.callbacks_deleted += await deleted_count(
            conn, delete(deliveries).where(deliveries.c.conversation_id.in_(chunk))
        )
        await conn.execute(delete(jobs).where(jobs.c.conversation_id.in_(chunk)))
        await conn.execute(delete(idempotency).where(idempotency.c.conversation_id.in_(chunk)))
        await conn.execute(delete(feedback).where(feedback.c.conversation_id.in_(chunk)))
        counts.messages += await deleted_count(
            conn, delete(messages).where(messages.c.conversation_id.in_(chunk))
        )
        counts.summaries += await deleted_count(
            conn, delete(summaries).where(summaries.c.conversation_id.in_(chunk))
        )
        counts.sessions += await deleted_count(
            conn, delete(sessions).where(sessions.c.conversation_id.in_(chunk))
        )
        counts.tracked_context_versions += await deleted_count(
            conn, delete(context_versions).where(context_versions.c.conversation_id.in_(chunk))
        )
        await conn.execute(
            delete(tracked_contexts).where(tracked_contexts.c.conversation_id.in_(chunk))
        )
        counts.conversations += await deleted_count(
            conn, delete(conversations).where(conversations.c.id.in_(chunk))
        )
    return counts


async def forget_in_redis(redis: Redis, leftovers: RedisLeftovers) -> int:
    """Remove what Redis holds about purged conversations; returns the keys removed."""
    removed = 0
    for chunk in _chunks(leftovers.keys(), REDIS_CHUNK):
        removed += int(await redis.unlink(*chunk))
    members = [index_member(cid, mid) for cid, mid in leftovers.message_ids]
    for chunk in _chunks(members, REDIS_CHUNK):
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


async def erase_user(
    uow: UnitOfWork,
    principal: Principal,
    *,
    redis: Redis,
    rq_redis: SyncRedis,
    limiter: RateLimiter,
) -> ErasureOut:
    """Erase everything stored about one user of one tenant; after the commit, clear Redis of
    the erased conversations, their cancelled jobs and the user's rate-limit counters."""
    conn = uow.conn
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
    counts.sessions += await deleted_count(
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
    keys = await deleted_count(
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
    leftovers = counts.leftovers

    async def clear() -> None:
        try:
            await forget_in_redis(redis, leftovers)
            await asyncio.to_thread(drop_rq_jobs, rq_redis, leftovers.rq_job_ids)
        except (RedisError, OSError) as exc:
            log.warning(
                "erased data left in Redis until it expires", extra={"error": str(exc)[:200]}
            )
        await limiter.forget(principal)

    uow.after_commit(clear)
    return report
