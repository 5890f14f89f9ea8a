"""Reads along a branch against the same reads on a line: ``python -m bench.branches``.

Seeds, on one database, a linear conversation of ``--messages`` messages and one of the same
length whose active path crosses ``--branches`` forks (each fork leaves a one-message dead end
behind, so the path is ``branches + 1`` runs), plus a short linear one. Then measures, in
process, the history pages (newest, oldest, middle; ``services.history.list_messages``) and the
context window (``services.memory_manager.context_window``, default policy) of each, serially,
interleaved, and prints p50s and the ratios branched/linear and long/short.
"""

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.engine import create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.tables import conversations_table, messages_table
from conversation_service.services import history, memory_manager
from conversation_service.services.auth import Principal
from conversation_service.utils.cursors import CursorCodec
from tests.conftest import make_settings, reset_schema

PRINCIPAL = Principal(tenant_id="bench-tree", user_id="bench-user")
_BATCH = 5_000


async def _seed(engine: AsyncEngine, count: int, branches: int) -> uuid.UUID:
    cid = uuid.uuid4()
    now = datetime.now(UTC)
    rows = _linked(cid, count, branches)
    async with engine.begin() as conn:
        await conn.execute(
            insert(conversations_table).values(
                id=cid,
                tenant_id=PRINCIPAL.tenant_id,
                user_id=PRINCIPAL.user_id,
                agent_id="bench-agent",
                agents=["bench-agent"],
                status="active",
                priority="normal",
                metadata={},
                tags=[],
                last_seq=0,
                message_count=0,
                token_count=0,
                created_at=now,
                updated_at=now,
            )
        )
        # executemany takes its columns from the first row: run heads go in a batch of their own.
        heads = [row for row in rows if "branch_ancestry" in row]
        others = [row for row in rows if "branch_ancestry" not in row]
        for batch in (heads, *(others[i : i + _BATCH] for i in range(0, len(others), _BATCH))):
            if batch:
                await conn.execute(insert(messages_table), batch)
        leaf = rows[-1]
        await conn.execute(
            update(conversations_table)
            .where(conversations_table.c.id == cid)
            .values(
                last_seq=count,
                message_count=count,
                token_count=20 * count,
                active_leaf_id=leaf["id"],
                active_branch_id=leaf["branch_id"],
            )
        )
    return cid


def _linked(cid: uuid.UUID, count: int, branches: int) -> list[dict[str, Any]]:
    """Rows whose path from the last one crosses ``branches`` forks, each leaving one dead end."""
    run_length = max(count // (branches + 1), 3)
    start = datetime.now(UTC) - timedelta(seconds=count)
    rows: list[dict[str, Any]] = []
    run: uuid.UUID = cid
    ancestry: list[list[Any]] = []
    parent: dict[str, Any] | None = None
    new_run = False
    forks = 0
    for seq in range(1, count + 1):
        message_id = uuid.uuid4()
        row: dict[str, Any] = {
            "id": message_id,
            "conversation_id": cid,
            "tenant_id": PRINCIPAL.tenant_id,
            "seq": seq,
            "role": "user" if seq % 2 else "assistant",
            "content": f"message {seq} about the quarterly invoice and the delivery",
            "status": "completed",
            "metadata": {},
            "token_count": 20,
            "tokens_cl100k": 20,
            "tokens_o200k": 20,
            "always_include": False,
            "parent_id": parent["id"] if parent else None,
            "branch_id": run,
            "branch_ancestry": None,
            "created_at": start + timedelta(seconds=seq),
            "updated_at": start + timedelta(seconds=seq),
        }
        if new_run:
            row["id"] = run
            row["branch_ancestry"] = ancestry
            new_run = False
        rows.append(row)
        parent = row
        if forks < branches and seq % run_length == 0 and seq < count - 1:
            # This message becomes a dead end: the next one answers the message before it.
            fork_point = rows[-2]
            ancestry = [*ancestry, [str(fork_point["branch_id"]), fork_point["seq"]]]
            run = uuid.uuid4()
            parent = fork_point
            new_run = True
            forks += 1
    for row in rows:
        if row["branch_ancestry"] is None:
            del row["branch_ancestry"]
    return rows


async def _interleaved(
    operations: dict[tuple[str, str], Callable[[], Awaitable[Any]]], repeats: int
) -> dict[tuple[str, str], tuple[float, float]]:
    """(wall p50, CPU p50) per operation, every operation once per round in a shuffled order, so
    a busy machine slows each alike."""
    keys = list(operations)
    for key in keys:
        for _ in range(3):
            await operations[key]()
    wall: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    shuffler = random.Random(7)
    for _ in range(repeats):
        shuffler.shuffle(keys)
        for key in keys:
            began, began_cpu = time.perf_counter(), time.process_time()
            await operations[key]()
            wall[key].append(time.perf_counter() - began)
            cpu[key].append(time.process_time() - began_cpu)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in keys}


