"""``context`` (issue 3): the agent's context window against the raw reads behind it.

``GET /internal/v1/conversations/{id}/context?strategy=summary_buffer&max_tokens=4000`` (default
encoding, o200k) with a service key, 1 client, on conversations of 100, 10,000 and 100,000
messages. Each history is seeded as production has it (``bench.raw.window.seed_history``):
user/assistant turns of 20-60 tokens and, past 200 messages, a summary covering all but the
newest 200, so the window is the summary plus the newest messages that fit.

Baselines, same run, one driver connection, serial:

* ``window``: the driver running the reads the service runs for that window (newest summary,
  always-included rows, newest-first chunks of 64 after the cut point until the budget is spent),
  with the SQL the service's statements compile to. Target: service p50 ≤ 3× this.
* ``every read``: the same plus the endpoint's other reads (memory policy, live session, tracked
  context). Info: what is left between this and the service is framework, hydration and JSON.

The 100,000-message p50 must stay within 1.5× of the 100-message p50 (cost constant in history).
"""

import uuid
from collections import defaultdict

import httpx

from bench.api import BenchError
from bench.client import PreparedRequest, prepare
from bench.common import compare, http_run
from bench.harness import BenchContext
from bench.raw import PostgresBackend, SqliteBackend
from bench.raw.window import WindowReader, open_reader, seed_history
from bench.report import Result, Target
from bench.stats import Measurement, Operation, closed_loop, median_of

SIZES = (100, 10_000, 100_000)
MAX_TOKENS = 4000
ENCODING = "o200k"  # the policy's default encoding (o200k_base)
QUERY = f"strategy=summary_buffer&max_tokens={MAX_TOKENS}"


def _raw_window(reader: WindowReader, conversation: uuid.UUID, *, full: bool) -> Operation:
    async def operation(_worker: int) -> None:
        if not await reader.window(
            conversation, max_tokens=MAX_TOKENS, encoding=ENCODING, full=full
        ):
            raise BenchError("raw window read no rows")

    return operation


async def _check(ctx: BenchContext, conversation: uuid.UUID, size: int, covers: int | None) -> int:
    """The service's window for ``conversation`` looks right; return its message count."""
    service = ctx.service
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30.0) as client:
        response = await client.get(
            f"/internal/v1/conversations/{conversation}/context?{QUERY}",
            headers={"Authorization": f"Bearer {service.config.internal_key}"},
        )
    if response.status_code != 200:
        raise BenchError(f"context: {response.status_code} {response.text[:300]}")
    body = response.json()
    summary = body.get("summary")
    messages = body["messages"]
    if (
        not messages
        or messages[-1]["seq"] != size
        or body["token_count"] > MAX_TOKENS
        or (summary or {}).get("covers_until_seq") != covers
    ):
        raise BenchError(f"unexpected context window of the {size}-message conversation")
    return len(messages)


async def context(ctx: BenchContext) -> list[Result]:
    """The context window over HTTP against the raw reads, on three history lengths."""
    counts = ctx.counts
    service = ctx.service
    backend = ctx.raw
    assert isinstance(backend, PostgresBackend | SqliteBackend)
    conversations: dict[int, uuid.UUID] = {}
    window_sizes: dict[int, int] = {}
    for size in SIZES:
        conversation = await ctx.api.create_conversation()
        covers = await seed_history(backend, conversation, ctx.tenant, size)
        window_sizes[size] = await _check(ctx, conversation, size, covers)
        conversations[size] = conversation

    def get(conversation: uuid.UUID) -> list[PreparedRequest]:
        return [
            prepare(
                "GET",
                f"/internal/v1/conversations/{conversation}/context?{QUERY}",
                host=f"{service.host}:{service.port}",
                token=service.config.internal_key,
            )
        ]

    runs: defaultdict[str, list[Measurement]] = defaultdict(list)
    total, warm, cap = counts.list_requests, counts.warmup, counts.http_seconds
    reader = await open_reader(backend)
    try:
        for _ in range(counts.repeats):
            for size, conversation in conversations.items():
                for name, full in (("window", False), ("every read", True)):
                    runs[f"{name} {size}"].append(
                        await closed_loop(
                            _raw_window(reader, conversation, full=full),
                            workers=1,
                            total=total,
                            warmup=warm,
                            max_seconds=cap,
                        )
                    )
                runs[f"http {size}"].append(
                    await http_run(ctx, service, get(conversation), 200, total=total)
                )
    finally:
        await reader.close()

    m = {name: median_of(values) for name, values in runs.items()}
    results: list[Result] = []
    for size in SIZES:
        n = f"{size:,} msgs"
        window = (m[f"http {size}"], m[f"window {size}"])
        every = (m[f"http {size}"], m[f"every read {size}"])
        label = "window reads, 1 conn"
        results += [
            compare(ctx, f"context p50, {n}", "p50", window, label, Target(high=3)),
            compare(ctx, f"context p99, {n}", "p99", window, label, None),
            compare(ctx, f"context p50, {n}", "p50", every, "every read, 1 conn", None),
        ]
    small, large = SIZES[0], SIZES[-1]
    results.append(
        compare(
            ctx,
            f"context p50, {large:,} vs {small:,} msgs",
            "p50",
            (m[f"http {large}"], m[f"http {small}"]),
            f"service, {small:,} msgs",
            Target(high=1.5),
        )
    )
    for result in results:
        result.details["window_messages"] = window_sizes
    return results


SCENARIOS = {"context": context}
