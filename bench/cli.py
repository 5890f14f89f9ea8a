"""Command line of the harness: choose backends and scenarios, print the table, write the JSON."""

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import get_args

import uvloop

from bench import baseline as baselines
from bench.client import ClientKind
from bench.harness import FULL, QUICK, BackendName, Counts, backend_context
from bench.profiling import profiled
from bench.raw import PostgresBackend
from bench.report import RESULTS_DIR, Result, format_cpu, format_table, write_json
from bench.scenarios import SCENARIOS
from bench.server import redis_url_for_run

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m bench`` options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service against raw-driver baselines measured in the same run.",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "all"),
        default="all",
        help="database to run on; 'all' runs PostgreSQL only when it is reachable "
        "(BENCH_POSTGRES_URL, default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one round (smoke run)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeat the option for several)",
    )
    parser.add_argument(
        "--client",
        choices=get_args(ClientKind),
        default="raw",
        help="HTTP load client (default: the lean raw asyncio client)",
    )
    parser.add_argument("--repeats", type=int, help="rounds per measurement (median is reported)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results file"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the service with py-spy during each scenario (collapsed stacks in DIR)",
    )
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="git commit the 'hot' and 'telemetry' scenarios compare with, run from its own "
        "worktree and venv under .bench-baseline/ (default: the merge-base of HEAD and main; "
        "'none' to skip)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@asynccontextmanager
async def _maybe_profiled(
    pid: int, directory: Path | None, backend: str, scenario: str
) -> AsyncIterator[None]:
    if directory is None:
        yield
        return
    async with profiled(pid, directory / f"{backend}-{scenario}.txt"):
        yield


async def _select_backends(choice: str, postgres_url: str) -> list[BackendName] | None:
    """The backends to run; None when PostgreSQL was asked for explicitly and is unreachable."""
    backends: list[BackendName] = ["sqlite"] if choice in ("sqlite", "all") else []
    if choice in ("postgres", "all"):
        reason = await PostgresBackend(postgres_url).reachable()
        if reason is None:
            backends.append("postgres")
        elif choice == "postgres":
            _log(f"bench: PostgreSQL is not reachable at {postgres_url}: {reason}")
            return None
        else:
            _log(f"bench: skipping PostgreSQL (not reachable: {reason})")
    return backends


def _describe(exc: BaseException) -> str:
    # Failures inside a load run arrive wrapped in the TaskGroup's ExceptionGroup.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


async def _run(args: argparse.Namespace) -> int:
    counts: Counts = QUICK if args.quick else FULL
    if args.repeats:
        counts = dataclasses.replace(counts, repeats=args.repeats)
    postgres_url = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    backends = await _select_backends(args.backend, postgres_url)
    if backends is None:
        return 2
    with redis_url_for_run(os.environ.get("BENCH_REDIS_URL"), DEFAULT_REDIS_URL) as redis_url:
        return await _run_backends(args, counts, backends, postgres_url, redis_url)


async def _run_backends(
    args: argparse.Namespace,
    counts: Counts,
    backends: list[BackendName],
    postgres_url: str,
    redis_url: str,
) -> int:
    scenarios = list(dict.fromkeys(args.scenario)) if args.scenario else list(SCENARIOS)
    baseline = None
    if {"hot", "telemetry"} & set(scenarios) and args.baseline_ref != "none":
        ref = args.baseline_ref or await baselines.default_ref()
        baseline = await baselines.prepare(ref, _log)

    started = time.monotonic()
    results: list[Result] = []
    failures: list[str] = []
    for backend in backends:
        _log(f"bench: {backend}: starting the service")
        try:
            async with backend_context(
                backend,
                postgres_url=postgres_url,
                redis_url=redis_url,
                client=args.client,
                counts=counts,
                baseline=baseline,
            ) as ctx:
                for name in scenarios:
                    _log(f"bench: {backend}: {name}")
                    async with _maybe_profiled(ctx.service.pid, args.profile, backend, name):
                        results.extend(await SCENARIOS[name](ctx))
        except Exception as exc:  # report the backend as failed and go on with the others
            _log(f"bench: {backend}: failed: {_describe(exc)}")
            failures.append(backend)

    if results:
        print(format_table(results))
        print()
        print(format_cpu(results))
    write_json(
        args.output,
        results,
        {
            "client": args.client,
            "quick": args.quick,
            "counts": dataclasses.asdict(counts),
            "duration_s": round(time.monotonic() - started, 1),
            "failed_backends": failures,
            "baseline_commit": baseline.commit if baseline else None,
        },
    )
    _log(f"bench: {len(results)} results in {time.monotonic() - started:.0f} s -> {args.output}")
    if failures:
        return 2
    missed = [r for r in results if r.verdict == "FAIL"]
    return 1 if args.strict and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return uvloop.run(_run(args))
