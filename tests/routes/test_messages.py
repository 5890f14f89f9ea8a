"""Message routes: append (with Idempotency-Key), history pages, get, metadata patch, delete."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import idempotency_table, messages_table
from conversation_service.services.auth import Principal
from conversation_service.services.idempotency import IdempotencyScope
from tests.conftest import Caller, create_conversation


async def post_message(
    client: httpx.AsyncClient, cid: str, content: str = "hello", **kwargs: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": content}, **kwargs
    )


async def count_messages(engine: AsyncEngine, cid: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(messages_table.c.conversation_id == uuid.UUID(cid))
        )
    return int(count or 0)


async def test_append_returns_user_message_with_seq(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    response = await client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={
            "content": "Hola, ¿qué tal?",
            "metadata": {"client": "web"},
            "content_parts": [{"type": "text", "text": "Hola"}],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["role"] == "user"
    assert body["seq"] == 1
    assert body["status"] == "completed"
    assert body["content"] == "Hola, ¿qué tal?"
    assert body["content_parts"] == [{"type": "text", "text": "Hola"}]
    assert body["metadata"] == {"client": "web"}
    assert body["created_at"] == body["updated_at"]
    fetched = await client.get(f"/api/v1/conversations/{cid}/messages/{body['id']}")
    assert fetched.json() == body
    conversation = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert conversation["last_seq"] == 1
    assert conversation["message_count"] == 1
    assert conversation["last_message_at"] == body["created_at"]


async def test_fifty_concurrent_appends_get_seqs_one_to_fifty(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    responses = await asyncio.gather(*(post_message(client, cid, f"m{i}") for i in range(50)))
    assert {r.status_code for r in responses} == {201}
    assert sorted(r.json()["seq"] for r in responses) == list(range(1, 51))
    async with engine.connect() as conn:
        seqs = (
            await conn.scalars(
                select(messages_table.c.seq)
                .where(messages_table.c.conversation_id == uuid.UUID(cid))
                .order_by(messages_table.c.seq)
            )
        ).all()
    assert list(seqs) == list(range(1, 51))


async def test_idempotent_retry_returns_same_body_and_creates_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    headers = {"Idempotency-Key": "retry-1"}
    first = await post_message(client, cid, "once", headers=headers)
    second = await post_message(client, cid, "once", headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert await count_messages(engine, cid) == 1


async def test_idempotency_key_with_different_body_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    other = (await create_conversation(client))["id"]
    headers = {"Idempotency-Key": "reused"}
    assert (await post_message(client, cid, "a", headers=headers)).status_code == 201
    changed = await post_message(client, cid, "b", headers=headers)
    assert changed.status_code == 422
    assert changed.json()["type"].endswith("/idempotency-key-reused")
    elsewhere = await post_message(client, other, "a", headers=headers)
    assert elsewhere.status_code == 422
    assert await count_messages(engine, cid) == 1
    assert await count_messages(engine, other) == 0


async def test_idempotency_key_in_flight_in_this_process_is_409(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    principal = Principal(tenant_id=caller.tenant, user_id=caller.user)
    with app.state.resources.in_flight.hold(principal, "busy"):
        response = await post_message(client, cid, headers={"Idempotency-Key": "busy"})
    assert response.status_code == 409
    assert response.json()["type"].endswith("/idempotency-key-in-flight")
    assert await count_messages(engine, cid) == 0
    # Once the first request is done, the key works.
    assert (await post_message(client, cid, headers={"Idempotency-Key": "busy"})).status_code == 201


async def test_idempotency_key_in_flight_on_another_replica_is_409(
    client: httpx.AsyncClient, caller: Caller, engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("cross-replica in-flight detection uses PostgreSQL advisory locks")
    cid = (await create_conversation(client))["id"]
    principal = Principal(tenant_id=caller.tenant, user_id=caller.user)
    lock_id = IdempotencyScope.build(principal, "replica", {}).lock_id()
    async with engine.connect() as other_replica:
        await other_replica.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
        response = await post_message(client, cid, headers={"Idempotency-Key": "replica"})
        await other_replica.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
    assert response.status_code == 409
    assert await count_messages(engine, cid) == 0


async def test_failed_append_leaves_no_idempotency_record(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    missing = uuid.uuid4()
    response = await post_message(client, str(missing), headers={"Idempotency-Key": "ghost"})
    assert response.status_code == 404
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(idempotency_table.c.tenant_id == caller.tenant)
        )
    assert count == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 100_001},
        {"content": "nul \x00"},
        {"content": "hi", "role": "assistant"},
        {"content": "hi", "metadata": []},
        {"content": "hi", "content_parts": [{"type": "video"}]},
        {"content": "hi", "parent_id": "not-a-uuid"},
    ],
)
async def test_invalid_message_bodies_are_422_and_write_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    cid = (await create_conversation(client))["id"]
    response = await client.post(f"/api/v1/conversations/{cid}/messages", json=body)
    assert response.status_code == 422, response.text
    assert await count_messages(engine, cid) == 0


async def test_history_pages_by_seq_both_orders(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    for i in range(7):
        await post_message(client, cid, f"m{i}")
    url = f"/api/v1/conversations/{cid}/messages"
    first = (await client.get(url, params={"limit": 3})).json()
    assert [m["seq"] for m in first["data"]] == [1, 2, 3]
    assert first["has_more"] is True
    rest: list[int] = []
    cursor = first["next_cursor"]
    while cursor:
        page = (await client.get(url, params={"limit": 3, "cursor": cursor})).json()
        rest += [m["seq"] for m in page["data"]]
        cursor = page["next_cursor"]
    assert rest == [4, 5, 6, 7]
    newest = (await client.get(url, params={"order": "desc", "limit": 2})).json()
    assert [m["seq"] for m in newest["data"]] == [7, 6]
    older = (
        await client.get(
            url, params={"order": "desc", "limit": 10, "cursor": newest["next_cursor"]}
        )
    ).json()
    assert [m["seq"] for m in older["data"]] == [5, 4, 3, 2, 1]
    assert older["has_more"] is False
    window = (await client.get(url, params={"after_seq": 2, "before_seq": 5})).json()
    assert [m["seq"] for m in window["data"]] == [3, 4]
    empty = await client.get(url, params={"after_seq": 100})
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "has_more": False, "next_cursor": None}


async def test_history_rejects_cursor_of_another_conversation(client: httpx.AsyncClient) -> None:
    a = (await create_conversation(client))["id"]
    b = (await create_conversation(client))["id"]
    for _ in range(3):
        await post_message(client, a)
    cursor = (await client.get(f"/api/v1/conversations/{a}/messages", params={"limit": 1})).json()[
        "next_cursor"
    ]
    response = await client.get(f"/api/v1/conversations/{b}/messages", params={"cursor": cursor})
    assert response.status_code == 400
    negative = await client.get(f"/api/v1/conversations/{a}/messages", params={"after_seq": -1})
    assert negative.status_code == 422


async def test_patch_merges_message_metadata(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    message = (
        await client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "hi", "metadata": {"a": 1, "b": 2}},
        )
    ).json()
    response = await client.patch(
        f"/api/v1/conversations/{cid}/messages/{message['id']}",
        json={"metadata": {"a": None, "pinned": True}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"b": 2, "pinned": True}
    assert response.json()["content"] == "hi"


async def test_deleted_message_disappears_and_seq_stays_gap_free(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    ids = [(await post_message(client, cid, f"m{i}")).json()["id"] for i in range(3)]
    deleted = await client.delete(f"/api/v1/conversations/{cid}/messages/{ids[1]}")
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/conversations/{cid}/messages/{ids[1]}")).status_code == 404
    page = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()
    assert [m["seq"] for m in page["data"]] == [1, 3]
    assert (await post_message(client, cid)).json()["seq"] == 4
    async with engine.connect() as conn:
        content = await conn.scalar(
            select(messages_table.c.content).where(messages_table.c.id == uuid.UUID(ids[1]))
        )
    assert content == ""  # erased, not just hidden
    conversation = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert conversation["message_count"] == 3
