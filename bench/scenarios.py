"""The scenarios of the performance issue, each measured against its raw-driver baseline.

* ``append``: ``POST …/messages`` at 1 and 16 concurrent clients against a raw INSERT of the same
  row (one connection, serially, for latency; a pool of 8 connections for rate).
* ``list``: the newest 50 messages of a 100,000-message and of a 100-message conversation against
  the raw SELECT, and the service's latency on both sizes against each other.

Each round measures the baseline and the service back to back; figures are medians of the
rounds and ratios are taken between figures of the same run. Every simulated client writes to a
conversation of its own, as users do: the service serialises appends per conversation by design.
"""

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

from bench.api import BenchError
from bench.client import LoadConnection, PreparedRequest, open_connections, prepare
from bench.context import SCENARIOS as CONTEXT_SCENARIOS
from bench.harness import BenchContext
from bench.hot import SCENARIOS as HOT_SCENARIOS
from bench.outbox import SCENARIOS as OUTBOX_SCENARIOS
from bench.queueing import SCENARIOS as QUEUE_SCENARIOS
from bench.raw import RawConnection, RawPool
from bench.report import Result, Target
from bench.stats import Measurement, Operation, closed_loop, median_of
from bench.streaming import SCENARIOS as STREAMING_SCENARIOS
from bench.telemetry import SCENARIOS as TELEMETRY_SCENARIOS

CONCURRENT_CLIENTS = 16
POOL_SIZE = 8
PAGE = 50
CONTENT = (
    "Could you summarise the last three invoices for ACME Corp and flag anything that looks "
    "unusual compared with the previous quarter? Please keep it short."
)

Scenario = Callable[[BenchContext], Awaitable[list[Result]]]


class _SeqCounter:
    """Next unique ``seq`` per conversation for raw inserts."""

    def __init__(self) -> None:
        self._last: defaultdict[uuid.UUID, int] = defaultdict(int)

    def next(self, conversation_id: uuid.UUID) -> int:
        self._last[conversation_id] += 1
        return self._last[conversation_id]


def _http_operation(
    connections: Sequence[LoadConnection], requests: Sequence[PreparedRequest], expected: int
) -> Operation:
    async def operation(worker: int) -> None:
        status, body = await connections[worker].send(requests[worker])
        if status != expected:
            request = requests[worker]
            raise BenchError(f"{request.method} {request.path}: {status} {body[:300]!r}")

    return operation


@asynccontextmanager
async def _clients(ctx: BenchContext, count: int) -> AsyncIterator[list[LoadConnection]]:
    """Fresh keep-alive connections for one measured run (idle ones get closed by the server)."""
    service = ctx.service
    connections = await open_connections(ctx.client, service.host, service.port, count)
    try:
        yield connections
    finally:
        for connection in connections:
            await connection.aclose()


async def _http_run(
    ctx: BenchContext, requests: Sequence[PreparedRequest], expected: int, *, total: int
) -> Measurement:
    """Measure ``total`` requests from ``len(requests)`` clients, each sending its own request."""
    async with _clients(ctx, len(requests)) as connections:
        return await closed_loop(
            _http_operation(connections, requests, expected),
            workers=len(requests),
            total=total,
            warmup=ctx.counts.warmup,
            max_seconds=ctx.counts.http_seconds,
            server_cpu=ctx.service.cpu_seconds,
        )


def _raw_insert(
    target: RawConnection | RawPool,
    conversations: Sequence[uuid.UUID],
    tenant: str,
    seqs: _SeqCounter,
) -> Operation:
    async def operation(worker: int) -> None:
        conversation = conversations[worker]
        await target.insert_message(conversation, tenant, seqs.next(conversation), CONTENT)

    return operation


def _raw_select(connection: RawConnection, conversation: uuid.UUID) -> Operation:
    async def operation(_worker: int) -> None:
        if await connection.newest_messages(conversation, PAGE) != PAGE:
            raise BenchError("raw select returned a short page")

    return operation


def _figures(measurement: Measurement) -> dict[str, float]:
    figures = {
        "p50_ms": round(measurement.p50 * 1e3, 4),
        "p99_ms": round(measurement.p99 * 1e3, 4),
        "rate": round(measurement.rate, 1),
        "count": measurement.count,
        "client_cpu_us": round(measurement.client_cpu * 1e6, 1),
    }
    if measurement.server_cpu is not None:
        figures["server_cpu_us"] = round(measurement.server_cpu * 1e6, 1)
    return figures


def _result(
    ctx: BenchContext,
    scenario: str,
    metric: Literal["p50", "p99", "rate"],
    pair: tuple[Measurement, Measurement],
    baseline_label: str,
    target: Target | None,
) -> Result:
    """A row comparing one figure of the service's measurement with the baseline's."""
    service, baseline = pair
    scale = 1.0 if metric == "rate" else 1e3
    return Result(
        scenario=scenario,
        backend=ctx.backend,
        unit="/s" if metric == "rate" else "ms",
        service=getattr(service, metric) * scale,
        baseline=getattr(baseline, metric) * scale,
        baseline_label=baseline_label,
        target=target,
        details={"service": _figures(service), "baseline": _figures(baseline)},
    )


