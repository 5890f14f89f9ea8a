"""Search figures: p50 of a two-word query over one tenant's history, at two sizes, and the
share of an append's CPU that the index costs.

    python -m bench.search --backend sqlite|postgres --messages 10000 1000000 [--database-url URL]

Seeds one user's history directly with SQL (search columns computed by the service's own
``index_values``), then runs ``services.search.search`` in read units of work, as the route does.
"""

import argparse
import asyncio
import hashlib
import itertools
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine, read_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.tables import Base
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.services.auth import Principal
from conversation_service.services.search import SearchFilters, search
from conversation_service.services.search_text import index_values
from conversation_service.services.unit_of_work import Units
from conversation_service.utils.clock import new_id
from conversation_service.utils.cursors import CursorCodec

PER_CONVERSATION = 1000
VOCABULARY = [f"w{i:04d}" for i in range(3000)]
# Zipf-like frequencies, accumulated once: ``choices`` would otherwise re-add 3,000 weights
# for every message.
CUMULATIVE = list(itertools.accumulate(1 / (i + 1) for i in range(len(VOCABULARY))))
# Words of the selective query: only in the first 10,000 messages, a few times.
RARE = ("zephyr", "quokka")
# Messages a millisecond apart, the newest last: searches read newest first, and a history
# written in one instant is not one a user has.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
QUERIES = {
    "selective": "zephyr quokka",
    "two ~1% words": "w0100 w0101",
    "two ~50% words": "w0001 w0002",
}


class NoJobs:
    """No job queue: the bench runs use cases without their side jobs."""

    def submit(self, specs: Any) -> None:
        return None


class NoEvents:
    """No event bus: nothing subscribes during a bench."""

    async def publish_safely(self, conversation_id: Any, event_type: str, data: Any) -> None:
        return None


def _content(rng: random.Random, index: int) -> str:
    words = rng.choices(VOCABULARY, cum_weights=CUMULATIVE, k=12)
    if index < 10_000 and index % 2000 == 7:
        words[3:3] = list(RARE)
    return " ".join(words)


async def seed(units: Units, principal: Principal, total: int, done: int) -> None:
    rng = random.Random(done)
    index = done
    while index < total:
        async with units.engine.begin() as conn:
            cid = new_id()
            started = EPOCH + timedelta(milliseconds=index)
            await conn.execute(
                insert(conversations).values(
                    id=cid,
                    tenant_id=principal.tenant_id,
                    user_id=principal.user_id,
                    agent_id="agent",
                    agents=["agent"],
                    title=None,
                    status="active",
                    priority="normal",
                    metadata={},
                    tags=[],
                    last_seq=PER_CONVERSATION,
                    message_count=PER_CONVERSATION,
                    token_count=0,
                    created_at=started,
                    updated_at=started,
                    **index_values("", None),
                )
            )
            rows = []
            for seq in range(1, PER_CONVERSATION + 1):
                content = _content(rng, index)
                at = EPOCH + timedelta(milliseconds=index)
                rows.append(
                    {
                        "id": new_id(),
                        "conversation_id": cid,
                        "tenant_id": principal.tenant_id,
                        "seq": seq,
                        "role": "user",
                        "content": content,
                        "status": "completed",
                        "metadata": {},
                        "token_count": 12,
                        "tokens_cl100k": 16,
                        "tokens_o200k": 16,
                        "always_include": False,
                        "language": "en",
                        "created_at": at,
                        "updated_at": at,
                        **index_values(content, "en"),
                    }
                )
                index += 1
            await conn.execute(insert(messages), rows)


async def measure(
    units: Units, principal: Principal, q: str, repeats: int
) -> tuple[float, list[str]]:
    codec = CursorCodec(b"k")
    times = []
    result: list[str] = []
    for _ in range(repeats):
        start = time.perf_counter()
        async with units.read() as uow:
            page = await search(
                uow, principal, q, SearchFilters(), limit=20, cursor=None, codec=codec
            )
        times.append(time.perf_counter() - start)
        result = [str(hit["message_id"]) for hit in page["data"]]
    return statistics.median(times) * 1000, result


def append_share() -> tuple[float, float]:
    """µs of ``index_values`` for a typical 12-word message, and for a 400-character one."""
    rng = random.Random(1)
    short = _content(rng, 1)
    long = " ".join(rng.choices(VOCABULARY, k=70))
    out = []
    for content in (short, long):
        n = 20_000
        start = time.process_time()
        for _ in range(n):
            index_values(content, "en")
        out.append((time.process_time() - start) / n * 1e6)
    return out[0], out[1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--database-url")
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/search.db"
    settings = ConversationSettings(database_url=url)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade_async(engine)
    units = Units(engine, NoJobs(), NoEvents(), reader=read_engine(engine))
    principal = Principal(tenant_id="bench", user_id=f"u-{uuid.uuid4().hex[:8]}")
    done = 0
    print(f"backend={args.backend}")
    for total in sorted(args.messages):
        start = time.perf_counter()
        await seed(units, principal, total, done)
        done = total
        if engine.dialect.name == "postgresql":
            # As autovacuum would: flush the GIN pending list the bulk seed filled (until then
            # every search scans it linearly) and refresh the planner's statistics.
            vacuum = engine.execution_options(isolation_level="AUTOCOMMIT")
            async with vacuum.connect() as conn:
                await conn.execute(text("VACUUM ANALYZE messages"))
                await conn.execute(text("VACUUM ANALYZE conversations"))
        print(f"seeded {total:,} messages in {time.perf_counter() - start:.0f} s")
        for name, q in QUERIES.items():
            p50, hits = await measure(units, principal, q, args.repeats)
            digest = hashlib.sha256(",".join(hits).encode()).hexdigest()[:12]
            print(f"  {name:16} q={q!r:16} p50 {p50:7.2f} ms  hits {len(hits)}  ids {digest}")
    short, long = append_share()
    print(f"index_values: {short:.1f} µs (12 words), {long:.1f} µs (70 words)")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
