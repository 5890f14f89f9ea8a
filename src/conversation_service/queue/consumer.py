"""The job runner: how every RQ task claims its row, renews its lease and records the outcome.

A task module is a thin sync shell that calls ``run_sync`` with its async core; tests call the
cores (or ``run_job``) directly. In a ``conversation-service worker`` process the core runs on
the process's long-lived loop and pooled engine; anywhere else on a fresh loop with resources of
its own (see ``queue.runtime`` for why, and why that is safe).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from rq import get_current_job
from sqlalchemy import ColumnElement, RowMapping, or_, true, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.errors import (
    ConversationNotFoundError,
    MessageNotFoundError,
    NotFoundError,
)
from conversation_service.queue import runtime
from conversation_service.queue.producer import Dispatcher
from conversation_service.queue.runtime import JobResources, job_resources
from conversation_service.services import jobs as jobs_service
from conversation_service.services.job_context import (
    JobContext,
    SubjectGoneError,
)
from conversation_service.services.outbox import (
    JobKind,
    JobSpec,
    JobStatus,
    spec_from_row,
)
from conversation_service.utils.clock import utcnow
from conversation_service.utils.tasks import stop_tasks

log = logging.getLogger(__name__)


def _gone_reason(exc: Exception) -> str | None:
    """Why a job's subject is gone, if ``exc`` says so (a deletion that raced the job)."""
    if isinstance(exc, SubjectGoneError):
        return exc.reason
    if isinstance(exc, ConversationNotFoundError):
        return "conversation deleted"
    if isinstance(exc, MessageNotFoundError):
        return "message deleted"
    if isinstance(exc, NotFoundError):
        return exc.code
    return None


Core = Callable[[JobContext], Awaitable[dict[str, Any]]]


async def run_job(
    job_id: str,
    core: Core,
    settings: ConversationSettings | None = None,
    *,
    rq_job_id: str | None = None,
) -> dict[str, Any]:
    """Run one job on resources of its own (a NullPool engine, its own Redis clients)."""
    async with job_resources(settings or ConversationSettings()) as resources:
        try:
            return await run_job_with(resources, job_id, core, rq_job_id=rq_job_id)
        finally:
            if resources.telemetry is not None:
                # A work horse ends with os._exit: its spans must leave before.
                resources.telemetry.flush()


async def run_job_with(
    resources: JobResources, job_id: str, core: Core, *, rq_job_id: str | None = None
) -> dict[str, Any]:
    """Claim the row, run ``core`` under a renewed lease, record the outcome.

    ``rq_job_id`` is the RQ job running this: it may claim the row only if the row waits for
    that id (a stale or duplicate RQ job finds the row is not its own and does nothing).
    """
    settings, engine = resources.settings, resources.engine
    row = await _claim(engine, uuid.UUID(job_id), settings, rq_job_id)
    if row is None:
        log.info("job already done or running elsewhere; skipped", extra={"job_id": job_id})
        return {"skipped": True}
    telemetry, metrics = resources.telemetry, resources.metrics
    context = JobContext(
        job=row,
        settings=settings,
        engine=engine,
        redis=resources.redis,
        metrics=metrics,
        instrument_http=telemetry.instrument_http if telemetry is not None else None,
    )
    started = time.perf_counter()
    outcome = ["failed"]
    try:
        with telemetry.job_span(row) if telemetry is not None else contextlib.nullcontext():
            return await _run_claimed(resources, context, core, outcome)
    finally:
        if metrics is not None:
            metrics.job_ran(row["kind"], outcome[0], time.perf_counter() - started)


async def _run_claimed(
    resources: JobResources, context: JobContext, core: Core, outcome: list[str]
) -> dict[str, Any]:
    """Run a claimed job's core and record its end; ``outcome[0]`` says how it ended."""
    settings, engine, row = resources.settings, resources.engine, context.job
    # Stopped (and awaited) before the job's result is recorded, so a renewal in flight returns
    # its pooled connection first.
    heartbeat = asyncio.create_task(_renew_lease(engine, row["id"], settings))
    try:
        result = await core(context)
    except Exception as exc:
        await stop_tasks(heartbeat)
        reason = _gone_reason(exc)
        if reason is not None:
            # Not a failure: never retried, no task.failed, nothing in RQ's failed registry.
            await _record_skipped(engine, row, reason)
            outcome[0] = "skipped"
            return {"skipped": reason}
        if await _record_failure(resources, row, exc):
            error = f"{type(exc).__name__}: {exc}"[:500]
            await _notify(context, resources, "task.failed", {"status": "failed", "error": error})
        else:
            outcome[0] = "retried"
        raise
    await stop_tasks(heartbeat)
    await _record_success(engine, row["id"], result)
    outcome[0] = "finished"
    await _notify(context, resources, "task.completed", {"status": "finished", "result": result})
    return result


async def _claim(
    engine: AsyncEngine, job_id: uuid.UUID, settings: ConversationSettings, rq_job_id: str | None
) -> RowMapping | None:
    now = utcnow()
    ours: ColumnElement[bool] = true()
    if rq_job_id is not None:
        # A row nobody re-dispatched (rq_job_id NULL) waits for its first id, ``kind-hex``.
        first = rq_job_id.endswith(job_id.hex)
        ours = (jobs.c.rq_job_id == rq_job_id) | (jobs.c.rq_job_id.is_(None) & first)
    async with engine.begin() as conn:
        claimed = (
            (
                await conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == job_id,
                        ours,
                        or_(
                            jobs.c.status.in_((JobStatus.PENDING.value, JobStatus.QUEUED.value)),
                            (jobs.c.status == JobStatus.STARTED.value) & (jobs.c.lease_until < now),
                        ),
                    )
                    .values(
                        status=JobStatus.STARTED.value,
                        attempts=jobs.c.attempts + 1,
                        started_at=now,
                        lease_until=now + timedelta(seconds=settings.job_lease_seconds),
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                )
            )
            .mappings()
            .one_or_none()
        )
    return claimed  # noqa: RET504 - read inside the transaction, returned once it committed