async def measure(database_url: str, count: int, branches: int, repeats: int) -> dict[str, Any]:
    """Seed the three conversations and measure every read on each."""
    settings = make_settings(database_url, os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1"))
    setup = create_engine(settings, null_pool=True)
    await reset_schema(setup) if "postgresql" in database_url else await upgrade_async(setup)
    await setup.dispose()
    engine = create_engine(settings)
    codec = CursorCodec(b"bench")
    try:
        conversations = {
            "linear": await _seed(engine, count, 0),
            "branched": await _seed(engine, count, branches),
            "short": await _seed(engine, 1_000, 0),
        }

        def page(cid: uuid.UUID, order: str, after: int | None) -> Callable[[], Awaitable[Any]]:
            async def read() -> Any:
                async with engine.connect() as conn:
                    request = history.PageRequest(after, None, order, 50)
                    result = await history.list_messages(conn, PRINCIPAL, cid, request, codec=codec)
                    assert len(result["data"]) == 50
                    return result

            return read

        def window(cid: uuid.UUID) -> Callable[[], Awaitable[Any]]:
            async def read() -> Any:
                async with engine.connect() as conn:
                    return await memory_manager.context_window(
                        conn, cid, memory_manager.WindowRequest()
                    )

            return read

        operations: dict[tuple[str, str], Callable[[], Awaitable[Any]]] = {}
        for name, cid in conversations.items():
            middle = 500 if name == "short" else count // 2
            operations[name, "newest page"] = page(cid, "desc", None)
            operations[name, "oldest page"] = page(cid, "asc", None)
            operations[name, "middle page"] = page(cid, "asc", middle)
            operations[name, "context window"] = window(cid)
        measured = await _interleaved(operations, repeats)
        figures: dict[str, dict[str, tuple[float, float]]] = {}
        for (name, read), value in measured.items():
            figures.setdefault(name, {})[read] = value
        return figures
    finally:
        await engine.dispose()


def main() -> None:
    """Print the table for one backend."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/branches.db"
    figures = asyncio.run(measure(url, args.messages, args.branches, args.repeats))
    print(f"{url.split(':')[0]}: p50 wall / p50 client CPU in ms; ratios of the wall p50s")
    for read in ("newest page", "oldest page", "middle page", "context window"):
        (lw, lc), (bw, bc), (sw, sc) = (figures[k][read] for k in ("linear", "branched", "short"))
        print(
            f"  {read:15} linear {lw * 1e3:6.2f}/{lc * 1e3:5.2f}  branched {bw * 1e3:6.2f}/"
            f"{bc * 1e3:5.2f}  short {sw * 1e3:6.2f}/{sc * 1e3:5.2f}  branched/linear "
            f"{bw / lw:4.2f} (CPU {bc / lc:4.2f})  linear/short {lw / sw:4.2f} (CPU {lc / sc:4.2f})"
        )


if __name__ == "__main__":
    main()
