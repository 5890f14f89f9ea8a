"""The append under concurrency and refusal: gap-free seqs, exactly one session, and nothing
written by a refused append."""

import asyncio
import uuid

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import (
    conversations_table,
    jobs_table,
    sessions_table,
)
from tests.conftest import create_conversation, new_caller


def caller_tenant(client: httpx.AsyncClient) -> str:
    token = client.headers["Authorization"].partition(" ")[2]
    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["tenant"])


async def _sessions(engine: AsyncEngine, cid: str) -> list[dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(sessions_table).where(sessions_table.c.conversation_id == uuid.UUID(cid))
        )
        return [dict(row) for row in rows.mappings()]


async def test_concurrent_first_messages_start_exactly_one_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    responses = await asyncio.gather(
        *(
            client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"})
            for i in range(20)
        )
    )
    assert [r.status_code for r in responses] == [201] * 20
    assert sorted(r.json()["seq"] for r in responses) == list(range(1, 21))
    sessions = await _sessions(engine, cid)
    assert len(sessions) == 1
    assert sessions[0]["ended_at"] is None
    async with engine.connect() as conn:
        outbox = (
            await conn.execute(
                select(jobs_table.c.message_id).where(
                    jobs_table.c.conversation_id == uuid.UUID(cid),
                    jobs_table.c.kind == "process_message",
                )
            )
        ).all()
    assert len(outbox) == 20  # one processing job per message, written with it


async def test_refused_append_touches_no_session_and_writes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    assert (
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    ).status_code == 201
    before = await _sessions(engine, cid)
    assert (await client.post(f"/api/v1/conversations/{cid}/archive")).status_code == 200
    refused = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "late"})
    assert refused.status_code == 409
    assert await _sessions(engine, cid) == before
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(conversations_table.c.last_seq, conversations_table.c.message_count).where(
                    conversations_table.c.id == uuid.UUID(cid)
                )
            )
        ).one()
        jobs = (
            await conn.execute(
                select(jobs_table.c.id).where(jobs_table.c.conversation_id == uuid.UUID(cid))
            )
        ).all()
    assert tuple(row) == (1, 1)
    assert len(jobs) == 1


async def test_append_to_someone_elses_conversation_is_404_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "mine"})
    before = await _sessions(engine, cid)
    # Same tenant, another user: not theirs, so it does not exist for them.
    intruder = new_caller(tenant=caller_tenant(client))
    response = await client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "intruder"},
        headers=intruder.headers,
    )
    assert response.status_code == 404
    assert await _sessions(engine, cid) == before
    page = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()
    assert [m["content"] for m in page["data"]] == ["mine"]


async def test_fifty_concurrent_appends_get_seqs_one_to_fifty(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    responses = await asyncio.gather(
        *(
            client.post(f"/api/v1/conversations/{cid}/messages", json={"content": f"n{i}"})
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [201] * 50
    assert sorted(r.json()["seq"] for r in responses) == list(range(1, 51))
    page = (await client.get(f"/api/v1/conversations/{cid}/messages", params={"limit": 100})).json()
    assert [m["seq"] for m in page["data"]] == list(range(1, 51))
    assert {m["id"]: m["content"] for m in page["data"]} == {
        r.json()["id"]: r.json()["content"] for r in responses
    }
    async with engine.connect() as conn:
        counters = (
            await conn.execute(
                select(
                    conversations_table.c.last_seq,
                    conversations_table.c.message_count,
                    conversations_table.c.token_count,
                ).where(conversations_table.c.id == uuid.UUID(cid))
            )
        ).one()
    assert tuple(counters) == (50, 50, sum(m["token_count"] for m in page["data"]))
    assert len(await _sessions(engine, cid)) == 1
