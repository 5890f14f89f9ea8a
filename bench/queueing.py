"""Background jobs (issue 4): real RQ, real ``conversation-service worker`` processes, real rows.

* ``queue-latency``: how long a ``high`` job waits to start while 10,000 ``low`` jobs wait, next
  to the same with an empty queue (target ≤ 2×). Each high job is a ``process_message`` of a
  seeded message; the backlog is ``analyze_sentiment`` of other seeded messages (queue ``low``, as
  for a low-priority conversation). Both are recorded with ``record_jobs`` and enqueued with the
  service's ``Dispatcher``, as the append path does. The target row runs the README's production
  configuration, ``conversation-service worker --pool 2 --reserve-high 1`` (one process serves
  ``high`` only, the other every queue), for the empty queue and the backlog alike; info rows
  show a single ``conversation-service worker`` (no reserved process), where a high job that
  lands during a low job waits for it to end. A high job's wait is its row's ``started_at``
  (stamped by the worker when it claims the row) minus the moment just before
  ``Dispatcher.dispatch``; RQ's own ``started_at`` gives the pickup alone. High jobs go one at a
  time: the next is enqueued after the previous one and its follow-up jobs (an
  ``analyze_sentiment`` on ``default``) finished, plus a random 5-50 ms, so it lands at a random
  point of a low job (or of the idle worker).
* ``queue-throughput``: jobs per second of ``analyze_sentiment`` on short messages with 1 worker
  and with ``--pool 2 --reserve-high 0`` (both processes on every queue: raw capacity), next to
  RQ's own no-op throughput (``bench.noop``: ``enqueue_many``, then a burst ``SimpleWorker`` or
  pool of 2) in the same run. Jobs are queued first, then a burst worker drains them; the rate is
  jobs / (last RQ ``ended_at`` − first RQ ``started_at``) on both sides, so worker start-up is not
  counted. Info only: the issue sets no target.

The queues live in a Redis database of their own (``BENCH_QUEUE_REDIS_URL``, default: the run's
Redis server, database 11; the no-op floor uses database 12, ``BENCH_RQ_RAW_REDIS_URL``), flushed
before and after. The API service is not involved (its outbox sweep is off, see ``bench.server``).
"""

import asyncio
import dataclasses
import os
import random
import signal
import statistics
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from redis import Redis as SyncRedis
from rq import Queue
from rq.job import Job as RQJob
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.api import BenchError
from bench.common import compare, value_row
from bench.harness import BenchContext
from bench.noop import noop
from bench.report import Result, Target
from bench.server import CLI, ServiceConfig
from bench.stats import Measurement, median_of, percentile
from conversation_service.config.settings import ConversationSettings, Environment
from conversation_service.db.engine import create_engine
from conversation_service.db.tables import jobs_table as jobs
from conversation_service.db.tables import messages_table as messages
from conversation_service.queue.producer import Dispatcher
from conversation_service.services.outbox import (
    ACTIVE_STATUSES,
    JobKind,
    JobSpec,
    queue_for,
    record_jobs,
)

QUEUE_DB = 11
RAW_DB = 12
NOOP_QUEUE = "bench-noop"
POLL = 0.005
START_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0
GAP = (0.005, 0.05)
WARMUP_JOBS = 5
BATCH = 1_000
THROUGHPUT_CONVERSATIONS = 8
REPO_ROOT = Path(__file__).resolve().parent.parent
# A short user message: the jobs are about as small as real ones get.
CONTENT = "Thanks, that was helpful. Could you also check the March invoice?"


def redis_url(base: str, variable: str, db: int) -> str:
    """``$variable`` if set, else ``base`` with database ``db``."""
    configured = os.environ.get(variable)
    if configured:
        return configured
    return urlunsplit(urlsplit(base)._replace(path=f"/{db}"))


def bench_settings(config: ServiceConfig, url: str) -> ConversationSettings:
    """The service's settings for this run, with the queues on ``url``."""
    return ConversationSettings(
        environment=Environment.TEST,
        database_url=config.database_url,
        redis_url=url,
        jwt_secret=SecretStr(config.jwt_secret),
        internal_api_keys=(SecretStr(config.internal_key),),
        log_level="WARNING",
    )


