"""The append's two paths: for the common case one statement on PostgreSQL or one transaction
of the writer thread on a SQLite file, the general transaction otherwise. Both must agree on
seqs, sessions, the rows they write and what a refused append leaves."""

import asyncio
import re
import uuid
from typing import Any

import httpx
import jwt
import orjson
from fastapi import FastAPI
from sqlalchemy import Table, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import (
    callback_deliveries_table,
    conversations_table,
    jobs_table,
    messages_table,
    sessions_table,
)
from conversation_service.models.message import MessageCreate
from conversation_service.resources import Resources
from conversation_service.services import fast_append, message_store
from conversation_service.services.auth import Principal
from tests.conftest import Caller, create_conversation, new_caller


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


async def test_a_sqlite_file_database_appends_on_the_writer_thread(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    assert (resources.writer is not None) == (resources.engine.dialect.name == "sqlite")


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


async def _raw_rows(engine: AsyncEngine, table: Table, cid: str) -> list[dict[str, Any]]:
    # Unconverted driver values: on SQLite, the stored text of ids, times and JSON.
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(literal_column("*"))
            .select_from(table)
            .where(table.c.conversation_id == uuid.UUID(cid))
            .order_by(table.c.id)
        )
        return [dict(row) for row in rows.mappings()]


def _shape(value: Any) -> Any:
    """A value with its digits masked: equal for ids and times written in the same format."""
    return re.sub(r"[0-9a-f]", "0", value) if isinstance(value, str) else type(value).__name__


# Columns that differ between any two appends (ids, times, seqs, ids inside JSON).
_VARYING = {"id", "message_id", "seq", "args", "payload", "created_at", "updated_at"}


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    return {name: _shape(value) if name in _VARYING else value for name, value in row.items()}


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    stored = row["payload"]
    payload: dict[str, Any] = orjson.loads(stored) if isinstance(stored, str) else stored
    return payload


async def _append_fast(
    resources: Resources, principal: Principal, cid: str, settings: ConversationSettings
) -> fast_append.FastAppend | None:
    body = MessageCreate(content="the same words", metadata={"channel": "web", "n": [1, 2.5]})
    if resources.writer is not None:
        return await fast_append.append_sqlite(
            resources.writer, principal, uuid.UUID(cid), body, settings
        )
    async with resources.reads.connection() as conn:
        return await fast_append.append_pg(conn, principal, uuid.UUID(cid), body, settings)


async def test_fast_append_writes_the_rows_the_general_path_writes(
    client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine, caller: Caller
) -> None:
    resources: Resources = app.state.resources
    settings = resources.settings.model_copy(
        update={"orchestrator_callback_url": "http://127.0.0.1:9/hooks"}
    )
    principal = Principal(tenant_id=caller.tenant, user_id=caller.user)
    cid = (await create_conversation(client))["id"]
    async with engine.begin() as conn:
        general = await message_store.append_user_message(
            conn,
            principal,
            uuid.UUID(cid),
            MessageCreate(content="the same words", metadata={"channel": "web", "n": [1, 2.5]}),
            settings=settings,
        )
    fast = await _append_fast(resources, principal, cid, settings)
    assert fast is not None
    assert fast.session_id is not None  # the general path's session, extended
    assert fast.message["seq"] == general.message["seq"] + 1
    assert [spec.kind for spec in fast.jobs] == [spec.kind for spec in general.jobs]

    first, second = await _raw_rows(engine, messages_table, cid)
    assert (first["seq"], second["seq"]) == (1, 2)
    assert _masked(first) == _masked(second)
    stored = await client.get(f"/api/v1/conversations/{cid}/messages/{fast.message['id']}")
    assert stored.json() == fast.message
    jobs = await _raw_rows(engine, jobs_table, cid)
    assert len(jobs) == 4
    by_kind = sorted(jobs, key=lambda job: (job["kind"], job["created_at"]))
    for general_job, fast_job in (by_kind[0:2], by_kind[2:4]):
        assert _masked(general_job) == _masked(fast_job)
    deliveries = await _raw_rows(engine, callback_deliveries_table, cid)
    assert len(deliveries) == 2
    assert _masked(deliveries[0]) == _masked(deliveries[1])
    payloads = [_payload(delivery) for delivery in deliveries]
    assert [p["data"]["message"]["seq"] for p in payloads] == [1, 2]
    assert payloads[1]["data"]["message"] == fast.message
    for payload in payloads:
        del payload["timestamp"]
        for name in ("id", "seq", "created_at", "updated_at"):
            del payload["data"]["message"][name]
    assert payloads[0] == payloads[1]
