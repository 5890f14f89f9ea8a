"""``telemetry``: what OpenTelemetry costs an append, off and on.

Three services take the same user append (``POST …/messages``, 1 client, serially), measured in
turn in each round: the run's service (traces off: no ``OTEL_*`` variable), the same code with
traces on (``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local sink that answers every export
with 200), and the code of ``--baseline-ref`` (the old code, from ``bench.hot``'s worktree).
Rows: CPU per append of traces-off against the old code (target ≤ 1.03×: off is free), and of
traces-on against traces-off (the cost of tracing, info), with the p50 of each beside it. The
service's CPU comes from ``/proc``, so the exporter's thread counts; the sink's CPU does not.
"""

import asyncio
import dataclasses
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from bench.api import ServiceApi
from bench.client import prepare
from bench.common import figures
from bench.harness import BenchContext
from bench.hot import _baseline_service, _http_run
from bench.raw.hot import CONTENT
from bench.report import Result, Target
from bench.server import ServiceProcess, free_port
from bench.stats import Measurement, median_of

_EMPTY_EXPORT_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
)


@asynccontextmanager
async def otlp_sink() -> AsyncIterator[str]:
    """A local OTLP/HTTP endpoint that reads each export and answers 200; yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                writer.write(_EMPTY_EXPORT_RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def telemetry(ctx: BenchContext) -> list[Result]:
    """Append CPU and p50 with traces off (against the old code) and on (against off)."""
    runs: defaultdict[str, list[Measurement]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        baseline = await stack.enter_async_context(_baseline_service(ctx))
        sink = await stack.enter_async_context(otlp_sink())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conversation-bench-")))
        config = dataclasses.replace(
            ctx.service.config,
            extra_env={**ctx.service.config.extra_env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink},
        )
        traced = await stack.enter_async_context(ServiceProcess(config, tmp / "service-traced.log"))
        services = {"off": ctx.service, "on": traced}
        if baseline is not None:
            services["old"] = baseline
        requests = {}
        for name, service in services.items():
            async with ServiceApi(service.base_url, ctx.token) as api:
                conversation = await api.create_conversation()
            requests[name] = [
                prepare(
                    "POST",
                    f"/api/v1/conversations/{conversation}/messages",
                    host=f"{service.host}:{service.port}",
                    token=ctx.token,
                    json_body={"content": CONTENT},
                )
            ]
        for _ in range(ctx.counts.repeats):
            for name, service in services.items():
                runs[name].append(
                    await _http_run(
                        ctx, service.host, service.port, requests[name], service.cpu_seconds
                    )
                )
    m = {name: median_of(measurements) for name, measurements in runs.items()}
    details = {name: figures(value) for name, value in m.items()}
    b = ctx.backend
    off, on = m["off"], m["on"]
    assert off.server_cpu is not None
    assert on.server_cpu is not None
    rows = [
        Result("append CPU/op, traces on vs off", b, "µs", on.server_cpu * 1e6,
               off.server_cpu * 1e6, "traces off", None, details),
        Result("append p50, traces on vs off", b, "ms", on.p50 * 1e3, off.p50 * 1e3,
               "traces off", None, details),
    ]  # fmt: skip
    old = m.get("old")
    if old is not None:
        assert old.server_cpu is not None
        label = f"old code ({ctx.baseline.commit[:9] if ctx.baseline else '?'})"
        rows += [
            Result("append CPU/op, traces off vs old", b, "µs", off.server_cpu * 1e6,
                   old.server_cpu * 1e6, label, Target(high=1.03), details),
            Result("append p50, traces off vs old", b, "ms", off.p50 * 1e3, old.p50 * 1e3,
                   label, None, details),
        ]  # fmt: skip
    return rows


SCENARIOS = {"telemetry": telemetry}
