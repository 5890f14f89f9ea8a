"""The unit of work: one transaction, and the side effects its use case decided.

A use case runs inside a ``UnitOfWork``. It writes through ``uow.conn``, records its outbox jobs
with ``uow.record`` (rows written in the same transaction) and its events with ``uow.publish``.
``Units.write`` commits, then hands the jobs to the relay, runs the after-commit hooks (Redis
state such as an opened stream or a session's hot copy) and publishes the events in the order the
use case stated them: state first, then the announcement. A rollback drops them all. So each use
case states its side effects once, and every transport that calls it (REST, internal REST,
WebSocket, ``/v1``, RQ jobs) gets the same ones.
"""

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conversation_service.db.replica import ReadReplica, commit_position
from conversation_service.services.outbox import JobSpec, record_jobs

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class JobSink(Protocol):
    """Where committed outbox jobs go (the outbox relay; its sweep catches any it misses)."""

    def submit(self, specs: Iterable[JobSpec]) -> None:
        """Enqueue ``specs`` soon; never raises."""


class EventSink(Protocol):
    """Where committed events go (``events.log.EventPublisher``)."""

    async def publish_safely(
        self, conversation_id: uuid.UUID | str, event_type: str, data: Any
    ) -> str | None:
        """Append the event to the conversation's log; log and swallow an outage."""


@dataclass(slots=True)
class UnitOfWork:
    """The connection a use case works on, and what must follow its commit."""

    conn: AsyncConnection
    jobs: list[JobSpec] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    events: list[tuple[uuid.UUID | str, str, Any]] = field(default_factory=list)
    # After a write commits, when a read replica is configured: a WAL position at or past the
    # commit, which a later read carries to be shown the write (``db.replica``).
    position: int | None = None

    async def record(self, specs: Sequence[JobSpec]) -> list[JobSpec]:
        """Write outbox rows for ``specs`` in this transaction; dispatched after the commit."""
        if not specs:
            return []
        written = await record_jobs(self.conn, list(specs))
        self.jobs.extend(written)
        return written

    def publish(self, conversation_id: uuid.UUID | str, event_type: str, data: Any) -> None:
        """Append an event to the conversation's log once the transaction has committed."""
        self.events.append((conversation_id, event_type, data))

    def after_commit(self, hook: Hook) -> None:
        """Run ``hook`` once the transaction has committed (Redis state, caches)."""
        self.hooks.append(hook)


@dataclass(frozen=True, slots=True)
class Units:
    """Opens units of work on one engine and hands on what each collected after its commit."""

    engine: AsyncEngine
    jobs: JobSink
    events: EventSink
    # Where read units connect (``db.engine.read_engine``); the engine itself when None.
    reader: AsyncEngine | None = None
    # CONVERSATION_DATABASE_READ_URL's streaming replica, for reads that ask for it.
    replica: ReadReplica | None = None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        async with self.engine.connect() as conn:
            async with conn.begin():
                uow = UnitOfWork(conn)
                yield uow
            if self.replica is not None:
                uow.position = await commit_position(conn)
        await self.hand_on(uow)

    @asynccontextmanager
    async def read(
        self, *, replica: bool = False, after: int | None = None
    ) -> AsyncIterator[UnitOfWork]:
        """Reads, on the reader (autocommit on PostgreSQL). What a read records is still handed on
        afterwards.

        ``replica=True`` (the API's GETs) reads on the read replica when one is configured and
        has replayed up to ``after`` (the position of the caller's last write), else on the
        primary. Reads that must see what was just committed elsewhere (the stream state of a
        reply, a subscription's check) keep the default.
        """
        conn = await self.replica.connect(after) if replica and self.replica else None
        if conn is None:
            conn = await (self.reader or self.engine).connect()
        uow = UnitOfWork(conn)
        try:
            yield uow
        except DBAPIError as exc:
            if self.replica and exc.connection_invalidated and conn.engine is self.replica.engine:
                self.replica.mark_down(exc)
            raise
        finally:
            await conn.close()
        await self.hand_on(uow)

    async def hand_on(self, uow: UnitOfWork) -> None:
        """Dispatch the jobs, run the hooks, publish the events; a failure hides nothing else."""
        if uow.jobs:
            self.jobs.submit(uow.jobs)
        for hook in uow.hooks:
            try:
                await hook()
            except Exception:
                log.exception("after-commit hook failed")
        for conversation_id, event_type, data in uow.events:
            await self.events.publish_safely(conversation_id, event_type, data)