async def _renew_lease(
    engine: AsyncEngine, job_id: uuid.UUID, settings: ConversationSettings
) -> None:
    while True:
        await asyncio.sleep(max(settings.job_lease_seconds / 3, 0.5))
        now = utcnow()
        with contextlib.suppress(Exception):
            async with engine.begin() as conn:
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == JobStatus.STARTED.value)
                    .values(lease_until=now + timedelta(seconds=settings.job_lease_seconds))
                )


async def _record_success(engine: AsyncEngine, job_id: uuid.UUID, result: dict[str, Any]) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                status=JobStatus.FINISHED.value,
                result=result,
                error=None,
                lease_until=None,
                finished_at=now,
                updated_at=now,
            )
        )


async def _record_skipped(engine: AsyncEngine, row: RowMapping, reason: str) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == row["id"])
            .values(
                status=JobStatus.SKIPPED.value,
                result={"skipped": reason},
                error=None,
                lease_until=None,
                finished_at=now,
                updated_at=now,
            )
        )
    log.info(
        "job skipped: its subject is gone",
        extra={"job_id": str(row["id"]), "kind": row["kind"], "reason": reason},
    )


async def _notify(
    context: JobContext, resources: JobResources, event_type: str, outcome: dict[str, Any]
) -> None:
    """Tell the requester how a requested task ended, then dispatch the job's follow-ups."""
    async with context.units().write() as uow:
        await jobs_service.notify_requester(uow, context.settings, context.job, event_type, outcome)
    if context.followups:
        await _dispatch_followups(context.engine, resources.dispatcher, context.followups)


def retry_delay(settings: ConversationSettings, kind: str, attempt: int) -> int:
    """Seconds before the retry that follows failed attempt ``attempt`` (1-based)."""
    intervals = (
        settings.callback_retry_intervals
        if kind == JobKind.DELIVER_CALLBACK.value
        else settings.job_retry_intervals
    )
    return intervals[min(attempt, len(intervals)) - 1] if intervals else 0


async def _record_failure(resources: JobResources, row: RowMapping, exc: Exception) -> bool:
    """Record a failed run and dispatch its retry; True when it was the last attempt.

    The row is the record of the retry: back to ``queued`` with the id of the next attempt's
    RQ job and the time it is due (``dispatched_at``). That job is enqueued at once, or
    scheduled on RQ for the due time; if Redis loses it or no RQ scheduler moves it, the
    outbox sweep dispatches it once the due time is past by its grace.
    """
    exhausted = row["attempts"] >= row["max_attempts"]
    now = utcnow()
    spec = spec_from_row(SimpleNamespace(**row))
    delay = retry_delay(resources.settings, row["kind"], row["attempts"])
    rq_id = spec.next_rq_job_id(row["attempts"], row["rq_job_id"])
    retry: dict[str, Any] = {
        "status": JobStatus.QUEUED.value,
        "rq_job_id": rq_id,
        "dispatched_at": now + timedelta(seconds=delay),
        "finished_at": None,
    }
    async with resources.engine.begin() as conn:
        recorded = await conn.execute(
            update(jobs)
            # Still this run's claim (the sweep may have handed the row on after a lost lease).
            .where(
                jobs.c.id == row["id"],
                jobs.c.status == JobStatus.STARTED.value,
                jobs.c.attempts == row["attempts"],
            )
            .values(
                error=f"{type(exc).__name__}: {exc}"[:2000],
                lease_until=None,
                updated_at=now,
                **({"status": JobStatus.FAILED.value, "finished_at": now} if exhausted else retry),
            )
        )
    log.warning(
        "job failed",
        extra={
            "job_id": str(row["id"]),
            "kind": row["kind"],
            "attempt": row["attempts"],
            "final": exhausted,
        },
    )
    if recorded.rowcount != 1:
        return False
    if not exhausted:
        try:
            resources.dispatcher.dispatch(spec, rq_id=rq_id, delay=delay)
        except Exception:
            log.warning("retry dispatch failed; the sweep will dispatch it", exc_info=True)
    return bool(exhausted)


async def _dispatch_followups(
    engine: AsyncEngine, dispatcher: Dispatcher, specs: list[JobSpec]
) -> None:
    """Enqueue follow-up jobs; left ``pending``, as on the request path (see OutboxRelay)."""
    try:
        for spec in specs:
            dispatcher.dispatch(spec)
    except Exception:
        log.warning("follow-up dispatch failed; the sweep will retry", exc_info=True)


def run_sync(job_id: str, core: Core) -> dict[str, Any]:
    """The sync shell RQ calls: the worker's runtime if this process has one, else a fresh loop."""
    rq_job = get_current_job()
    rq_job_id = rq_job.id if rq_job is not None else None
    worker_runtime = runtime.current()
    if worker_runtime is None:
        return asyncio.run(run_job(job_id, core, rq_job_id=rq_job_id))
    return worker_runtime.run(
        lambda resources: run_job_with(resources, job_id, core, rq_job_id=rq_job_id)
    )
