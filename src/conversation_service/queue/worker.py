"""The RQ worker classes behind ``conversation-service worker``.

``JobWorker`` is RQ's in-process ``SimpleWorker`` that keeps one job runtime (event loop, pooled
engine, Redis clients) for its whole life. ``JobWorkerPool`` is RQ's ``WorkerPool`` that can hold
some of its processes back for ``high`` alone: with every process listening on high, default,
low, a ``high`` job that arrives while all of them run ``low`` jobs waits for one to finish;
a reserved process is always free for it.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.worker_pool import WorkerPool

from conversation_service.config.settings import ConversationSettings
from conversation_service.queue import runtime
from conversation_service.queue.jobs import QUEUES

HIGH = QUEUES[0]


class JobWorker(SimpleWorker):
    """A ``SimpleWorker`` whose jobs share one event loop and pool (see ``queue.runtime``)."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, inside this process's job runtime (closed when the loop ends)."""
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
