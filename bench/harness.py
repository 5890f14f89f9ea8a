"""Per-backend set-up: a database, the migrated schema, the running service and a user.

SQLite gets a fresh file in a temporary directory. PostgreSQL uses the given database as it is:
``migrate`` is idempotent, every run writes under a tenant of its own and deletes it at the end,
so the benchmark can share the database with test runs. Only when ``migrate`` fails are our
tables dropped and recreated.
"""

import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg  # type: ignore[import-untyped]

from bench.api import ServiceApi
from bench.baseline import Baseline
from bench.client import ClientKind
from bench.raw import PostgresBackend, RawBackend, SqliteBackend
from bench.server import ServiceConfig, ServiceError, ServiceProcess, migrate
from conversation_service.services.auth import issue_token

BackendName = Literal["sqlite", "postgres"]
_OUR_TABLES = "messages, idempotency_keys, conversations, alembic_version"


@dataclass(frozen=True, slots=True)
class Counts:
    """How much work each measurement does."""

    warmup: int
    append_serial: int
    append_concurrent: int
    list_requests: int
    # Upper bound of one measured HTTP run: a slow service yields fewer samples, not a long run.
    http_seconds: float
    large_conversation: int
    small_conversation: int
    repeats: int
    # Background jobs (bench.queueing): low jobs waiting behind the measured high ones, high
    # jobs timed per round, and jobs per throughput run (service tasks and raw RQ no-ops).
    queue_backlog: int = 10_000
    queue_samples: int = 20
    queue_jobs: int = 300
    noop_jobs: int = 1_000


FULL = Counts(
    warmup=100,
    append_serial=1_000,
    append_concurrent=3_000,
    list_requests=1_000,
    http_seconds=6.0,
    large_conversation=100_000,
    small_conversation=100,
    repeats=3,
)
QUICK = Counts(
    warmup=30,
    append_serial=200,
    append_concurrent=400,
    list_requests=200,
    http_seconds=1.5,
    large_conversation=100_000,
    small_conversation=100,
    repeats=1,
    queue_backlog=1_000,
    queue_samples=10,
    queue_jobs=60,
    noop_jobs=200,
)


@dataclass(frozen=True, slots=True)
class BenchContext:
    """Everything a scenario needs for one backend."""

    backend: BackendName
    raw: RawBackend
    service: ServiceProcess
    api: ServiceApi
    token: str
    tenant: str
    client: ClientKind
    counts: Counts
    # The code before the change (``--baseline-ref``), for the scenarios that compare with it.
    baseline: Baseline | None = None


async def _prepare_postgres(raw: PostgresBackend, config: ServiceConfig) -> None:
    try:
        await migrate(config)
    except ServiceError:
        conn = await asyncpg.connect(raw.dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {_OUR_TABLES} CASCADE")
        finally:
            await conn.close()
        await migrate(config)


@asynccontextmanager
async def backend_context(
    backend: BackendName,
    *,
    postgres_url: str,
    redis_url: str,
    client: ClientKind,
    counts: Counts,
    baseline: Baseline | None = None,
) -> AsyncIterator[BenchContext]:
    """Set up ``backend``, start the service on it, and tear both down afterwards."""
    with tempfile.TemporaryDirectory(prefix="conversation-bench-") as tmp:
        workdir = Path(tmp)
        raw: RawBackend
        if backend == "sqlite":
            database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
            raw = SqliteBackend(database_url)
        else:
            database_url = postgres_url
            raw = PostgresBackend(database_url)
        config = ServiceConfig(
            database_url=database_url,
            redis_url=redis_url,
            jwt_secret=secrets.token_urlsafe(48),
            internal_key=secrets.token_urlsafe(24),
        )
        if isinstance(raw, PostgresBackend):
            await _prepare_postgres(raw, config)
        else:
            await migrate(config)
        tenant = f"bench-{uuid.uuid4().hex[:12]}"
        token = issue_token(config.jwt_secret, tenant=tenant, user="bench-user", ttl_seconds=7200)
        try:
            async with (
                ServiceProcess(config, workdir / "service.log") as service,
                ServiceApi(service.base_url, token) as api,
            ):
                yield BenchContext(
                    backend=backend,
                    raw=raw,
                    service=service,
                    api=api,
                    token=token,
                    tenant=tenant,
                    client=client,
                    counts=counts,
                    baseline=baseline,
                )
        finally:
            await raw.remove_tenant(tenant)
