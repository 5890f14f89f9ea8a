"""Liveness, readiness (database and Redis) and Prometheus metrics."""

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import text

from conversation_service.config.constants import READINESS_TIMEOUT
from conversation_service.errors import ServiceUnavailableError
from conversation_service.metrics import Backlog
from conversation_service.routes.deps import ResourcesDep
from conversation_service.routes.errors import problems
from conversation_service.services import outbox
from conversation_service.utils.redis_client import as_cluster

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready", responses=problems(503))
async def ready(resources: ResourcesDep) -> dict[str, Any]:
    """Database and Redis answer; 503 names the failing part (rate limiter and read replica
    state in ``checks``)."""
    checks = await asyncio.gather(
        _check_database(resources), _check_redis(resources), _check_replica(resources)
    )
    parts = {name: state for name, state in checks if state is not None}
    failing = [name for name, ok in checks[:2] if ok != "ok"]
    # Informative only: a degraded limiter fails open, so it alone never makes this a 503.
    parts["rate_limiter"] = resources.limiter.status(redis_ok=parts["redis"] == "ok")
    if failing:
        raise ServiceUnavailableError(
            "not ready: " + ", ".join(f"{name} {parts[name]}" for name in failing),
            extra={"checks": parts},
        )
    return {"status": "ok", "checks": parts}


async def _check_database(resources: ResourcesDep) -> tuple[str, str]:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with resources.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return "database", f"unavailable ({type(exc).__name__})"
    return "database", "ok"


async def _check_replica(resources: ResourcesDep) -> tuple[str, str | None]:
    # Informative only: without its replica the service reads from the primary.
    replica = resources.units.replica
    if replica is None:
        return "database_replica", None
    return "database_replica", await replica.check(READINESS_TIMEOUT)


async def _check_redis(resources: ResourcesDep) -> tuple[str, str]:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            cluster = as_cluster(resources.redis)
            if cluster is None:
                await resources.redis.ping()
            else:
                # Ready only when every primary answers (a failed one's replica took over).
                await cluster.ping(target_nodes=RedisCluster.PRIMARIES)
    except Exception as exc:
        return "redis", f"unavailable ({type(exc).__name__})"
    return "redis", "ok"


@router.get("/metrics", response_class=Response)
async def metrics(resources: ResourcesDep) -> Response:
    """Prometheus metrics of this process, with the queues' and the outbox's backlog."""
    checks = await asyncio.gather(
        _check_database(resources), _check_redis(resources), _read_backlog(resources)
    )
    resources.operations.set_dependencies((name, ok == "ok") for name, ok in checks[:2])
    return Response(generate_latest(resources.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _read_backlog(resources: ResourcesDep) -> tuple[str, str]:
    """Set the backlog gauges; a dependency that does not answer leaves them as they were."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with resources.engine.connect() as conn:
                rows, row_ages = await outbox.backlog(conn)
            depth, ages = await resources.relay.queue_backlog()
    except Exception as exc:
        return "backlog", f"unavailable ({type(exc).__name__})"
    resources.operations.set_backlog(Backlog(depth, ages, rows, row_ages))
    return "backlog", "ok"
