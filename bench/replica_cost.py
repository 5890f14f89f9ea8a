"""What read-your-writes costs: ``python -m bench.replica_cost [--rounds N]``.

Two apps run in this process on the same PostgreSQL database (``BENCH_POSTGRES_URL``) and Redis
(``BENCH_REDIS_URL``): one without a read replica, one with ``CONVERSATION_DATABASE_READ_URL``
naming the same server (the position query of a write runs on the primary wherever the replica
is, and a primary read through the replica's pool is what a caught-up replica costs). Requests
alternate between the two, in an order that flips every round, so drift on a shared machine hits
both sides alike. Per operation it prints the p50 of each side, their ratio, and the statements
each ran (SQLAlchemy's ``before_cursor_execute``), for:

* an append (``POST …/messages``): with a replica, one more statement after the commit;
* a history page with the write's position once the replica has replayed it: no more statements;
* a history page with a position the replica has not reached: one position check, then the
  primary.
"""

import argparse
import asyncio
import os
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings, Environment
from conversation_service.db.engine import create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.main import create_app
from conversation_service.services.auth import issue_token

SECRET = "bench-replica-cost-" + "s" * 32
KEY = "bench-replica-cost-key-" + "k" * 16
HEADER = "Conversation-Read-After"


def _settings(database_url: str, redis_url: str, **extra: Any) -> ConversationSettings:
    return ConversationSettings(
        environment=Environment.TEST,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=SECRET,
        internal_api_keys=KEY,
        log_level="WARNING",
        outbox_sweep_enabled=False,
        rate_limit_enabled=False,
        **extra,
    )


class Statements:
    """Statements run on the engines given, counted between ``reset`` calls."""

    def __init__(self, engines: list[AsyncEngine]) -> None:
        self.count = 0
        for engine in engines:
            event.listen(engine.sync_engine, "before_cursor_execute", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1


async def run(rounds: int) -> None:
    """Measure and print the table."""
    database = os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    plain = _settings(database, redis_url)
    engine = create_engine(plain, null_pool=True)
    await upgrade_async(engine)
    await engine.dispose()
    token = issue_token(SECRET, tenant=f"t-{uuid.uuid4().hex[:8]}", user="bench")
    headers = {"Authorization": f"Bearer {token}"}
    async with AsyncExitStack() as stack:
        apps: list[FastAPI] = []
        for settings in (
            plain,
            _settings(
                database,
                redis_url,
                database_read_url=database,
                # Each round asks the replica itself (below), as the poll would between rounds:
                # no background statement lands in a measured request's count.
                database_read_check_seconds=3600,
            ),
        ):
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append(app)
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://bench",
                    headers=headers,
                )
            )
            for app in apps
        ]
        engines = [apps[0].state.resources.engine, apps[1].state.resources.engine]
        replica = apps[1].state.resources.units.replica
        counters = [Statements([engines[0]]), Statements([engines[1], replica.engine])]
        cids = []
        for client in clients:
            created = await client.post("/api/v1/conversations", json={"agent_id": "bench"})
            cids.append(created.json()["id"])
        ops: dict[str, list[list[float]]] = {}
        statements: dict[str, list[int]] = {}

        async def both(name: str, requests: list[httpx.Request], ok: int, order: int) -> None:
            """Send each side's request, the sides in ``order``; return nothing, record all."""
            samples = ops.setdefault(name, [[], []])
            counts = statements.setdefault(name, [1_000_000, 1_000_000])
            for side in (order, 1 - order):
                before = counters[side].count
                started = time.perf_counter()
                response = await clients[side].send(requests[side])
                samples[side].append(time.perf_counter() - started)
                if response.status_code != ok:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                counts[side] = min(counts[side], counters[side].count - before)
                if HEADER in response.headers:
                    positions[side] = response.headers[HEADER]

        positions = ["0/0", "0/0"]
        for i in range(rounds + 20):
            if i == 20:  # the warm-up is not measured
                ops.clear()
                statements.clear()
            order = i % 2
            appends = [
                c.build_request(
                    "POST", f"/api/v1/conversations/{cid}/messages", json={"content": f"{i}"}
                )
                for c, cid in zip(clients, cids, strict=True)
            ]
            await both("append", appends, 201, order)
            await replica.check(2.0)
            pages = [f"/api/v1/conversations/{cid}/messages?order=desc&limit=50" for cid in cids]
            caught_up = [
                clients[0].build_request("GET", pages[0]),
                clients[1].build_request("GET", pages[1], headers={HEADER: positions[1]}),
            ]
            await both("history, caught up", caught_up, 200, order)
            behind = [
                clients[0].build_request("GET", pages[0]),
                clients[1].build_request("GET", pages[1], headers={HEADER: "FFFFFFFF/0"}),
            ]
            await both("history, replica behind", behind, 200, order)
    print(f"{'operation':28} | {'no replica p50':>14} | {'replica p50':>11} | ratio | statements")
    for name, (without, with_replica) in ops.items():
        a, b = statistics.median(without) * 1e3, statistics.median(with_replica) * 1e3
        counts = statements[name]
        print(f"{name:28} | {a:11.3f} ms | {b:8.3f} ms | {b / a:4.2f}× | {counts[0]} → {counts[1]}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