class Subprocess:
    """``async with Subprocess(argv, env, log)``: a worker process, stopped (SIGINT) on exit."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.log = log
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        with self.log.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=out
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def tail(self, lines: int = 30) -> str:
        """The last lines of the process's output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait(self) -> None:
        """Wait for a burst worker to exit by itself; raise if it fails or takes too long."""
        assert self._proc is not None
        try:
            code = await asyncio.wait_for(self._proc.wait(), RUN_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"{self.argv[1]} still running after {RUN_TIMEOUT:.0f} s") from None
        if code != 0:
            raise BenchError(f"{' '.join(self.argv[:3])} exited {code}:\n{self.tail()}")

    def check_alive(self) -> None:
        """Raise with the output if the process has exited."""
        assert self._proc is not None
        if self._proc.returncode is not None:
            raise BenchError(f"worker exited ({self._proc.returncode}):\n{self.tail()}")

    async def stop(self) -> None:
        """Warm shutdown (SIGINT: the current job finishes), killed after 20 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def worker_argv(pool: int, *, burst: bool, reserve_high: int = 0) -> list[str]:
    """``conversation-service worker`` with ``--pool``, ``--reserve-high`` and ``--burst``."""
    argv = [str(CLI), "worker", "--pool", str(pool), "--reserve-high", str(reserve_high)]
    return [*argv, "--burst"] if burst else argv


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A worker configuration ``queue-latency`` measures, with the label of its rows."""

    label: str
    pool: int
    reserve_high: int

    def argv(self) -> list[str]:
        """The long-running worker command."""
        return worker_argv(self.pool, burst=False, reserve_high=self.reserve_high)


# The README's production recommendation (the target row), then a single worker (info).
RECOMMENDED = WorkerConfig("--pool 2 --reserve-high 1", 2, 1)
SINGLE = WorkerConfig("1 worker", 1, 0)
LATENCY_CONFIGS = (RECOMMENDED, SINGLE)


@asynccontextmanager
async def job_setup(ctx: BenchContext) -> AsyncIterator[tuple[ConversationSettings, AsyncEngine]]:
    """Settings and an engine on the run's database, queues flushed before and after."""
    url = redis_url(ctx.service.config.redis_url, "BENCH_QUEUE_REDIS_URL", QUEUE_DB)
    settings = bench_settings(ctx.service.config, url)
    redis = SyncRedis.from_url(url)
    redis.flushdb()
    engine = create_engine(settings)
    try:
        yield settings, engine
    finally:
        redis.flushdb()
        redis.close()
        async with engine.begin() as conn:
            await conn.execute(delete(jobs).where(jobs.c.tenant_id == ctx.tenant))
        await engine.dispose()


async def seeded_messages(
    ctx: BenchContext, engine: AsyncEngine, count: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A new conversation with ``count`` seeded messages; its id and the message ids by seq."""
    conversation = await ctx.api.create_conversation()
    await ctx.raw.seed(conversation, ctx.tenant, count, CONTENT)
    async with engine.connect() as conn:
        ids = (
            await conn.scalars(
                select(messages.c.id)
                .where(messages.c.conversation_id == conversation)
                .order_by(messages.c.seq)
            )
        ).all()
    return conversation, list(ids)


def job_spec(kind: JobKind, queue: str, ctx: BenchContext, conversation: uuid.UUID,
             message: uuid.UUID) -> JobSpec:  # fmt: skip
    """A job of ``kind`` on one message, as the service records it."""
    return JobSpec(
        kind=kind,
        queue=queue,
        tenant_id=ctx.tenant,
        conversation_id=conversation,
        message_id=message,
        max_attempts=3,
    )


async def record(engine: AsyncEngine, specs: Sequence[JobSpec]) -> None:
    """The outbox rows of ``specs``, written with ``record_jobs`` in batches."""
    for start in range(0, len(specs), BATCH):
        async with engine.begin() as conn:
            await record_jobs(conn, list(specs[start : start + BATCH]))


def dispatch_all(dispatcher: Dispatcher, specs: Sequence[JobSpec]) -> None:
    """Enqueue every spec with the service's Dispatcher (blocking)."""
    for spec in specs:
        dispatcher.dispatch(spec)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """One high job: enqueue → row claimed (job started), and enqueue → RQ picked it up."""

    start: float
    pickup: float


async def _time_high(
    engine: AsyncEngine,
    dispatcher: Dispatcher,
    spec: JobSpec,
    worker: Subprocess,
) -> Wait:
    async with engine.begin() as conn:
        await record_jobs(conn, [spec])
    enqueued = datetime.now(UTC)
    dispatcher.dispatch(spec)  # blocking on purpose: nothing else runs meanwhile
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while True:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.status, jobs.c.started_at, jobs.c.finished_at).where(
                        jobs.c.id == spec.id
                    )
                )
            ).one()
        if row.status == "failed":
            raise BenchError(f"high job {spec.id} failed:\n{worker.tail()}")
        if row.finished_at is not None:
            break
        if asyncio.get_running_loop().time() > deadline:
            worker.check_alive()
            raise BenchError(
                f"high job {spec.id} not done after {START_TIMEOUT:.0f} s:\n{worker.tail()}"
            )
        await asyncio.sleep(POLL)
    rq_job = RQJob.fetch(spec.rq_job_id(), connection=dispatcher.redis)
    if row.started_at is None or rq_job.started_at is None:
        raise BenchError(f"high job {spec.id} finished without a start time")
    return Wait(
        start=(_aware(row.started_at) - enqueued).total_seconds(),
        pickup=(_aware(rq_job.started_at) - enqueued).total_seconds(),
    )


