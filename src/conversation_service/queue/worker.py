"""The RQ worker processes behind ``conversation-service worker``.

``JobWorker`` is RQ's in-process ``SimpleWorker`` that keeps one job runtime (event loop, pooled
engine, Redis clients) for its whole life. ``run_pool`` runs several worker processes, some of
them on ``high`` alone: with every process listening on high, default, low, a ``high`` job that
arrives while all of them run ``low`` jobs waits for one to finish; a reserved process is always
free for it. RQ's ``WorkerPool`` gives every process the same queues, so the pool here is a small
supervisor of its own: it forks each process, which runs a plain ``worker.work()``, and replaces
one that dies with another on the same queues.

Stopping: SIGINT or SIGTERM asks every process for a warm shutdown (the running job finishes).
RQ installs a worker's signal handlers late in ``work()``, after registering it and forking its
scheduler; until then ``run_worker`` hands a signal to RQ's own ``request_stop`` and, when that
stops the worker before its loop began, tears the worker down as the loop would. A process that
gets a signal before it has handlers of its own (one the pool just forked, or RQ's scheduler)
exits. CPython drops a signal that reaches a child still inside ``fork()``, so a stopping pool
signals again, every ``RESIGNAL_SECONDS``, each process still alive and not running a job (a
second signal to a busy worker would cut its job short).
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from prometheus_client import start_http_server
from redis import Redis
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.worker import BaseWorker, WorkerStatus

from conversation_service.config.settings import ConversationSettings
from conversation_service.metrics import JobMetrics
from conversation_service.queue import runtime
from conversation_service.services.outbox import QUEUES

log = logging.getLogger(__name__)
HIGH = QUEUES[0]
# While a pool stops, a process that is still alive after this long, not running a job, is
# signalled again (the first signal may have been lost in its fork).
RESIGNAL_SECONDS = 5.0
POLL_SECONDS = 0.5


# This process's place in its pool (0 for a lone worker): it serves its metrics on the
# configured port plus this, so the processes of a pool never compete for one port.
_slot = 0


class JobWorker(SimpleWorker):
    """A ``SimpleWorker`` whose jobs share one event loop and pool (see ``queue.runtime``)."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, inside this process's job runtime (closed when the loop ends)."""
        settings = ConversationSettings()
        with (
            runtime.installed(settings) as worker_runtime,
            _serving_metrics(worker_runtime.metrics, settings.worker_metrics_port),
        ):
            return bool(super().work(*args, **kwargs))


@contextlib.contextmanager
def _serving_metrics(metrics: JobMetrics, port: int | None) -> Iterator[None]:
    """Serve ``metrics`` on ``port + slot`` while the block runs (nothing when unset)."""
    if port is None:
        yield
        return
    try:
        server, thread = start_http_server(port + _slot, registry=metrics.registry)
    except OSError as exc:
        # Jobs matter more than their metrics: run without them, loudly.
        log.error("worker metrics not served", extra={"port": port + _slot, "error": str(exc)})
        yield
        return
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def listening_order(queues: Iterable[str]) -> list[str]:
    """Levels in priority order (high, default, low); an unknown name is a ``ValueError``."""
    wanted = set(queues)
    unknown = wanted - set(QUEUES)
    if unknown or not wanted:
        raise ValueError(f"queues must be among {', '.join(QUEUES)}; got {sorted(unknown)}")
    return [name for name in QUEUES if name in wanted]


def run_worker(worker: BaseWorker, *, burst: bool) -> None:
    """``worker.work()`` with its scheduler, stopped by SIGINT or SIGTERM from the start."""
    pid = os.getpid()

    def stop_early(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != pid:  # RQ's scheduler, forked before it installed its own
            raise SystemExit(0)
        worker.request_stop(signum, frame)  # type: ignore[no-untyped-call]

    signal.signal(signal.SIGINT, stop_early)
    signal.signal(signal.SIGTERM, stop_early)
    try:
        worker.work(with_scheduler=True, burst=burst)
    except StopRequested:
        # Stopped before RQ's loop began (RQ raises this from ``request_stop`` when idle).
        worker.teardown()  # type: ignore[no-untyped-call]


def _work(
    url: str, queues: list[str], name: str, worker_class: type[BaseWorker], burst: bool, slot: int
) -> None:
    global _slot
    _slot = slot
    # In the forked process: a Redis connection of its own, never the pool's.
    run_worker(worker_class(queues, name=name, connection=Redis.from_url(url)), burst=burst)


class _Pool:
    def __init__(self, url: str, worker_class: type[BaseWorker], *, burst: bool) -> None:
        self.url = url
        self.worker_class = worker_class
        self.burst = burst
        self.redis = Redis.from_url(url)
        self.pid = os.getpid()
        self.stopping = False
        self.signalled: dict[int, float] = {}

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a process just forked, before ``run_worker``
            raise SystemExit(0)
        self.stopping = True

    def run(self, plan: Sequence[list[str]]) -> None:
        # In place before the first fork: a signal while the pool spawns is never lost.
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        running: dict[int, tuple[BaseProcess, str]] = {}
        for slot, queues in enumerate(plan):
            if not self.stopping:
                running[slot] = self._spawn(slot, queues)
        while running:
            time.sleep(POLL_SECONDS)
            for slot, (process, _) in list(running.items()):
                if process.is_alive():
                    continue
                process.join()
                del running[slot]
                if not self.burst and not self.stopping:
                    running[slot] = self._spawn(slot, plan[slot])  # a reserved one stays reserved
            if self.stopping:
                self._signal(running.values())
        self.redis.close()

    def _spawn(self, slot: int, queues: list[str]) -> tuple[BaseProcess, str]:
        name = uuid.uuid4().hex
        process = multiprocessing.get_context("fork").Process(
            target=_work,
            args=(self.url, queues, name, self.worker_class, self.burst, slot),
            name=f"rq worker {name}",
        )
        process.start()
        return process, name

    def _signal(self, running: Iterable[tuple[BaseProcess, str]]) -> None:
        now = time.monotonic()
        for process, name in running:
            pid = process.pid
            if pid is None:
                continue
            signalled = self.signalled.get(pid)
            if signalled is None or (now - signalled >= RESIGNAL_SECONDS and not self._busy(name)):
                self.signalled[pid] = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)

    def _busy(self, name: str) -> bool:
        key = f"{Worker.redis_worker_namespace_prefix}{name}"
        worker = Worker.find_by_key(key, connection=self.redis)
        return worker is not None and worker.get_state() == WorkerStatus.BUSY


def run_pool(
    url: str,
    queues: Sequence[str],
    *,
    processes: int,
    reserve_high: int = 0,
    burst: bool = False,
    worker_class: type[BaseWorker] = JobWorker,
    high: str = HIGH,
) -> None:
    """Run ``processes`` workers, ``reserve_high`` of them on ``high`` only, until stopped.

    ``queues`` and ``high`` are RQ queue names (``queue.names``). A process that dies is
    replaced (not with ``burst``: then the pool ends with the last one).
    """
    if not 0 <= reserve_high < processes:
        raise ValueError("reserve_high must leave at least one process for every queue")
    if reserve_high and high not in queues:
        raise ValueError("processes reserved for high need the pool to serve high")
    plan = [[high]] * reserve_high + [list(queues)] * (processes - reserve_high)
    _Pool(url, worker_class, burst=burst).run(plan)
