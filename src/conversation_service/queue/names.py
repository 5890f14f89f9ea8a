"""RQ queue names: the service's priority levels under ``CONVERSATION_QUEUE_PREFIX``.

Job rows keep the level (``high``, ``default``, ``low``); only RQ sees the prefixed name
(``conversation-high``), so the service can share a Redis with other RQ applications. Releases
before the prefix used the bare level names: ``drain_legacy_queues`` moves this service's jobs
still waiting there to the prefixed queues (a worker runs it once when it starts) and leaves
any other application's jobs where they are.
"""

import logging

from redis import Redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from conversation_service.services.outbox import QUEUES, TASK_PATHS

log = logging.getLogger(__name__)
_OURS = frozenset(TASK_PATHS.values())


def queue_name(prefix: str, level: str) -> str:
    """The RQ queue of a priority level (the bare level when the prefix is empty)."""
    return f"{prefix}-{level}" if prefix else level


def queue_names(prefix: str, levels: list[str] | tuple[str, ...] = QUEUES) -> list[str]:
    """The RQ queues of ``levels``, in their order."""
    return [queue_name(prefix, level) for level in levels]


def drain_legacy_queues(redis: Redis, prefix: str) -> int:
    """Move this service's jobs from the unprefixed queues to the prefixed ones; how many.

    Waiting jobs keep their place in line (they are appended in their order); scheduled retries
    keep their due time. A job whose function is not one of the service's tasks stays put.
    """
    moved = 0
    for level in QUEUES:
        if queue_name(prefix, level) == level:
            continue
        old = Queue(level, connection=redis)
        new = Queue(queue_name(prefix, level), connection=redis)
        for job in old.get_jobs():
            if job.func_name in _OURS:
                old.remove(job)
                new.enqueue_job(job)
                moved += 1
        scheduled = ScheduledJobRegistry(queue=old)  # type: ignore[no-untyped-call]
        for job_id in scheduled.get_job_ids():
            waiting = old.fetch_job(job_id)
            if waiting is None or waiting.func_name not in _OURS:
                continue
            due = scheduled.get_scheduled_time(job_id)
            scheduled.remove(waiting)
            waiting.origin = new.name
            new.schedule_job(waiting, due)
            moved += 1
    if moved:
        log.info("moved jobs from the unprefixed queues", extra={"jobs": moved, "prefix": prefix})
    return moved
