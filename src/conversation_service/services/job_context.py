"""What a job's use case gets from the runner (``queue.consumer``): its row and resources.

The RQ runner claims a job's row, builds a ``JobContext`` and calls the task's core with it. A core
runs its use cases in ``ctx.units()``: their outbox jobs follow the job (dispatched when it ends),
their events go to the conversation's log after each commit.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.events.log import EventPublisher
from conversation_service.metrics import JobMetrics
from conversation_service.services.outbox import JobSpec
from conversation_service.services.unit_of_work import Units


class RetryableJobError(Exception):
    """The job failed in a way worth retrying (timeouts, 5xx, a lock held elsewhere)."""


class SubjectGoneError(Exception):
    """What the job works on (its conversation or message) was deleted: nothing to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class JobContext:
    """A claimed job: its row, settings, engine and Redis, and the follow-ups it recorded."""

    job: RowMapping
    settings: ConversationSettings
    engine: AsyncEngine
    redis: Redis
    followups: list[JobSpec] = field(default_factory=list)
    # The worker's metrics (None outside a worker process) and, with traces on, what
    # instruments an HTTP client so its requests are spans that carry ``traceparent``.
    metrics: JobMetrics | None = None
    instrument_http: Callable[[httpx.AsyncClient], None] | None = None

    @property
    def args(self) -> dict[str, Any]:
        """The job's JSON arguments."""
        args: dict[str, Any] = self.job["args"]
        return args

    def submit(self, specs: Iterable[JobSpec]) -> None:
        """Take committed follow-up jobs; dispatched when the job ends (a ``JobSink``)."""
        self.followups.extend(specs)

    def units(self) -> Units:
        """Units of work for the job's use cases."""
        published = self.metrics.event_published if self.metrics is not None else None
        return Units(self.engine, self, EventPublisher(self.redis, on_published=published))
