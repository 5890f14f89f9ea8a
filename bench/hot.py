"""``hot``: each hot operation against its floor (HTTP floor + work floor) and against the old code.

For each operation, 1 client, serial, in the same run and round:

* the service (``POST …/messages``; an agent turn = ``POST /internal/…/messages`` with
  ``status: streaming`` then ``POST …/{mid}/complete``; ``GET …/messages?order=desc&limit=50``;
  ``GET /internal/…/context``), with its CPU per operation from ``/proc``;
* the HTTP floor (``bench.http_floor``): a bare ASGI app on the same uvicorn and options,
  answering the same requests with bodies of the service's response sizes;
* the work floor (``bench.raw.hot``): the operation's SQL and Redis commands through the drivers;
* the baseline (``bench.baseline``): the code of ``--baseline-ref`` from its own worktree and
  venv, on a database of its own (a fresh SQLite file; ``<database>_baseline`` on PostgreSQL).

Targets: service ≤ 2× (HTTP floor + work floor) in p50 and in CPU per operation (service
process against floor process + driver CPU in this process; the database's and Redis's own CPU
are on neither side); new ≤ 1.3× old on PostgreSQL, ≤ 2× on SQLite. Reads run on a
conversation of ``HISTORY`` messages written through the API, so each side gets the same data.
"""

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
import orjson

from bench.api import BenchError, ServiceApi
from bench.client import LoadConnection, PreparedRequest, open_connections, prepare
from bench.common import figures
from bench.harness import BenchContext
from bench.http_floor import HttpFloor, Shapes, shape_of
from bench.raw import PostgresBackend, SqliteBackend
from bench.raw.hot import CONTENT, Target, WorkFloor, open_work_floor
from bench.raw.postgres import asyncpg_dsn
from bench.report import Result
from bench.report import Target as Goal
from bench.server import ServiceProcess, migrate
from bench.stats import Measurement, Operation, closed_loop, median_of

OPERATIONS = ("append", "agent turn", "history page", "context")
HISTORY = 60  # under one window chunk (64): the context reads one chunk
USER = "bench-user"


@dataclasses.dataclass(frozen=True, slots=True)
class Side:
    """A running service and the conversations its measured requests use."""

    service: ServiceProcess
    append: uuid.UUID
    agent: uuid.UUID
    reads: uuid.UUID


async def _side(ctx: BenchContext, service: ServiceProcess) -> Side:
    async with ServiceApi(service.base_url, ctx.token) as api:
        append, agent, reads = [await api.create_conversation() for _ in range(3)]
        for _ in range(HISTORY):
            await api.append(reads, CONTENT)
    return Side(service, append, agent, reads)


def _requests(ctx: BenchContext, side: Side) -> dict[str, list[PreparedRequest]]:
    host = f"{side.service.host}:{side.service.port}"
    key = side.service.config.internal_key

    def req(method: str, path: str, token: str, body: object | None = None) -> PreparedRequest:
        return prepare(method, path, host=host, token=token, json_body=body)

    user, internal = "/api/v1/conversations/{}", "/internal/v1/conversations/{}"
    agent = internal.format(side.agent)
    page = f"{user.format(side.reads)}/messages?order=desc&limit=50"
    return {
        "append": [
            req("POST", f"{user.format(side.append)}/messages", ctx.token, {"content": CONTENT})
        ],
        "agent turn": [
            req("POST", f"{agent}/messages", key, {"role": "assistant", "status": "streaming"}),
            req("POST", f"{agent}/messages/{uuid.UUID(int=0)}/complete", key, {"content": CONTENT}),
        ],
        "history page": [req("GET", page, ctx.token)],
        "context": [req("GET", f"{internal.format(side.reads)}/context", key)],
    }  # fmt: skip


_NO_ID = str(uuid.UUID(int=0))


async def _send(
    connection: LoadConnection, requests: list[PreparedRequest]
) -> list[tuple[str, int, int]]:
    """Send an operation's requests in turn: shape, status and size of each answer.

    An agent turn's ``complete`` goes to the message its ``create`` answered with.
    """
    answers: list[tuple[str, int, int]] = []
    message: str | None = None
    for request in requests:
        if message is not None:
            request = dataclasses.replace(
                request,
                path=request.path.replace(_NO_ID, message),
                wire=request.wire.replace(_NO_ID.encode(), message.encode(), 1),
            )
        status, body = await connection.send(request)
        if status not in (200, 201):
            raise BenchError(f"{request.method} {request.path}: {status} {body[:300]!r}")
        answers.append((shape_of(request.method, request.path), status, len(body)))
        if b'"streaming"' in body:
            message = str(orjson.loads(body)["id"])
    return answers


async def _http_run(
    ctx: BenchContext,
    host: str,
    port: int,
    requests: list[PreparedRequest],
    cpu: Callable[[], float],
) -> Measurement:
    [connection] = await open_connections(ctx.client, host, port, 1)

    async def operation(_worker: int) -> None:
        await _send(connection, requests)

    try:
        return await closed_loop(
            operation,
            workers=1,
            total=ctx.counts.append_serial,
            warmup=ctx.counts.warmup,
            max_seconds=ctx.counts.http_seconds,
            server_cpu=cpu,
        )
    finally:
        await connection.aclose()


async def _shapes(ctx: BenchContext, side: Side) -> Shapes:
    """Status and response size of every request the operations send, from the service."""
    [connection] = await open_connections("raw", side.service.host, side.service.port, 1)
    try:
        return {
            shape: (status, size)
            for requests in _requests(ctx, side).values()
            for shape, status, size in await _send(connection, requests)
        }
    finally:
        await connection.aclose()


