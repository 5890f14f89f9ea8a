"""Job kinds, their queues, and the outbox rows that record work to do.

Priority is real because workers listen to ``high``, ``default``, ``low`` in that order. A job's
queue starts from its kind and moves one step with the conversation's priority.
"""

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.db.tables import jobs_table as jobs
from conversation_service.telemetry import trace_carrier
from conversation_service.utils.clock import new_id, utcnow

QUEUES = ("high", "default", "low")


class JobKind(StrEnum):
    """What a job does; each maps to one task function."""

    PROCESS_MESSAGE = "process_message"
    ANALYZE_SENTIMENT = "analyze_sentiment"
    GENERATE_SUMMARY = "generate_summary"
    DELIVER_CALLBACK = "deliver_callback"
    RETENTION = "retention"


class JobStatus(StrEnum):
    """Lifecycle of a job row."""

    PENDING = "pending"
    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Its subject (conversation or message) was deleted before or while it ran: not a failure.
    SKIPPED = "skipped"


ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.STARTED.value)
TERMINAL_STATUSES = tuple(s.value for s in JobStatus if s.value not in ACTIVE_STATUSES)

TASK_PATHS: dict[JobKind, str] = {
    JobKind.PROCESS_MESSAGE: "conversation_service.queue.tasks.message_tasks.process_message",
    JobKind.ANALYZE_SENTIMENT: "conversation_service.queue.tasks.message_tasks.analyze_sentiment",
    JobKind.GENERATE_SUMMARY: "conversation_service.queue.tasks.summary_tasks.generate_summary",
    JobKind.DELIVER_CALLBACK: "conversation_service.queue.tasks.callback_tasks.deliver_callback",
    JobKind.RETENTION: "conversation_service.queue.tasks.lifecycle_tasks.retention",
}

_BASE_QUEUE: dict[JobKind, int] = {
    JobKind.PROCESS_MESSAGE: 0,
    JobKind.ANALYZE_SENTIMENT: 1,
    JobKind.GENERATE_SUMMARY: 2,
    JobKind.DELIVER_CALLBACK: 1,
    JobKind.RETENTION: 2,
}
_PRIORITY_SHIFT = {"high": -1, "normal": 0, "low": 1}


