"""Helpers of the context, queue and outbox scenarios: timed HTTP runs and table rows.

They follow ``bench.scenarios`` (same closed loop, same figures in the JSON details) but take the
service process as a parameter, so a scenario can measure a second service next to the first.
"""

from collections.abc import Sequence
from typing import Any, Literal

from bench.api import BenchError
from bench.client import PreparedRequest, open_connections
from bench.harness import BenchContext
from bench.report import Result, Target, Unit
from bench.server import ServiceProcess
from bench.stats import Measurement, closed_loop

Metric = Literal["p50", "p99", "rate"]


def figures(measurement: Measurement) -> dict[str, float]:
    """A measurement as JSON numbers (milliseconds, per second, µs of CPU per operation)."""
    out = {
        "p50_ms": round(measurement.p50 * 1e3, 4),
        "p99_ms": round(measurement.p99 * 1e3, 4),
        "rate": round(measurement.rate, 1),
        "count": measurement.count,
        "client_cpu_us": round(measurement.client_cpu * 1e6, 1),
    }
    if measurement.server_cpu is not None:
        out["server_cpu_us"] = round(measurement.server_cpu * 1e6, 1)
    return out


def compare(
    ctx: BenchContext,
    scenario: str,
    metric: Metric,
    pair: tuple[Measurement, Measurement],
    baseline_label: str,
    target: Target | None,
) -> Result:
    """A row comparing one figure of a measurement (first) with the baseline's (second)."""
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
        details={"service": figures(service), "baseline": figures(baseline)},
    )


def value_row(
    ctx: BenchContext,
    scenario: str,
    unit: Unit,
    values: tuple[float, float],
    baseline_label: str,
    target: Target | None,
    details: dict[str, Any],
) -> Result:
    """A row from two plain figures (service first) measured outside ``closed_loop``."""
    return Result(
        scenario=scenario,
        backend=ctx.backend,
        unit=unit,
        service=values[0],
        baseline=values[1],
        baseline_label=baseline_label,
        target=target,
        details=details,
    )


async def http_run(
    ctx: BenchContext,
    service: ServiceProcess,
    requests: Sequence[PreparedRequest],
    expected: int,
    *,
    total: int,
) -> Measurement:
    """``total`` requests from ``len(requests)`` keep-alive clients, each sending its own."""
    connections = await open_connections(ctx.client, service.host, service.port, len(requests))

    async def operation(worker: int) -> None:
        status, body = await connections[worker].send(requests[worker])
        if status != expected:
            request = requests[worker]
            raise BenchError(f"{request.method} {request.path}: {status} {body[:300]!r}")

    try:
        return await closed_loop(
            operation,
            workers=len(requests),
            total=total,
            warmup=ctx.counts.warmup,
            max_seconds=ctx.counts.http_seconds,
            server_cpu=service.cpu_seconds,
        )
    finally:
        for connection in connections:
            await connection.aclose()