def _work_operation(floor: WorkFloor, name: str, target: Target) -> Operation:
    method = {
        "append": floor.append,
        "agent turn": floor.agent_turn,
        "history page": floor.history,
        "context": floor.context,
    }[name]

    async def operation(_worker: int) -> None:
        await method(target)

    return operation


async def _baseline_database(
    ctx: BenchContext, workdir: str
) -> tuple[str, PostgresBackend | SqliteBackend]:
    if isinstance(ctx.raw, SqliteBackend):
        url = f"sqlite+aiosqlite:///{workdir}/baseline.db"
        return url, SqliteBackend(url)
    current = ctx.service.config.database_url
    name = f"{current.rsplit('/', 1)[1].split('?')[0]}_baseline"
    conn = await asyncpg.connect(asyncpg_dsn(current))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = current.rsplit("/", 1)[0] + f"/{name}"
    return url, PostgresBackend(url)


@asynccontextmanager
async def _baseline_service(ctx: BenchContext) -> AsyncIterator[ServiceProcess | None]:
    if ctx.baseline is None:
        yield None
        return
    workdir = ctx.service.log_path.parent
    url, backend = await _baseline_database(ctx, str(workdir))
    config = ctx.baseline.config(ctx.service.config, url)
    await migrate(config)
    try:
        async with ServiceProcess(config, workdir / "baseline.log") as service:
            yield service
    finally:
        await backend.remove_tenant(ctx.tenant)


def _rows(
    ctx: BenchContext, name: str, m: dict[str, Measurement], old: Measurement | None
) -> list[Result]:
    """Service against HTTP + work floor (p50, CPU per operation), and new against old."""
    new, http, work = m["service"], m["http floor"], m["work floor"]
    assert new.server_cpu is not None
    assert http.server_cpu is not None
    floor_p50 = (http.p50 + work.p50) * 1e3
    floor_cpu = (http.server_cpu + work.client_cpu) * 1e6
    details = {key: figures(value) for key, value in m.items()}
    b = ctx.backend
    rows = [
        Result(f"{name} p50 vs floor", b, "ms", new.p50 * 1e3, floor_p50,
               f"HTTP {http.p50 * 1e3:.3f} + work {work.p50 * 1e3:.3f}", Goal(high=2), details),
        Result(f"{name} CPU/op vs floor", b, "µs", new.server_cpu * 1e6, floor_cpu,
               f"HTTP {http.server_cpu * 1e6:.0f} + work {work.client_cpu * 1e6:.0f}",
               Goal(high=2), details),
    ]  # fmt: skip
    if old is not None:
        assert old.server_cpu is not None
        details["old"] = figures(old)
        limit = Goal(high=1.3 if b == "postgres" else 2)
        label = f"old code ({ctx.baseline.commit[:9] if ctx.baseline else '?'})"
        rows += [
            Result(f"{name} p50 vs old", b, "ms", new.p50 * 1e3, old.p50 * 1e3, label, limit,
                   details),
            Result(f"{name} CPU/op vs old", b, "µs", new.server_cpu * 1e6, old.server_cpu * 1e6,
                   label, limit, details),
        ]  # fmt: skip
    return rows


async def hot(ctx: BenchContext) -> list[Result]:
    """The hot operations against HTTP floor + work floor, and against the baseline's code."""
    backend = ctx.raw
    assert isinstance(backend, PostgresBackend | SqliteBackend)
    runs: defaultdict[str, list[Measurement]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        baseline = await stack.enter_async_context(_baseline_service(ctx))
        new = await _side(ctx, ctx.service)
        old = await _side(ctx, baseline) if baseline else None
        shapes = await _shapes(ctx, new)
        http = await stack.enter_async_context(HttpFloor(shapes))
        work = await open_work_floor(backend, ctx.service.config.redis_url)
        stack.push_async_callback(work.close)
        async with ServiceApi(ctx.service.base_url, ctx.token) as api:
            floor_targets = {
                "append": await api.create_conversation(),
                "agent turn": await api.create_conversation(),
                "history page": new.reads,
                "context": new.reads,
            }
        new_requests = _requests(ctx, new)
        old_requests = _requests(ctx, old) if old else {}
        counts = ctx.counts
        for _ in range(counts.repeats):
            for name in OPERATIONS:
                target = Target(floor_targets[name], ctx.tenant, USER)
                runs[f"{name}/work floor"].append(
                    await closed_loop(
                        _work_operation(work, name, target),
                        workers=1,
                        total=counts.append_serial,
                        warmup=counts.warmup,
                        max_seconds=counts.http_seconds,
                    )
                )
                runs[f"{name}/http floor"].append(
                    await _http_run(ctx, http.host, http.port, new_requests[name], http.cpu_seconds)
                )
                service = ctx.service
                runs[f"{name}/service"].append(
                    await _http_run(
                        ctx, service.host, service.port, new_requests[name], service.cpu_seconds
                    )
                )
                if old is not None:
                    runs[f"{name}/old"].append(
                        await _http_run(
                            ctx, old.service.host, old.service.port, old_requests[name],
                            old.service.cpu_seconds,
                        )
                    )  # fmt: skip
    results: list[Result] = []
    for name in OPERATIONS:
        m = {
            kind: median_of(runs[f"{name}/{kind}"])
            for kind in ("service", "http floor", "work floor")
        }
        previous = median_of(runs[f"{name}/old"]) if old is not None else None
        results += _rows(ctx, name, m, previous)
    return results


SCENARIOS = {"hot": hot}