def queue_for(kind: JobKind, priority: str = "normal", *, urgent: bool = False) -> str:
    """The queue of a job: its kind's base, moved by the conversation's priority.

    ``urgent`` work (processing a user's message, telling the orchestrator a user wrote) stays
    on ``high`` whatever the conversation's priority: a person is waiting for the reply.
    """
    if urgent:
        return QUEUES[0]
    level = _BASE_QUEUE[kind] + _PRIORITY_SHIFT.get(priority, 0)
    return QUEUES[min(max(level, 0), len(QUEUES) - 1)]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job to record in the outbox (and dispatch after commit)."""

    kind: JobKind
    queue: str
    tenant_id: str
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None = None
    args: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    max_attempts: int = 3
    # Makes a duplicate impossible: a second job with the same key is never written.
    dedupe_key: str | None = None
    id: uuid.UUID = field(default_factory=new_id)

    def rq_job_id(self, attempt: int = 0, rescue: int = 0) -> str:
        """Deterministic RQ id (``[A-Za-z0-9_-]``) of the job that makes claim ``attempt + 1``.

        ``rescue`` counts the sweep's re-dispatches of that attempt, each under a new id: the
        row records the id it waits for, and only that RQ job may claim it, so a stuck or lost
        copy that turns up later cannot run it a second time.
        """
        rq_id = f"{self.kind.value}-{self.id.hex}"
        if attempt:
            rq_id += f"-r{attempt}"
        return f"{rq_id}-s{rescue}" if rescue else rq_id

    def next_rq_job_id(self, attempt: int, current: str | None) -> str:
        """The id of a new dispatch of ``attempt``, given the id the row waits for now."""
        found = _RQ_ID.fullmatch(current or "")
        if found is None or found["hex"] != self.id.hex or int(found["r"] or 0) != attempt:
            return self.rq_job_id(attempt)
        return self.rq_job_id(attempt, int(found["s"] or 0) + 1)


_RQ_ID = re.compile(r"[a-z_]+-(?P<hex>[0-9a-f]{32})(?:-r(?P<r>\d+))?(?:-s(?P<s>\d+))?")


# The columns ``row_values`` fills, in its order (statements that insert jobs from SQL).
JOB_COLUMNS: Final = (
    "id",
    "tenant_id",
    "conversation_id",
    "message_id",
    "kind",
    "queue",
    "args",
    "status",
    "attempts",
    "max_attempts",
    "rq_job_id",
    "dedupe_key",
    "callback_url",
    "created_at",
    "updated_at",
)


def row_values(spec: JobSpec, now: datetime) -> dict[str, Any]:
    """The ``jobs`` row of a spec, status pending (with the current trace when traces are on)."""
    carrier = trace_carrier()
    return {
        "id": spec.id,
        "tenant_id": spec.tenant_id,
        "conversation_id": spec.conversation_id,
        "message_id": spec.message_id,
        "kind": spec.kind.value,
        "queue": spec.queue,
        "args": {**spec.args, **carrier} if carrier else spec.args,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_attempts": spec.max_attempts,
        "rq_job_id": None,
        "dedupe_key": spec.dedupe_key,
        "callback_url": spec.callback_url,
        "created_at": now,
        "updated_at": now,
    }


async def record_jobs(conn: AsyncConnection, specs: list[JobSpec]) -> list[JobSpec]:
    """Write outbox rows in the caller's transaction; returns the specs actually written.

    A spec whose ``dedupe_key`` is already taken is skipped (ON CONFLICT DO NOTHING), so a
    duplicate job cannot exist and the caller's transaction is not disturbed.
    """
    if not specs:
        return []
    now = utcnow()
    plain = [spec for spec in specs if spec.dedupe_key is None]
    if plain:
        await conn.execute(insert(jobs), [row_values(spec, now) for spec in plain])
    written = list(plain)
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for spec in specs:
        if spec.dedupe_key is None:
            continue
        stmt = insert_fn(jobs).values(**row_values(spec, now)).on_conflict_do_nothing()
        if (await conn.execute(stmt)).rowcount == 1:
            written.append(spec)
    return written


def spec_from_row(row: Any) -> JobSpec:
    """Rebuild a spec from a ``jobs`` row (sweep and redelivery)."""
    return JobSpec(
        kind=JobKind(row.kind),
        queue=row.queue,
        tenant_id=row.tenant_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        args=row.args,
        callback_url=row.callback_url,
        max_attempts=row.max_attempts,
        dedupe_key=row.dedupe_key,
        id=row.id,
    )


async def backlog(conn: AsyncConnection) -> tuple[dict[str, int], dict[str, float]]:
    """Rows no worker has taken, by status, and the age of the oldest of each (seconds).

    ``pending``: recorded, waiting for a worker (the relay leaves dispatched rows pending), aged
    from creation; ``queued``: retries and re-dispatches, aged from the time they were due.
    """
    now = utcnow()
    due = func.coalesce(jobs.c.dispatched_at, jobs.c.updated_at)
    rows = (
        await conn.execute(
            select(
                jobs.c.status,
                func.count(),
                func.min(jobs.c.created_at),
                func.min(due),
            )
            .where(jobs.c.status.in_((JobStatus.PENDING.value, JobStatus.QUEUED.value)))
            .group_by(jobs.c.status)
        )
    ).all()
    counts = {JobStatus.PENDING.value: 0, JobStatus.QUEUED.value: 0}
    ages = {JobStatus.PENDING.value: 0.0, JobStatus.QUEUED.value: 0.0}
    for status, count, oldest_created, oldest_due in rows:
        counts[status] = int(count)
        since = oldest_created if status == JobStatus.PENDING.value else oldest_due
        if since is not None:
            if since.tzinfo is None:  # SQLite hands back naive UTC
                since = since.replace(tzinfo=now.tzinfo)
            ages[status] = max((now - since).total_seconds(), 0.0)
    return counts, ages
