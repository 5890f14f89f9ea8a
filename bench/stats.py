"""Closed-loop load runner and the latency/rate summary it produces.

Every benchmark, raw or over HTTP, goes through ``closed_loop`` so both sides are timed by the
same code: each of ``workers`` loops starts its next operation as soon as the previous one
completed, and every operation's latency is recorded.
"""

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# An operation receives the index of the worker loop running it (its connection, conversation…).
Operation = Callable[[int], Awaitable[None]]
CpuProbe = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured run: latency percentiles and rate, plus CPU seconds spent per operation."""

    count: int
    p50: float
    p99: float
    rate: float
    client_cpu: float
    server_cpu: float | None = None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values sorted in ascending order."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


async def closed_loop(
    operation: Operation,
    *,
    workers: int,
    total: int,
    warmup: int = 0,
    max_seconds: float | None = None,
    server_cpu: CpuProbe | None = None,
) -> Measurement:
    """Run ``warmup`` unmeasured then ``total`` measured operations from ``workers`` loops.

    With ``max_seconds``, loops stop starting operations once that much time has passed, so a
    slow service shortens the sample instead of stretching the run.
    """
    if warmup:
        await _drive(operation, workers, warmup, [], None)
    latencies: list[float] = []
    server_before = server_cpu() if server_cpu else 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    deadline = started + max_seconds if max_seconds is not None else None
    await _drive(operation, workers, total, latencies, deadline)
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_before
    server_used = server_cpu() - server_before if server_cpu else None
    latencies.sort()
    return Measurement(
        count=len(latencies),
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        rate=len(latencies) / wall,
        client_cpu=client_cpu / len(latencies),
        server_cpu=server_used / len(latencies) if server_used is not None else None,
    )


async def _drive(
    operation: Operation,
    workers: int,
    total: int,
    latencies: list[float],
    deadline: float | None,
) -> None:
    remaining = total
    clock = time.perf_counter
    end = math.inf if deadline is None else deadline

    async def worker(index: int) -> None:
        nonlocal remaining
        while remaining > 0 and clock() < end:
            remaining -= 1
            started = clock()
            await operation(index)
            latencies.append(clock() - started)

    async with asyncio.TaskGroup() as group:
        for index in range(workers):
            group.create_task(worker(index))


def median_of(measurements: Sequence[Measurement]) -> Measurement:
    """Field-by-field median of repeated runs (how PERF_FLOORS.md reports its figures)."""
    servers = [m.server_cpu for m in measurements if m.server_cpu is not None]
    return Measurement(
        count=sum(m.count for m in measurements),
        p50=statistics.median(m.p50 for m in measurements),
        p99=statistics.median(m.p99 for m in measurements),
        rate=statistics.median(m.rate for m in measurements),
        client_cpu=statistics.median(m.client_cpu for m in measurements),
        server_cpu=statistics.median(servers) if servers else None,
    )
