"""The RQ worker classes behind ``conversation-service worker``.

``JobWorker`` is RQ's in-process ``SimpleWorker`` that keeps one job runtime (event loop, pooled
engine, Redis clients) for its whole life. ``JobWorkerPool`` is RQ's ``WorkerPool`` that can hold
some of its processes back for ``high`` alone: with every process listening on high, default,
low, a ``high`` job that arrives while all of them run ``low`` jobs waits for one to finish;
a reserved process is always free for it.

Both close RQ's windows in which a stop signal was lost. A pool's process inherits the pool's
handler until RQ installs the worker's, late in ``work()`` (after registering the worker and
forking its scheduler): a SIGINT or SIGTERM in between ran the pool's handler in the child, which
swallowed it, and the worker ran on while the pool waited for it forever. RQ also installs the
pool's own handlers only after it spawned the first processes, and a signal that reaches the pool
while it spawns a process, before the process is in ``worker_dict``, never reached that process.
Worse, a signal that reaches a child while it is still inside ``fork()`` is dropped by CPython
(it clears pending signals after a fork), and a pool stopped just as it spawns sends exactly
that. Now the child stops on a signal before it is a worker, the pool's handlers are in place
before it spawns, and a stopping pool signals again, every ``RESIGNAL_SECONDS``, each process
still alive and not running a job (a second signal to a busy worker would cut its job short).
"""

import os
import signal
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from conversation_service.config.settings import ConversationSettings
from conversation_service.queue import runtime
from conversation_service.services.outbox import QUEUES

HIGH = QUEUES[0]
# While a pool stops, a process that is still alive after this long, not running a job, is
# signalled again (the first signal may have been lost in its fork).
RESIGNAL_SECONDS = 5.0


class JobWorker(SimpleWorker):
    """A ``SimpleWorker`` whose jobs share one event loop and pool (see ``queue.runtime``)."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, inside this process's job runtime (closed when the loop ends)."""
        pid = os.getpid()

        def stop_early(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != pid:  # RQ's scheduler, forked before it installed its own
                raise SystemExit(0)
            self._stop_requested = True  # seen by RQ's loop before its first dequeue

        # Until RQ installs the worker's handlers (after registering it and forking its
        # scheduler), a stop signal is remembered instead of lost.
        signal.signal(signal.SIGINT, stop_early)
        signal.signal(signal.SIGTERM, stop_early)
        with runtime.installed(ConversationSettings()):
            return bool(super().work(*args, **kwargs))


def listening_order(queues: Iterable[str]) -> list[str]:
    """``queues`` in priority order (high, default, low); an unknown name is a ``ValueError``."""
    wanted = set(queues)
    unknown = wanted - set(QUEUES)
    if unknown or not wanted:
        raise ValueError(f"queues must be among {', '.join(QUEUES)}; got {sorted(unknown)}")
    return [name for name in QUEUES if name in wanted]


class JobWorkerPool(WorkerPool):
    """A pool of ``num_workers`` processes of which ``reserve_high`` listen on ``high`` only."""

    def __init__(
        self,
        queues: Sequence[str],
        connection: Redis,
        num_workers: int,
        *,
        reserve_high: int = 0,
        **kwargs: Any,
    ) -> None:
        if not 0 <= reserve_high < num_workers:
            raise ValueError("reserve_high must leave at least one process for every queue")
        if reserve_high and HIGH not in queues:
            raise ValueError("processes reserved for high need the pool to serve high")
        super().__init__(queues, connection=connection, num_workers=num_workers, **kwargs)
        self.reserve_high = reserve_high
        self._reserved: set[str] = set()
        self._pid = os.getpid()
        self._signalled: dict[int, float] = {}

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Stop the pool; in a process it forked that is not a worker yet, stop that process."""
        if os.getpid() != self._pid:
            raise SystemExit(0)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def start_workers(self, *args: Any, **kwargs: Any) -> None:
        """RQ's first spawn, with the pool's stop handlers already in place.

        RQ installs them after spawning: a signal in between interrupted a fork (swallowed as
        "Exception ignored") and the pool never learnt it was asked to stop.
        """
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        super().start_workers(*args, **kwargs)

    def stop_worker(self, worker_data: Any, sig: int = signal.SIGINT) -> None:
        """Signal one process (and remember when)."""
        self._signalled[worker_data.pid] = time.monotonic()
        super().stop_worker(worker_data, sig)

    def all_workers_have_stopped(self) -> bool:
        """RQ's check, after signalling the processes that may not have had the signal."""
        now = time.monotonic()
        for worker_data in list(self.worker_dict.values()):
            signalled = self._signalled.get(worker_data.pid)
            if signalled is None or (
                now - signalled >= RESIGNAL_SECONDS and not self._busy(worker_data.name)
            ):
                self.stop_worker(worker_data)
        return bool(super().all_workers_have_stopped())

    def _busy(self, name: str) -> bool:
        key = f"{SimpleWorker.redis_worker_namespace_prefix}{name}"
        return bool(self.connection.hget(key, "state") == WorkerStatus.BUSY.value.encode())

    def get_worker_process(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The process for worker ``name``: reserved for ``high`` while the pool lacks one.

        Called for the first processes and for every respawn, so a reserved process that dies
        is replaced by another reserved one.
        """
        self._reserved &= self.worker_dict.keys()
        if len(self._reserved) >= self.reserve_high:
            return super().get_worker_process(name, *args, **kwargs)
        self._reserved.add(name)
        # WorkerPool passes ``_queue_names`` to every process it starts; swapped for this one.
        every_queue, self._queue_names = self._queue_names, [HIGH]
        try:
            return super().get_worker_process(name, *args, **kwargs)
        finally:
            self._queue_names = every_queue