async def _settle(engine: AsyncEngine, conversation: uuid.UUID, worker: Subprocess) -> None:
    """Wait until no job of ``conversation`` is pending, queued or started."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while True:
        async with engine.connect() as conn:
            active = await conn.scalar(
                select(func.count()).where(
                    jobs.c.conversation_id == conversation, jobs.c.status.in_(ACTIVE_STATUSES)
                )
            )
        if not active:
            return
        if asyncio.get_running_loop().time() > deadline:
            worker.check_alive()
            raise BenchError(f"{active} jobs of the high conversation still active")
        await asyncio.sleep(POLL)


def _latency(samples: Sequence[float]) -> Measurement:
    ordered = sorted(samples)
    return Measurement(
        count=len(ordered),
        p50=percentile(ordered, 0.5),
        p99=percentile(ordered, 0.99),
        rate=0.0,
        client_cpu=0.0,
    )


async def _wait_for_workers(redis: SyncRedis, worker: Subprocess, count: int) -> None:
    from rq import Worker

    deadline = asyncio.get_running_loop().time() + 30
    while Worker.count(connection=redis) < count:
        worker.check_alive()
        if asyncio.get_running_loop().time() > deadline:
            raise BenchError(f"{count} worker(s) did not register in 30 s:\n{worker.tail()}")
        await asyncio.sleep(0.05)


async def _no_workers(redis: SyncRedis) -> None:
    from rq import Worker

    # A stopped worker unregisters itself; the next configuration counts only its own.
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        if not Worker.count(connection=redis):
            return
        await asyncio.sleep(0.05)


async def _job_durations(engine: AsyncEngine, tenant: str, kind: JobKind) -> list[float]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(jobs.c.started_at, jobs.c.finished_at).where(
                    jobs.c.tenant_id == tenant,
                    jobs.c.kind == kind.value,
                    jobs.c.finished_at.is_not(None),
                )
            )
        ).all()
    return [(_aware(r.finished_at) - _aware(r.started_at)).total_seconds() for r in rows]


async def queue_latency(ctx: BenchContext) -> list[Result]:
    """Start latency of high jobs behind a backlog of low jobs, against an empty queue."""
    counts = ctx.counts
    samples = counts.queue_samples
    highs_needed = len(LATENCY_CONFIGS) * 2 * (WARMUP_JOBS + samples * counts.repeats)
    rng = random.Random(4)
    async with job_setup(ctx) as (settings, engine):
        low_conversation, low_ids = await seeded_messages(ctx, engine, counts.queue_backlog)
        high_conversation, high_ids = await seeded_messages(ctx, engine, highs_needed)
        redis = SyncRedis.from_url(settings.effective_redis_url())
        dispatcher = Dispatcher(redis, settings)
        high_queue = queue_for(JobKind.PROCESS_MESSAGE, urgent=True)
        low_queue = queue_for(JobKind.ANALYZE_SENTIMENT, "low")
        low_key = dispatcher.queues[low_queue].key
        highs = iter(
            job_spec(JobKind.PROCESS_MESSAGE, high_queue, ctx, high_conversation, message)
            for message in high_ids
        )
        lows = [
            job_spec(JobKind.ANALYZE_SENTIMENT, low_queue, ctx, low_conversation, message)
            for message in low_ids
        ]
        env = dataclasses.replace(ctx.service.config, redis_url=settings.effective_redis_url())
        # waits[(config label, mode)] = one list of waits per round
        waits: defaultdict[tuple[str, str], list[list[Wait]]] = defaultdict(list)
        backlog_sizes: dict[str, tuple[int, int]] = {}
        with tempfile.TemporaryDirectory(prefix="conversation-bench-worker-") as tmp:
            log = Path(tmp) / "worker.log"

            async def measure(config: WorkerConfig, mode: str) -> None:
                """Start ``config``'s worker, warm it up, sample every round, stop it."""
                await _no_workers(redis)
                async with Subprocess(config.argv(), env.env(), log) as worker:
                    await _wait_for_workers(redis, worker, config.pool)
                    for _ in range(WARMUP_JOBS):
                        await _settle(engine, high_conversation, worker)
                        await _time_high(engine, dispatcher, next(highs), worker)
                    waiting_before = int(redis.llen(low_key))
                    for _ in range(counts.repeats):
                        round_waits: list[Wait] = []
                        for _ in range(samples):
                            # The previous high job's follow-ups (its analyze_sentiment, on
                            # "default") run first: only low jobs may be left when the next comes.
                            await _settle(engine, high_conversation, worker)
                            await asyncio.sleep(rng.uniform(*GAP))
                            round_waits.append(
                                await _time_high(engine, dispatcher, next(highs), worker)
                            )
                        waits[config.label, mode].append(round_waits)
                    await _settle(engine, high_conversation, worker)
                    if mode == "backlog":
                        backlog_sizes[config.label] = (waiting_before, int(redis.llen(low_key)))
                    await worker.stop()

            # The same worker configuration for both modes: a fresh worker for each.
            for config in LATENCY_CONFIGS:
                await measure(config, "empty")
            await record(engine, lows)
            await asyncio.to_thread(dispatch_all, dispatcher, lows)
            for config in LATENCY_CONFIGS:
                await measure(config, "backlog")
        low_durations = await _job_durations(engine, ctx.tenant, JobKind.ANALYZE_SENTIMENT)
        high_durations = await _job_durations(engine, ctx.tenant, JobKind.PROCESS_MESSAGE)
        redis.close()

    def rounds(config: WorkerConfig, mode: str, field: str) -> Measurement:
        return median_of(
            [_latency([getattr(w, field) for w in one]) for one in waits[config.label, mode]]
        )

    details_common: dict[str, Any] = {
        "low_job_ms_p50": round(statistics.median(low_durations) * 1e3, 2)
        if low_durations
        else None,
        "high_job_ms_p50": round(statistics.median(high_durations) * 1e3, 2),
    }
    label = "empty queue"
    backlog = f"{counts.queue_backlog:,} low waiting"
    results: list[Result] = []
    for config in LATENCY_CONFIGS:
        target = Target(high=2) if config is RECOMMENDED else None
        start_pair = (rounds(config, "backlog", "start"), rounds(config, "empty", "start"))
        pickup_pair = (rounds(config, "backlog", "pickup"), rounds(config, "empty", "pickup"))
        before, after = backlog_sizes[config.label]
        details = {
            **details_common,
            "worker": " ".join(config.argv()[1:]),
            "low_waiting_at_start": before,
            "low_waiting_at_end": after,
        }
        rows = [
            compare(ctx, f"high job start p50, {backlog}, {config.label}", "p50", start_pair,
                    label, target),
            compare(ctx, f"high job start p99, {backlog}, {config.label}", "p99", start_pair,
                    label, None),
            compare(ctx, f"high job RQ pickup p50, {backlog}, {config.label}", "p50",
                    pickup_pair, label, None),
        ]  # fmt: skip
        for row in rows:
            row.details.update(details)
        results.extend(rows)
    return results