async def append(ctx: BenchContext) -> list[Result]:
    """Message append over HTTP against a raw INSERT of the same row."""
    counts = ctx.counts
    service = ctx.service
    http_single = await ctx.api.create_conversation()
    http_many = [await ctx.api.create_conversation() for _ in range(CONCURRENT_CLIENTS)]
    raw_targets = [await ctx.api.create_conversation() for _ in range(CONCURRENT_CLIENTS)]
    seqs = _SeqCounter()

    def post(conversation: uuid.UUID) -> PreparedRequest:
        return prepare(
            "POST",
            f"/api/v1/conversations/{conversation}/messages",
            host=f"{service.host}:{service.port}",
            token=ctx.token,
            json_body={"content": CONTENT},
        )

    async with AsyncExitStack() as stack:
        connection = await ctx.raw.connect()
        stack.push_async_callback(connection.close)
        pool = await ctx.raw.create_pool(POOL_SIZE)
        stack.push_async_callback(pool.close)
        single_request = [post(http_single)]
        many_requests = [post(conversation) for conversation in http_many]
        raw_serial = _raw_insert(connection, raw_targets, ctx.tenant, seqs)
        raw_pool = _raw_insert(pool, raw_targets, ctx.tenant, seqs)

        runs: defaultdict[str, list[Measurement]] = defaultdict(list)
        one, many, warm = counts.append_serial, counts.append_concurrent, counts.warmup
        for _ in range(counts.repeats):
            runs["raw 1"].append(await closed_loop(raw_serial, workers=1, total=one, warmup=warm))
            runs["http 1"].append(await _http_run(ctx, single_request, 201, total=one))
            for workers in (POOL_SIZE, CONCURRENT_CLIENTS):
                runs[f"raw pool {workers}"].append(
                    await closed_loop(raw_pool, workers=workers, total=many, warmup=warm)
                )
            runs["http 16"].append(await _http_run(ctx, many_requests, 201, total=many))

    m = {name: median_of(values) for name, values in runs.items()}
    best = max((POOL_SIZE, CONCURRENT_CLIENTS), key=lambda workers: m[f"raw pool {workers}"].rate)
    one_conn = "INSERT, 1 conn"
    pool_16 = f"pool of {POOL_SIZE}, 16 coroutines"
    pool_best = f"pool of {POOL_SIZE}, {best} coroutines"
    single = (m["http 1"], m["raw 1"])
    crowd = (m["http 16"], m["raw pool 16"])
    rate = (m["http 16"], m[f"raw pool {best}"])
    return [
        _result(ctx, "append p50, 1 client", "p50", single, one_conn, Target(high=3)),
        _result(ctx, "append p99, 1 client", "p99", single, one_conn, Target(high=8)),
        _result(ctx, "append rate, 1 client", "rate", single, one_conn, None),
        _result(ctx, "append p50, 16 clients", "p50", crowd, pool_16, None),
        _result(ctx, "append p99, 16 clients", "p99", crowd, pool_16, None),
        _result(ctx, "append rate, 16 clients", "rate", rate, pool_best, Target(low=0.4)),
    ]


async def list_history(ctx: BenchContext) -> list[Result]:
    """The newest 50 messages over HTTP against the raw SELECT, on a long and a short history."""
    counts = ctx.counts
    service = ctx.service
    large = await ctx.api.create_conversation()
    small = await ctx.api.create_conversation()
    await ctx.raw.seed(large, ctx.tenant, counts.large_conversation, CONTENT)
    await ctx.raw.seed(small, ctx.tenant, counts.small_conversation, CONTENT)
    for conversation, size in (
        (large, counts.large_conversation),
        (small, counts.small_conversation),
    ):
        page = await ctx.api.newest_page(conversation, PAGE)
        if len(page["data"]) != PAGE or page["data"][0]["seq"] != size or not page["has_more"]:
            raise BenchError(f"unexpected first page of the {size}-message conversation")

    def get(conversation: uuid.UUID) -> PreparedRequest:
        return prepare(
            "GET",
            f"/api/v1/conversations/{conversation}/messages?order=desc&limit={PAGE}",
            host=f"{service.host}:{service.port}",
            token=ctx.token,
        )

    async with AsyncExitStack() as stack:
        connection = await ctx.raw.connect()
        stack.push_async_callback(connection.close)
        runs: defaultdict[str, list[Measurement]] = defaultdict(list)
        total, warm = counts.list_requests, counts.warmup
        for _ in range(counts.repeats):
            for name, conversation in (("large", large), ("small", small)):
                runs[f"raw {name}"].append(
                    await closed_loop(
                        _raw_select(connection, conversation), workers=1, total=total, warmup=warm
                    )
                )
                runs[f"http {name}"].append(
                    await _http_run(ctx, [get(conversation)], 200, total=total)
                )

    m = {name: median_of(values) for name, values in runs.items()}
    big = f"{counts.large_conversation:,}"
    tiny = f"{counts.small_conversation:,}"
    select = "SELECT, 1 conn"
    large_pair = (m["http large"], m["raw large"])
    small_pair = (m["http small"], m["raw small"])
    return [
        _result(ctx, f"list {PAGE} p50, {big} msgs", "p50", large_pair, select, Target(high=3)),
        _result(ctx, f"list {PAGE} p99, {big} msgs", "p99", large_pair, select, Target(high=5)),
        _result(ctx, f"list {PAGE} p50, {tiny} msgs", "p50", small_pair, select, Target(high=3)),
        _result(
            ctx,
            f"list p50, {big} vs {tiny} msgs",
            "p50",
            (m["http large"], m["http small"]),
            f"service, {tiny} msgs",
            Target(low=0.5, high=1.5),
        ),
    ]


SCENARIOS: dict[str, Scenario] = {
    "append": append,
    "list": list_history,
    **STREAMING_SCENARIOS,
    **CONTEXT_SCENARIOS,
    **QUEUE_SCENARIOS,
    **OUTBOX_SCENARIOS,
    **HOT_SCENARIOS,
    **TELEMETRY_SCENARIOS,
}
