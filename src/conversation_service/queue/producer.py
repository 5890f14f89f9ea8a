"""Dispatch of outbox rows to RQ: right after commit, and by a periodic sweep.

The request path only writes ``jobs`` rows in its transaction and, after the commit, hands the
specs to the ``OutboxRelay``; the response never waits for Redis. The relay enqueues them (by
dotted path, so the API never imports worker code) and marks them queued in one batched UPDATE.
If Redis is down the rows simply stay ``pending``; the sweep, which one replica at a time runs
under a Redis lock, dispatches them once Redis is back, re-dispatches rows whose lease expired
(their worker died), retries that are overdue (no RQ scheduler moved them) and rows that Redis
lost. RQ's ``unique`` enqueue refuses a second job with the same id, and a worker claims the row
before running it, only with the RQ id the row waits for, so nothing runs twice.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQJobStatus
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT
from rq.utils import now as rq_now
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.queue.names import queue_name
from conversation_service.services.outbox import (
    QUEUES,
    TASK_PATHS,
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
        self.queues = {
            level: Queue(queue_name(settings.queue_prefix, level), connection=redis)
            for level in QUEUES
        }

    def dispatch(
        self, spec: JobSpec, attempt: int = 0, *, rq_id: str | None = None, delay: float = 0
    ) -> str:
        """Enqueue one spec (in ``delay`` seconds); a job with the same id counts as dispatched.

        A delayed job waits in RQ's scheduled registry for an RQ scheduler to move it: that is
        the fast path of a retry, and the sweep re-dispatches it if no scheduler does.
        """
        rq_id = rq_id or spec.rq_job_id(attempt)
        queue = self.queues[spec.queue]
        options = {"job_id": rq_id, "unique": True, **self._options(spec, attempt)}
        # Already there (dispatched before): counts as dispatched.
        with contextlib.suppress(DuplicateJobError):
            if delay > 0:
                queue.enqueue_in(
                    timedelta(seconds=delay), TASK_PATHS[spec.kind], str(spec.id), **options
                )
            else:
                queue.enqueue_call(func=TASK_PATHS[spec.kind], args=(str(spec.id),), **options)
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
        # No RQ ``Retry``: the job row is the record of retries (see ``consumer``), and each
        # attempt is an RQ job of its own, dispatched under its own id.
        return {
            "timeout": self.settings.job_timeout_seconds,
            "result_ttl": 24 * 3600,
            "failure_ttl": 7 * 24 * 3600,
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

    async def dispatch(self, specs: list[JobSpec], rq_ids: dict[str, str] | None = None) -> None:
        """Enqueue specs one by one with RQ's unique check (in a thread: RQ is blocking).

        The relay (``enqueue_fresh``) does not write rows back: a dispatched row stays
        ``pending`` until a worker claims it, and the sweep tells "dispatched" from "left
        behind" by asking RQ. That keeps an append at one database transaction. The sweep's
        re-dispatches come through here with the ids it recorded in their rows first.
        """
        ids = rq_ids or {}
        await asyncio.to_thread(
            lambda: [self.dispatcher.dispatch(spec, rq_id=ids.get(str(spec.id))) for spec in specs]
        )

    async def queue_backlog(self) -> tuple[dict[str, int], dict[str, float]]:
        """Per priority level: jobs waiting in RQ, and the age of the oldest (seconds).

        RQ appends to a queue's list and workers pop from its head, so the head is the oldest;
        its age is read from the job's ``enqueued_at``. Two round trips for all three queues.
        """
        queues = self.dispatcher.queues
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues.values():
                pipe.llen(queue.key)
                pipe.lindex(queue.key, 0)
            replies = await pipe.execute()
        depth = {level: int(replies[2 * i]) for i, level in enumerate(queues)}
        heads = {level: replies[2 * i + 1] for i, level in enumerate(queues)}
        waiting = {level: head for level, head in heads.items() if head is not None}
        ages = dict.fromkeys(queues, 0.0)
        if waiting:
            async with self.redis.pipeline(transaction=False) as pipe:
                for head in waiting.values():
                    pipe.hget(RQJob.key_for(_text(head)), "enqueued_at")
                stamps = await pipe.execute()
            now = utcnow()
            for level, stamp in zip(waiting, stamps, strict=True):
                if stamp:
                    enqueued = datetime.fromisoformat(_text(stamp).replace("Z", "+00:00"))
                    if enqueued.tzinfo is None:
                        enqueued = enqueued.replace(tzinfo=UTC)
                    ages[level] = max((now - enqueued).total_seconds(), 0.0)
        return depth, ages

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.outbox_sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.warning("outbox sweep failed", exc_info=True)

    async def sweep(self) -> int:
        """Re-dispatch pending, abandoned, overdue and lost jobs; returns how many.

        A row is taken once its grace is over: ``pending`` ones after their creation, ``queued``
        ones after the time their attempt was due (``dispatched_at``, set by the retry that
        queued them), ``started`` ones whose lease ran out (their worker died). One still
        waiting in an RQ queue is left to the workers. Any other (lost with Redis, stuck in a
        scheduled registry no scheduler serves, or taken by a worker that died before claiming
        it) gets a new deterministic RQ id, recorded in the row before it is enqueued: only the
        RQ job with the row's id may claim the row, so the old copy can never run it as well.
        """
        ttl_ms = int(max(self.settings.outbox_sweep_interval * 2, 1) * 1000)
        try:
            if not await self.redis.set(SWEEP_LOCK, "1", nx=True, px=ttl_ms):
                return 0  # another replica sweeps this round
        except RedisError:
            return 0  # nothing can be dispatched while Redis is down
        now = utcnow()
        grace = now - timedelta(seconds=self.settings.outbox_grace_seconds)
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
                            & (func.coalesce(jobs.c.dispatched_at, jobs.c.updated_at) < grace),
                        )
                    )
                    .order_by(jobs.c.created_at)
                    .limit(SWEEP_BATCH)
                )
            ).all()
        todo: list[JobSpec] = []
        rq_ids: dict[str, str] = {}
        for row in rows:
            spec = spec_from_row(row)
            current = row.rq_job_id or spec.rq_job_id()
            if row.status != JobStatus.STARTED.value and await asyncio.to_thread(
                self._waiting_in_rq, current, spec.queue
            ):
                continue
            exhausted = row.status == JobStatus.STARTED.value and row.attempts >= row.max_attempts
            rq_id = spec.next_rq_job_id(row.attempts, current)
            async with self.engine.begin() as conn:
                # Only if nobody changed the row meanwhile (a worker claimed it, a retry).
                changed = await conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == row.id,
                        jobs.c.status == row.status,
                        jobs.c.attempts == row.attempts,
                        jobs.c.rq_job_id.is_not_distinct_from(row.rq_job_id),
                    )
                    .values(
                        **(
                            # Its worker died on the last attempt: give up.
                            {"status": JobStatus.FAILED.value, "error": "worker lost"}
                            if exhausted
                            else {"status": JobStatus.QUEUED.value, "rq_job_id": rq_id}
                        ),
                        lease_until=None,
                        dispatched_at=now,
                        finished_at=now if exhausted else None,
                        updated_at=now,
                    )
                )
            if changed.rowcount == 1 and not exhausted:
                todo.append(spec)
                rq_ids[str(spec.id)] = rq_id
        if todo:
            log.info("outbox sweep re-dispatching", extra={"jobs": len(todo)})
            await self.dispatch(todo, rq_ids)
        return len(todo)

    def _waiting_in_rq(self, rq_id: str, level: str) -> bool:
        """Whether RQ holds this job in its queue, where a worker will take it (blocking).

        A job on another queue (an unprefixed one an earlier release used) counts as lost.
        """
        try:
            job = RQJob.fetch(rq_id, connection=self.dispatcher.redis)
        except NoSuchJobError:
            return False
        queue = self.dispatcher.queues[level].name
        return job.get_status(refresh=False) == RQJobStatus.QUEUED and job.origin == queue


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
