"""The operators' Prometheus metrics: queues, jobs, the outbox, callbacks, realtime, events.

Every label has a small fixed set of values (queue level, job kind, outcome, transport, event
type, dependency), never an id. ``ServiceMetrics`` lives in the API process's registry beside the
HTTP metrics (``observability.Metrics``); the backlog gauges (queue depth, oldest job, outbox,
readiness) are set from one read of Redis and the database when ``/metrics`` is scraped.
``JobMetrics`` lives in each worker process (``queue.worker`` serves it on
``CONVERSATION_WORKER_METRICS_PORT``). Both count the events their process publishes.
"""

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from conversation_service.observability import Children

_JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_CALLBACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class EventMetrics:
    """Events this process published, by type (the base of both registries' metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "conversation_events_published_total",
            "Events appended to conversation logs and published live, by type.",
            ["type"],
            registry=registry,
        )
        self._events_by = Children(self.events)

    def event_published(self, event_type: str, count: int = 1) -> None:
        """Count ``count`` published events of ``event_type``."""
        self._events_by(event_type).inc(count)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits: per queue level its depth and oldest job's age; the outbox's pending rows."""

    queue_depth: Mapping[str, int]
    queue_oldest_age: Mapping[str, float]
    outbox_rows: Mapping[str, int]
    outbox_oldest_age: Mapping[str, float]


class ServiceMetrics(EventMetrics):
    """The API process's metrics beyond HTTP: backlog, readiness, realtime connections, lag."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.queue_depth = Gauge(
            "conversation_queue_depth",
            "Jobs waiting in each RQ queue (by priority level).",
            ["queue"],
            registry=registry,
        )
        self.queue_oldest_age = Gauge(
            "conversation_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting in each RQ queue (0 when empty).",
            ["queue"],
            registry=registry,
        )
        self.outbox_rows = Gauge(
            "conversation_outbox_jobs",
            "Outbox job rows not yet taken by a worker: pending (new) and queued (retries).",
            ["status"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "conversation_outbox_oldest_age_seconds",
            "Age of the oldest pending row (since created) and the most overdue queued retry.",
            ["status"],
            registry=registry,
        )
        self.dependency_up = Gauge(
            "conversation_dependency_up",
            "1 when the dependency answered the last scrape's check (database, redis).",
            ["dependency"],
            registry=registry,
        )
        self.connections = Gauge(
            "conversation_realtime_connections",
            "Open realtime connections on this process, by transport (websocket, sse).",
            ["transport"],
            registry=registry,
        )
        self.fanout_lag = Histogram(
            "conversation_event_fanout_lag_seconds",
            "From an event's publication (its Redis stream id) to its write to a live socket.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self._connections_by = Children(self.connections)
        for transport in ("websocket", "sse"):
            self._connections_by(transport)

    def connection_opened(self, transport: str) -> None:
        """A WebSocket or SSE viewer connected."""
        self._connections_by(transport).inc()

    def connection_closed(self, transport: str) -> None:
        """A WebSocket or SSE viewer left."""
        self._connections_by(transport).dec()

    def written(self, published_ms: int) -> None:
        """Frames of an event published at ``published_ms`` (epoch ms) were written."""
        self.fanout_lag.observe(max(time.time() - published_ms / 1000, 0.0))

    def set_backlog(self, backlog: Backlog) -> None:
        """Set the backlog gauges from one read."""
        for name, depth in backlog.queue_depth.items():
            self.queue_depth.labels(name).set(depth)
        for name, age in backlog.queue_oldest_age.items():
            self.queue_oldest_age.labels(name).set(age)
        for status, rows in backlog.outbox_rows.items():
            self.outbox_rows.labels(status).set(rows)
        for status, age in backlog.outbox_oldest_age.items():
            self.outbox_oldest_age.labels(status).set(age)

    def set_dependencies(self, checks: Iterable[tuple[str, bool]]) -> None:
        """Record which dependencies answered."""
        for name, ok in checks:
            self.dependency_up.labels(name).set(1 if ok else 0)


class JobMetrics(EventMetrics):
    """A worker process's metrics: jobs by kind and outcome, callback deliveries."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry or CollectorRegistry())
        self.jobs = Counter(
            "conversation_jobs_total",
            "Job runs by kind and outcome (finished, retried, failed, skipped).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "conversation_job_duration_seconds",
            "Duration of job runs by kind and outcome.",
            ["kind", "outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.callback_attempts = Counter(
            "conversation_callback_attempts_total",
            "Callback delivery attempts by outcome (delivered, retrying, failed, refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.callback_latency = Histogram(
            "conversation_callback_latency_seconds",
            "Latency of callback delivery attempts by outcome.",
            ["outcome"],
            buckets=_CALLBACK_BUCKETS,
            registry=self.registry,
        )
        self.callback_deliveries = Histogram(
            "conversation_callback_delivery_attempts",
            "Attempts a callback delivery took, observed when it ends, by outcome.",
            ["outcome"],
            buckets=_ATTEMPT_BUCKETS,
            registry=self.registry,
        )

    def job_ran(self, kind: str, outcome: str, seconds: float) -> None:
        """One job run ended."""
        self.jobs.labels(kind, outcome).inc()
        self.job_duration.labels(kind, outcome).observe(seconds)

    def callback_attempted(
        self, outcome: str, latency_ms: float, attempt: int, *, final: bool
    ) -> None:
        """One delivery attempt; ``final`` when the delivery ended with it."""
        self.callback_attempts.labels(outcome).inc()
        self.callback_latency.labels(outcome).observe(latency_ms / 1000)
        if final:
            self.callback_deliveries.labels(outcome).observe(attempt)
