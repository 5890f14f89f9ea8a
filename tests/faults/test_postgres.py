"""PostgreSQL connections terminated (``pg_terminate_backend``) while users append messages.

Only the app's own connections are terminated (the engine's, whose server pids are recorded as
the pool opens them), over and over, while concurrent clients post
messages with Idempotency-Keys and retry whatever was not accepted, and others read history pages
and context windows. Afterwards every accepted message is stored exactly once with a gap-free
``seq``, every refused attempt and read was a clean 503 problem (never a 500, never a hang), and
the pools serve again without a restart.
"""

import asyncio
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import messages_table
from conversation_service.main import create_app
from tests.conftest import (
    INTERNAL_KEY,
    POSTGRES_URL,
    create_conversation,
    make_settings,
    new_caller,
)

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_POSTGRES_URL")

WRITERS = 6
MESSAGES_EACH = 20
MAX_TRIES = 60


@pytest.fixture
async def pg_app(settings: ConversationSettings) -> AsyncIterator[tuple[FastAPI, set[int]]]:
    """An app on PostgreSQL whose connections' server pids are recorded as they open."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    app = create_app(
        make_settings(
            settings.database_url,
            settings.effective_redis_url(),
            rate_limit_messages="100000/minute",
            rate_limit_requests="100000/minute",
        )
    )
    pids: set[int] = set()
    async with app.router.lifespan_context(app):
        engine = app.state.resources.engine

        def record(dbapi_connection: Any, _record: Any) -> None:
            pids.add(dbapi_connection.driver_connection.get_server_pid())

        event.listen(engine.sync_engine, "connect", record)
        # Connections opened before the listener would escape it.
        await engine.dispose()
        yield app, pids


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_terminated_connections_lose_no_accepted_message_and_duplicate_none(
    pg_app: tuple[FastAPI, set[int]],
) -> None:
    app, pids = pg_app
    caller = new_caller()
    transport = httpx.ASGITransport(app=app)
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=caller.headers, timeout=30
    ) as client:
        conversations = [(await create_conversation(client))["id"] for _ in range(WRITERS)]

        async def write(cid: str) -> list[str]:
            accepted = []
            for n in range(MESSAGES_EACH):
                key = f"{cid}-{n}"
                for attempt in range(MAX_TRIES):
                    response = await client.post(
                        f"/api/v1/conversations/{cid}/messages",
                        json={"content": key},
                        headers={"Idempotency-Key": key},
                    )
                    statuses[response.status_code] += 1
                    if response.status_code == 201:
                        accepted.append(response.json()["id"])
                        break
                    assert response.status_code in (409, 503), response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    # As a client honouring Retry-After would, backing off (capped).
                    await asyncio.sleep(min(0.2, 0.01 * 2**attempt))
                else:
                    raise AssertionError(f"{key} never accepted")
            return accepted

        killer_conn = await asyncpg.connect(asyncpg_dsn(os.environ["TEST_POSTGRES_URL"]))
        kills = 0
        done = asyncio.Event()

        async def kill_repeatedly() -> None:
            nonlocal kills
            while not done.is_set():
                terminated = await killer_conn.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ok "
                    "FROM unnest($1::int[]) AS pid) t WHERE ok",
                    sorted(pids),
                )
                kills += int(terminated)
                # Kills come at irregular intervals, as failovers do: a first message's longer
                # transaction (it also starts a session) gets a window to commit in.
                await asyncio.sleep(random.uniform(0.05, 0.3))

        read_statuses: Counter[int] = Counter()

        async def read(cid: str) -> None:
            while not done.is_set():
                for path in (
                    f"/api/v1/conversations/{cid}/messages",
                    f"/internal/v1/conversations/{cid}/context",
                ):
                    headers = service if "internal" in path else None
                    response = await client.get(path, headers=headers)
                    read_statuses[response.status_code] += 1
                    assert response.status_code in (200, 503), response.text
                await asyncio.sleep(0.01)

        service = {"Authorization": f"Bearer {INTERNAL_KEY}"}
        killer = asyncio.create_task(kill_repeatedly())
        readers = [asyncio.create_task(read(cid)) for cid in conversations[:2]]
        try:
            async with asyncio.timeout(240):  # a guard against a hang, not a timing
                written = await asyncio.gather(*(write(cid) for cid in conversations))
        finally:
            done.set()
            await killer
            await asyncio.gather(*readers)
            await killer_conn.close()

        # The pool recovers without a restart. No pre-ping (it would cost every checkout a round
        # trip, about 0.2 ms here): the one request that meets a connection killed by the last
        # round gets a 503, which invalidates the whole pool, and everything after it works.
        # ``GET /conversations/{id}`` reads through the engine's pool (the one whose connections
        # were killed); the message list is read through the same pool.
        after: Counter[int] = Counter()
        for cid in conversations * 6:
            after[(await client.get(f"/api/v1/conversations/{cid}")).status_code] += 1
            after[(await client.get(f"/api/v1/conversations/{cid}/messages")).status_code] += 1
        assert after[503] <= 1, after
        assert after[200] >= len(conversations) * 12 - 1, after

    assert kills > 0, "no connection was terminated: the test proved nothing"
    assert read_statuses[200] > 0, read_statuses
    assert set(read_statuses) <= {200, 503}, read_statuses
    assert statuses[503] > 0, "no request met a terminated connection"
    assert statuses[500] == 0
    async with app.state.resources.engine.connect() as conn:
        for cid, accepted in zip(conversations, written, strict=True):
            rows = (
                await conn.execute(
                    select(messages_table.c.id, messages_table.c.seq, messages_table.c.content)
                    .where(messages_table.c.conversation_id == uuid.UUID(cid))
                    .order_by(messages_table.c.seq)
                )
            ).all()
            assert [row.seq for row in rows] == list(range(1, MESSAGES_EACH + 1))
            assert [row.content for row in rows] == [f"{cid}-{n}" for n in range(MESSAGES_EACH)]
            assert sorted(str(row.id) for row in rows) == sorted(accepted)