async def _rq_rate(redis: SyncRedis, job_ids: Sequence[str]) -> float:
    fetched = await asyncio.to_thread(RQJob.fetch_many, list(job_ids), connection=redis)
    started: list[datetime] = []
    ended: list[datetime] = []
    for job in fetched:
        if job is None or job.started_at is None or job.ended_at is None:
            raise BenchError("a job has no RQ start or end time (not run?)")
        started.append(_aware(job.started_at))
        ended.append(_aware(job.ended_at))
    return len(job_ids) / (max(ended) - min(started)).total_seconds()


async def _noop_rate(url: str, count: int, workers: int, log: Path) -> float:
    redis = SyncRedis.from_url(url)
    try:
        redis.flushdb()
        queue = Queue(NOOP_QUEUE, connection=redis)
        enqueued: list[Any] = await asyncio.to_thread(
            queue.enqueue_many, [Queue.prepare_data(noop) for _ in range(count)]
        )
        argv = [sys.executable, "-m", "bench.noop", url, NOOP_QUEUE, "--workers", str(workers)]
        async with Subprocess(argv, dict(os.environ), log, cwd=REPO_ROOT) as worker:
            await worker.wait()
        return await _rq_rate(redis, [job.id for job in enqueued])
    finally:
        redis.flushdb()
        redis.close()


