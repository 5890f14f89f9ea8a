"""The read replica: where reads may go, and how far it has replayed the primary's WAL.

Read-your-writes rests on WAL positions (LSNs). After a write commits, the unit of work asks the
primary for ``pg_current_wal_insert_lsn()``, a position at or past the transaction's commit
record, and the API hands it to the client (``Conversation-Read-After``). A read that carries a
position may use the replica only once ``pg_last_wal_replay_lsn()`` there has reached it; else it
runs on the primary. Positions only grow, so a replay position seen once is a lower bound from
then on: each process polls it in the background (``check``), and a read whose position is at or
below the last one seen costs no round trip beyond its own statements. Only a read newer than
that asks the replica first, on the connection it then reads through.

A replica that does not answer is ``degraded``: reads go to the primary until a check succeeds.
"""

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

log = logging.getLogger(__name__)

# The header (and cookie, lower-cased with underscores) that carries a position to the client.
READ_AFTER_HEADER = "Conversation-Read-After"
_POSITION = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
# On a standby, how far it has replayed; on a primary (a read URL naming the primary itself),
# how far it has written, which every committed transaction is behind.
_REPLAYED = text(
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text"
)
_COMMITTED = text("SELECT pg_current_wal_insert_lsn()::text")


def _replace_closed(_dbapi_connection: Any, _record: Any, proxy: PoolProxiedConnection) -> None:
    is_closed = getattr(proxy.driver_connection, "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the replica closed this connection")


def parse_position(value: str) -> int:
    """An LSN as PostgreSQL prints it (``16/B374D848``) as a number; ValueError if malformed."""
    match = _POSITION.match(value.strip())
    if match is None:
        raise ValueError(f"not a WAL position: {value!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_position(position: int) -> str:
    """A number from ``parse_position`` printed back as PostgreSQL prints an LSN."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


async def commit_position(conn: AsyncConnection) -> int:
    """A WAL position at or past everything ``conn`` has committed (one round trip, no BEGIN)."""
    await conn.execution_options(isolation_level="AUTOCOMMIT")
    return parse_position((await conn.execute(_COMMITTED)).scalar_one())


@dataclass(eq=False)
class ReadReplica:
    """A streaming replica's engine and what this process last learnt of its replay position."""

    engine: AsyncEngine
    check_seconds: float = 0.5
    replayed: int = 0
    healthy: bool = True
    problem: str = ""
    # Counted for /metrics (``ReplicaCollector``): reads that asked the replica for its position
    # first, and reads that went to the primary because it was behind or down.
    position_checks: int = 0
    fallbacks: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # A replica that restarted or stopped has closed the pooled connections: the pool's
        # documented checkout hook swaps a closed one for a new connection (which fails fast
        # when the replica is down) instead of handing it to a read that would then fail.
        event.listen(self.engine.sync_engine.pool, "checkout", _replace_closed)

    @property
    def status(self) -> str:
        """``ok``, or ``degraded (why)`` while reads go to the primary."""
        return "ok" if self.healthy else f"degraded ({self.problem})"

    def mark_down(self, exc: BaseException) -> None:
        """Send reads to the primary until a check reaches the replica again."""
        if self.healthy:
            log.warning("read replica unavailable, reading from the primary: %r", exc)
        self.healthy = False
        self.problem = f"unavailable: {type(exc).__name__}"

    async def check(self, limit: float) -> str:
        """Ask the replica how far it has replayed; returns ``status`` afterwards."""
        try:
            async with asyncio.timeout(limit), self.engine.connect() as conn:
                self.replayed = parse_position((await conn.execute(_REPLAYED)).scalar_one())
        except Exception as exc:
            self.mark_down(exc)
        else:
            if not self.healthy:
                log.info("read replica is back")
            self.healthy, self.problem = True, ""
        return self.status

    async def connect(self, after: int | None) -> AsyncConnection | None:
        """A connection to the replica that shows everything up to ``after``, or None when the
        read must go to the primary (the replica is down or has not replayed that far yet)."""
        if not self.healthy:
            self.fallbacks += 1
            return None
        try:
            conn = await self.engine.connect()
        except (DBAPIError, OSError) as exc:
            self.mark_down(exc)
            self.fallbacks += 1
            return None
        if after is None or after <= self.replayed:
            return conn
        self.position_checks += 1
        try:
            self.replayed = max(
                self.replayed, parse_position((await conn.execute(_REPLAYED)).scalar_one())
            )
        except (DBAPIError, OSError) as exc:
            await conn.close()
            self.mark_down(exc)
            self.fallbacks += 1
            return None
        if after <= self.replayed:
            return conn
        await conn.close()
        self.fallbacks += 1
        return None

    def start(self) -> None:
        """Poll the replay position in the background until ``stop``."""

        async def poll() -> None:
            while True:
                await self.check(max(self.check_seconds, 1.0))
                await asyncio.sleep(self.check_seconds)

        self._task = asyncio.create_task(poll(), name="read-replica-check")

    async def stop(self) -> None:
        """Stop polling and close the replica's connections."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.engine.dispose()


class ReplicaCollector(Collector):
    """The replica's state on /metrics, read when scraped (nothing is counted twice)."""

    def __init__(self, replica: ReadReplica) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        """The replica's up flag, its position checks and the reads it sent to the primary."""
        yield GaugeMetricFamily(
            "conversation_db_replica_up",
            "1 while reads may use the read replica, 0 while they go to the primary.",
            value=1 if self.replica.healthy else 0,
        )
        yield CounterMetricFamily(
            "conversation_db_replica_position_checks",
            "Reads that asked the replica how far it had replayed before reading.",
            value=self.replica.position_checks,
        )
        yield CounterMetricFamily(
            "conversation_db_replica_primary_fallbacks",
            "Reads sent to the primary: the replica was behind their position, or down.",
            value=self.replica.fallbacks,
        )
