"""Where a job's async core runs: a worker process's long-lived runtime, or a loop of its own.

A ``conversation-service worker`` process (RQ's ``SimpleWorker``: jobs run one after another in
the worker process itself) keeps one event loop, one pooled engine and one set of Redis clients
for its whole life and runs every job on them. A fresh loop, engine and connections per job cost
~30 ms a job (four PostgreSQL connects), more than the work itself, and made a ``high`` job wait
behind that overhead. Pooled connections are safe here because they never leave the loop that
opened them (the loop lives as long as the process) nor the process that opened them: the
runtime belongs to the pid that installed it, a forked child never sees it and falls back to
per-job resources, and the pool is closed before the process forks (RQ forks its scheduler from
the worker), so no child keeps copies of its sockets. Each job still leaves nothing behind: tasks
it started are cancelled when it ends (as ``asyncio.run`` does), and a job interrupted from
outside the loop (RQ's timeout alarm) discards the whole runtime, so the next job starts on a new
loop with new connections.

Anywhere else (``--fork`` work horses, tests, scripts) a job runs as before: ``asyncio.run`` with
a ``NullPool`` engine and Redis clients of its own, closed when it ends.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service import telemetry
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.metrics import JobMetrics
from conversation_service.queue.producer import Dispatcher
from conversation_service.telemetry import Telemetry
from conversation_service.utils.redis_client import async_redis

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a discarded runtime's cancelled tasks get to unwind before the loop is closed.
_UNWIND_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class JobResources:
    """What a job runs with: settings, an engine, async Redis (events, hot state: a cluster
    client in cluster mode) and a dispatcher (sync, on the queue's Redis)."""

    settings: ConversationSettings
    engine: AsyncEngine
    redis: Redis
    dispatcher: Dispatcher
    # The worker process's metrics (None outside a worker runtime) and traces (None when off).
    metrics: JobMetrics | None = None
    telemetry: Telemetry | None = None


def _open(
    settings: ConversationSettings, *, pooled: bool, metrics: JobMetrics | None = None
) -> JobResources:
    queue_url = settings.effective_queue_redis_url()
    resources = JobResources(
        settings=settings,
        engine=create_engine(settings, null_pool=not pooled),
        redis=async_redis(
            settings.effective_redis_url(), cluster=settings.redis_cluster, socket_connect_timeout=2
        ),
        dispatcher=Dispatcher(SyncRedis.from_url(queue_url, socket_connect_timeout=2), settings),
        metrics=metrics,
        telemetry=telemetry.for_process(),
    )
    if resources.telemetry is not None:
        resources.telemetry.instrument_engine(resources.engine)
        resources.telemetry.instrument_redis(resources.redis)
    return resources


async def _close(resources: JobResources) -> None:
    try:
        await resources.redis.aclose()
        resources.dispatcher.redis.close()
    finally:
        await resources.engine.dispose()


@contextlib.asynccontextmanager
async def job_resources(settings: ConversationSettings) -> AsyncIterator[JobResources]:
    """A NullPool engine and Redis clients for one job, closed when it ends."""
    resources = _open(settings, pooled=False)
    try:
        yield resources
    finally:
        await _close(resources)


class WorkerRuntime:
    """One event loop and pooled resources, reused by every job a worker process runs."""

    def __init__(self, settings: ConversationSettings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        # Outlives the loops and pools a runtime discards: counters never restart in a process.
        self.metrics = JobMetrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resources: JobResources | None = None

    def run(self, job: Callable[[JobResources], Coroutine[Any, Any, T]]) -> T:
        """Run ``job`` to completion on the runtime's loop; cancel whatever it left running."""
        loop, resources = self._ensure()
        before = asyncio.all_tasks(loop)
        task = loop.create_task(job(resources))
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                # Interrupted from outside the loop (RQ's timeout alarm, a signal): the loop
                # and the connections the job held are in an unknown state. Start afresh.
                log.warning("job interrupted; discarding the worker's event loop and pool")
                self.close()
            raise
        finally:
            if self._loop is loop:
                self._cancel(loop, asyncio.all_tasks(loop) - before)

    def close(self) -> None:
        """Cancel what runs, close the pool and Redis clients, close the loop."""
        loop, resources = self._loop, self._resources
        self._loop, self._resources = None, None
        if loop is None:
            return
        try:
            self._cancel(loop, asyncio.all_tasks(loop))
            if resources is not None:
                loop.run_until_complete(_close(resources))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            log.warning("worker runtime did not close cleanly", exc_info=True)
        finally:
            loop.close()

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, JobResources]:
        if self._loop is None or self._resources is None:
            # Not made the thread's current loop: jobs reach it as the running loop only.
            self._loop = asyncio.new_event_loop()
            self._resources = _open(self.settings, pooled=True, metrics=self.metrics)
        return self._loop, self._resources

    @staticmethod
    def _cancel(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> None:
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.wait(tasks, timeout=_UNWIND_SECONDS))


_installed: WorkerRuntime | None = None
_fork_hook_registered = False


def _before_fork() -> None:
    # RQ forks its scheduler from the worker between jobs. A child holding copies of the pooled
    # sockets would keep the PostgreSQL sessions (and their locks) alive after this process
    # died, so nothing pooled crosses a fork: the next job opens new connections.
    runtime = current()
    if runtime is not None and runtime._loop is not None and not runtime._loop.is_running():
        runtime.close()


def current() -> WorkerRuntime | None:
    """This process's runtime, if one is installed (never one inherited through ``fork``)."""
    runtime = _installed
    return runtime if runtime is not None and runtime.pid == os.getpid() else None


@contextlib.contextmanager
def installed(settings: ConversationSettings) -> Iterator[WorkerRuntime]:
    """Install a runtime for this process while the block runs (a worker's ``work`` loop)."""
    global _installed, _fork_hook_registered
    if current() is not None:
        raise RuntimeError("a worker runtime is already installed in this process")
    if not _fork_hook_registered:
        os.register_at_fork(before=_before_fork)
        _fork_hook_registered = True
    runtime = WorkerRuntime(settings)
    _installed = runtime
    try:
        yield runtime
    finally:
        _installed = None
        runtime.close()