async def queue_throughput(ctx: BenchContext) -> list[Result]:
    """Jobs/s of ``analyze_sentiment`` with 1 and 2 workers, against RQ's no-op rate."""
    counts = ctx.counts
    pools = (1, 2)
    per_run = counts.queue_jobs
    raw_url = redis_url(ctx.service.config.redis_url, "BENCH_RQ_RAW_REDIS_URL", RAW_DB)
    async with job_setup(ctx) as (settings, engine):
        needed = per_run * len(pools) * counts.repeats
        per_conversation = -(-needed // THROUGHPUT_CONVERSATIONS)
        seeded = [
            await seeded_messages(ctx, engine, per_conversation)
            for _ in range(THROUGHPUT_CONVERSATIONS)
        ]
        # Interleave the conversations, so consecutive jobs touch different conversations.
        targets = iter(
            (conversation, ids[i]) for i in range(per_conversation) for conversation, ids in seeded
        )
        queue_url = settings.effective_redis_url()
        redis = SyncRedis.from_url(queue_url)
        dispatcher = Dispatcher(redis, settings)
        low_queue = queue_for(JobKind.ANALYZE_SENTIMENT, "low")
        env = dataclasses.replace(ctx.service.config, redis_url=queue_url).env()
        rates: defaultdict[str, list[float]] = defaultdict(list)
        with tempfile.TemporaryDirectory(prefix="conversation-bench-worker-") as tmp:
            log = Path(tmp) / "worker.log"
            for _ in range(counts.repeats):
                for pool in pools:
                    rates[f"raw {pool}"].append(
                        await _noop_rate(raw_url, counts.noop_jobs, pool, log)
                    )
                    redis.flushdb()
                    specs = [
                        job_spec(JobKind.ANALYZE_SENTIMENT, low_queue, ctx, conversation, message)
                        for conversation, message in (next(targets) for _ in range(per_run))
                    ]
                    await record(engine, specs)
                    await asyncio.to_thread(dispatch_all, dispatcher, specs)
                    # Every process on every queue: the raw capacity, as RQ's no-op pool has.
                    argv = worker_argv(pool, burst=True, reserve_high=0)
                    async with Subprocess(argv, env, log) as worker:
                        await worker.wait()
                    rates[f"service {pool}"].append(
                        await _rq_rate(redis, [spec.rq_job_id() for spec in specs])
                    )
                    await _check_finished(engine, specs)
        redis.close()

    m = {name: statistics.median(values) for name, values in rates.items()}
    results: list[Result] = []
    for pool in pools:
        workers = "1 worker" if pool == 1 else f"{pool} workers (--pool {pool} --reserve-high 0)"
        results.append(
            value_row(
                ctx,
                f"analyze_sentiment jobs/s, {workers}",
                "/s",
                (m[f"service {pool}"], m[f"raw {pool}"]),
                f"RQ no-op, {pool} SimpleWorker{'s' if pool > 1 else ''}",
                None,
                {
                    "service_rounds": [round(r, 1) for r in rates[f"service {pool}"]],
                    "raw_rounds": [round(r, 1) for r in rates[f"raw {pool}"]],
                    "jobs_per_run": per_run,
                    "noop_jobs_per_run": counts.noop_jobs,
                },
            )
        )
    results.append(
        value_row(
            ctx,
            "analyze_sentiment jobs/s, 2 vs 1 workers",
            "/s",
            (m["service 2"], m["service 1"]),
            "service, 1 worker",
            None,
            {},
        )
    )
    return results


async def _check_finished(engine: AsyncEngine, specs: Sequence[JobSpec]) -> None:
    ids = [spec.id for spec in specs]
    async with engine.connect() as conn:
        statuses = (await conn.scalars(select(jobs.c.status).where(jobs.c.id.in_(ids)))).all()
    bad = [status for status in statuses if status != "finished"]
    if bad or len(statuses) != len(ids):
        raise BenchError(f"{len(bad)} of {len(ids)} jobs did not finish: {sorted(set(bad))}")


SCENARIOS = {"queue-latency": queue_latency, "queue-throughput": queue_throughput}
