"""Dispatch of outbox rows to RQ: right after commit, and by a periodic sweep.

The request path only writes ``jobs`` rows in its transaction and, after the commit, hands the
specs to the ``OutboxRelay``; the response never waits for Redis. The relay enqueues them (by
dotted path, so the API never imports worker code) and marks them queued in one batched UPDATE.
If Redis is down the rows simply stay ``pending``; the sweep, which one replica at a time runs
under a Redis lock, dispatches them once Redis is back, re-dispatches rows whose lease expired
(their worker died) and rows that Redis lost. RQ's ``unique`` enqueue refuses a second job with
the same id, and workers claim the row before running it, so nothing runs twice.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQJobStatus
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT
from rq.utils import now as rq_now
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.queue.jobs import (
    QUEUES,
    TASK_PATHS,
    JobKind,
    JobSpec,
    JobStatus,
    spec_from_row,
)
from conversation_service.utils.clock import utcnow
from conversation_service.utils.tasks import stop_tasks

log = logging.getLogger(__name__)
SWEEP_LOCK = "cs:outbox-sweep-lock"
SWEEP_BATCH = 500


class Dispatcher:
    """Enqueues job specs on RQ (blocking; call it from a thread in async code)."""

    def __init__(self, redis: SyncRedis, settings: ConversationSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.queues = {name: Queue(name, connection=redis) for name in QUEUES}

    def dispatch(self, spec: JobSpec, attempt: int = 0) -> str:
        """Enqueue one spec; an RQ job with the same id already there counts as dispatched."""
        rq_id = spec.rq_job_id(attempt)
        # Already there (dispatched before): counts as dispatched.
        with contextlib.suppress(DuplicateJobError):
            self.queues[spec.queue].enqueue_call(
                func=TASK_PATHS[spec.kind],
                args=(str(spec.id),),
                job_id=rq_id,
                unique=True,
                **self._options(spec, attempt),
            )
        return rq_id

    def unique_enqueue_call(self, spec: JobSpec) -> tuple[list[str], list[Any]]:
        """Keys and arguments of RQ's own unique-enqueue script for a fresh spec's job.

        The one place that writes RQ's job format from the event loop: RQ builds the job
        (``create_job``) and its hash fields (``to_dict``, what ``Job.save`` stores); the caller
        runs ``UNIQUE_ENQUEUE_SCRIPT`` with them on the event loop's client. RQ is pinned to the
        minor version ``tests/queue/test_outbox.py`` passed on: a real worker runs these jobs,
        and their fields equal those ``enqueue_call`` writes.
        """
        queue = self.queues[spec.queue]
        job = queue.create_job(
            TASK_PATHS[spec.kind],
            args=(str(spec.id),),
            job_id=spec.rq_job_id(),
            status=RQJobStatus.QUEUED,
            **self._options(spec, 0),
        )
        # What enqueueing sets on the job before saving it.
        job.origin = queue.name
        job.enqueued_at = rq_now()
        ttl = job.ttl if job.ttl is not None else -1
        fields = [part for field in job.to_dict().items() for part in field]
        return [job.key, queue.key], [job.id, "R", ttl, *fields]

    def _options(self, spec: JobSpec, attempt: int) -> dict[str, Any]:
        intervals = (
            self.settings.callback_retry_intervals
            if spec.kind is JobKind.DELIVER_CALLBACK
            else self.settings.job_retry_intervals
        )
        retries = spec.max_attempts - 1 - attempt
        return {
            "timeout": self.settings.job_timeout_seconds,
            "result_ttl": 24 * 3600,
            "failure_ttl": 7 * 24 * 3600,
            "retry": Retry(max=retries, interval=list(intervals)) if retries > 0 else None,
        }

    def exists(self, rq_job_id: str) -> bool:
        """Whether RQ still holds a job with this id."""
        return bool(RQJob.exists(rq_job_id, connection=self.redis))


class OutboxRelay:
    """Dispatches freshly committed outbox rows and sweeps up what was left behind."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        dispatcher: Dispatcher,
        settings: ConversationSettings,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.dispatcher = dispatcher
        self.settings = settings
        self._queue: asyncio.Queue[JobSpec] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._unique_enqueue = redis.register_script(UNIQUE_ENQUEUE_SCRIPT)

    def submit(self, specs: Iterable[JobSpec]) -> None:
        """Hand committed specs to the relay (never blocks, never raises)."""
        for spec in specs:
            self._queue.put_nowait(spec)

    def start(self) -> None:
        """Start the relay and sweep loops (in the app lifespan)."""
        self._tasks = [asyncio.create_task(self._relay_loop(), name="outbox-relay")]
        if self.settings.outbox_sweep_enabled:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="outbox-sweep"))

    async def stop(self) -> None:
        """Stop the loops; undispatched rows stay pending for the next sweep."""
        await stop_tasks(*self._tasks)

    async def _relay_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < SWEEP_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self.enqueue_fresh(batch)
            except Exception:
                log.warning("outbox relay could not dispatch; the sweep will", exc_info=True)

    async def enqueue_fresh(self, specs: Sequence[JobSpec]) -> None:
        """Enqueue just-committed specs (first attempt) in one round trip, on the event loop.

        RQ's own enqueue is blocking: run in a thread it cost about 0.6 ms of CPU per job and
        contended with the event loop for the GIL. Here RQ still builds each job and its own
        unique-enqueue script saves and pushes it (so a worker finds what ``enqueue_call``
        writes, and a job id already there is left alone); only the I/O moves to the asyncio
        client, pipelined for the whole batch.
        """
        calls = [self.dispatcher.unique_enqueue_call(spec) for spec in specs]
        queue_keys = {self.dispatcher.queues[spec.queue].key for spec in specs}
        script = self._unique_enqueue

        async def send() -> list[Any]:
            # EVALSHA straight into the pipeline: a Script called on a pipeline makes redis-py
            # ask SCRIPT EXISTS first, one more round trip on every batch.
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.sadd(Queue.redis_queues_keys, *queue_keys)
                return list(await pipe.execute(raise_on_error=False))

        results = await send()
        if any(isinstance(r, NoScriptError) for r in results):
            # Not loaded yet, or lost (Redis restarted, SCRIPT FLUSH): load it, send again.
            await self.redis.script_load(script.script)
            results = await send()
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def dispatch(
        self, specs: list[JobSpec], attempts: dict[str, int] | None = None, *, mark: bool = False
    ) -> None:
        """Enqueue specs one by one with RQ's unique check (in a thread: RQ is blocking).

        The relay (``dispatch_fresh``) does not write rows back: a dispatched row stays
        ``pending`` until a worker claims it, and the sweep tells "dispatched" from "left
        behind" by asking RQ. That keeps an append at one database transaction. The sweep's
        re-dispatches, through here, are ``mark``ed ``queued`` with their new RQ id.
        """
        attempts = attempts or {}
        dispatched = await asyncio.to_thread(
            lambda: [
                (spec, self.dispatcher.dispatch(spec, attempts.get(str(spec.id), 0)))
                for spec in specs
            ]
        )
        if not mark:
            return
        now = utcnow()
        async with self.engine.begin() as conn:
            for spec, rq_id in dispatched:
                await conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == spec.id,
                        jobs.c.status.in_((JobStatus.PENDING.value, JobStatus.QUEUED.value)),
                    )
                    .values(
                        status=JobStatus.QUEUED.value,
                        rq_job_id=rq_id,
                        dispatched_at=now,
                        updated_at=now,
                    )
                )

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.outbox_sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.warning("outbox sweep failed", exc_info=True)

    async def sweep(self) -> int:
        """Re-dispatch pending, abandoned and lost jobs; returns how many were dispatched."""
        ttl_ms = int(max(self.settings.outbox_sweep_interval * 2, 1) * 1000)
        try:
            if not await self.redis.set(SWEEP_LOCK, "1", nx=True, px=ttl_ms):
                return 0  # another replica sweeps this round
        except RedisError:
            return 0  # nothing can be dispatched while Redis is down
        now = utcnow()
        grace = now - timedelta(seconds=self.settings.outbox_grace_seconds)
        lost_after = now - timedelta(seconds=max(self.settings.outbox_grace_seconds * 4, 30))
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(jobs)
                    .where(
                        or_(
                            (jobs.c.status == JobStatus.PENDING.value)
                            & (jobs.c.created_at < grace),
                            (jobs.c.status == JobStatus.STARTED.value) & (jobs.c.lease_until < now),
                            (jobs.c.status == JobStatus.QUEUED.value)
                            & (jobs.c.dispatched_at < lost_after),
                        )
                    )
                    .order_by(jobs.c.created_at)
                    .limit(SWEEP_BATCH)
                )
            ).all()
        todo: list[JobSpec] = []
        attempts: dict[str, int] = {}
        for row in rows:
            spec = spec_from_row(row)
            if row.status == JobStatus.PENDING.value:
                # Dispatched right after its commit (still waiting in RQ)? Then it is not lost.
                if await asyncio.to_thread(self.dispatcher.exists, spec.rq_job_id()):
                    continue
            elif row.status == JobStatus.QUEUED.value:
                if await asyncio.to_thread(self.dispatcher.exists, row.rq_job_id or ""):
                    continue  # still waiting in RQ: not lost
                attempts[str(spec.id)] = row.attempts + 1
            elif row.status == JobStatus.STARTED.value:
                # Its worker died mid-run (the lease was not renewed): run it again, or give
                # up once it has used every attempt.
                exhausted = row.attempts >= row.max_attempts
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(jobs)
                        .where(jobs.c.id == row.id, jobs.c.status == JobStatus.STARTED.value)
                        .values(
                            status=JobStatus.FAILED.value if exhausted else JobStatus.QUEUED.value,
                            error="worker lost" if exhausted else row.error,
                            finished_at=now if exhausted else None,
                            updated_at=now,
                        )
                    )
                if exhausted:
                    continue
                attempts[str(spec.id)] = row.attempts
            todo.append(spec)
        if todo:
            log.info("outbox sweep re-dispatching", extra={"jobs": len(todo)})
            await self.dispatch(todo, attempts, mark=True)
        return len(todo)
