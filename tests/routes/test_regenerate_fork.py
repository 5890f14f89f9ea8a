"""Regenerate (a callback to the orchestrator, no message) and fork (a copy of one path)."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import jobs_table
from tests.conftest import (
    Caller,
    app_recording_callbacks,
    create_conversation,
    new_caller,
)
from tests.routes.test_branches import _state, contents, edited_conversation, history, say
from tests.websocket.helpers import SERVICE, start_reply


@pytest.fixture
async def hooked(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The app with an orchestrator callback URL, so callbacks are recorded."""
    async with app_recording_callbacks(settings) as app:
        yield app


async def _deliveries(engine: AsyncEngine, cid: str) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.event_type, deliveries.c.payload)
                .where(deliveries.c.conversation_id == uuid.UUID(cid))
                .order_by(deliveries.c.created_at, deliveries.c.id)
            )
        ).all()
    return [
        (r.event_type, orjson.loads(r.payload) if isinstance(r.payload, str) else r.payload)
        for r in rows
    ]


async def _queues(engine: AsyncEngine, cid: str) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(jobs_table.c.kind, jobs_table.c.queue)
                .where(jobs_table.c.conversation_id == uuid.UUID(cid))
                .order_by(jobs_table.c.created_at, jobs_table.c.id)
            )
        ).all()
    return [(r.kind, r.queue) for r in rows]


async def test_regenerate_asks_the_orchestrator_at_high_priority_and_creates_no_message(
    hooked: FastAPI, caller: Caller
) -> None:
    engine: AsyncEngine = hooked.state.resources.engine
    transport = httpx.ASGITransport(app=hooked)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=caller.headers
    ) as client:
        cid, m = await edited_conversation(client)
        before = await _state(engine, cid)
        sent_before = len(await _deliveries(engine, cid))
        url = f"/api/v1/conversations/{cid}/messages"
        for named in (m["a2"]["id"], m["u2"]["id"]):
            response = await client.post(f"{url}/{named}/regenerate")
            assert response.status_code == 202, response.text
            assert response.json() == {
                "conversation_id": cid,
                "message_id": m["u2"]["id"],
                "status": "requested",
            }
        assert await _state(engine, cid) == before
        sent = (await _deliveries(engine, cid))[sent_before:]
        assert [event for event, _ in sent] == ["message.regenerate_requested"] * 2
        data = sent[0][1]["data"]
        assert data["message_id"] == m["u2"]["id"]
        assert data["message"]["content"] == "u2"
        assert (await _queues(engine, cid))[-1] == ("deliver_callback", "high")
        # The orchestrator answers with a sibling of a2, through the internal API.
        new = await start_reply(client, cid, parent_id=m["u2"]["id"])
        siblings = (await client.get(f"{url}/{new['id']}/siblings")).json()["data"]
        assert [x["id"] for x in siblings] == [m["a2"]["id"], new["id"]]


async def test_regenerate_refuses_what_it_cannot_answer(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller, app: FastAPI
) -> None:
    cid = (await create_conversation(client))["id"]
    system = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "system", "content": "Be brief."},
        headers=SERVICE,
    )
    url = f"/api/v1/conversations/{cid}/messages"
    assert (await client.post(f"{url}/{system.json()['id']}/regenerate")).status_code == 422
    assert (await client.post(f"{url}/{uuid.uuid4()}/regenerate")).status_code == 404
    question = await say(client, cid, "question")
    intruder = new_caller(caller.tenant)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=intruder.headers
    ) as other:
        assert (await other.post(f"{url}/{question['id']}/regenerate")).status_code == 404
    await client.post(f"/api/v1/conversations/{cid}/archive")
    assert (await client.post(f"{url}/{question['id']}/regenerate")).status_code == 409


async def test_a_fork_copies_the_path_with_new_ids_and_leaves_the_source_unchanged(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid, m = await edited_conversation(client)
    source_before = await _state(engine, cid)
    response = await client.post(
        f"/api/v1/conversations/{cid}/fork", json={"message_id": m["a2"]["id"], "title": "Fork"}
    )
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["id"] != cid
    assert fork["title"] == "Fork"
    assert fork["forked_from"] == {"conversation_id": cid, "message_id": m["a2"]["id"]}
    assert (fork["last_seq"], fork["message_count"]) == (4, 4)
    copied = await history(client, fork["id"])
    assert [x["content"] for x in copied] == ["u1", "a1", "u2", "a2"]
    assert [x["seq"] for x in copied] == [1, 2, 3, 4]
    assert fork["active_leaf_id"] == copied[-1]["id"]
    originals = {m[k]["id"] for k in m}
    assert not originals & {x["id"] for x in copied}
    assert [x["parent_id"] for x in copied] == [None, *(x["id"] for x in copied[:-1])]
    assert copied[1]["agent_id"] == m["a1"]["agent_id"]
    assert await _state(engine, cid) == source_before
    assert await contents(client, cid) == ["u1", "a1", "u2'"]
    # Appending to the fork continues its copy.
    more = await say(client, fork["id"], "more")
    assert (more["seq"], more["parent_id"]) == (5, copied[-1]["id"])


async def test_a_fork_of_a_fork_defaults_to_the_active_leaf_and_records_its_source(
    client: httpx.AsyncClient,
) -> None:
    cid, _ = await edited_conversation(client)
    first = (await client.post(f"/api/v1/conversations/{cid}/fork", json={})).json()
    assert await contents(client, first["id"]) == ["u1", "a1", "u2'"]
    await say(client, first["id"], "only in the first fork")
    second = await client.post(f"/api/v1/conversations/{first['id']}/fork", json={})
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["forked_from"]["conversation_id"] == first["id"]
    assert await contents(client, body["id"]) == ["u1", "a1", "u2'", "only in the first fork"]
    listed = (await client.get("/api/v1/conversations")).json()["data"]
    assert {c["id"] for c in listed} >= {cid, first["id"], body["id"]}


async def test_a_fork_refuses_foreign_and_unknown_messages_and_other_users(
    client: httpx.AsyncClient, caller: Caller, app: FastAPI
) -> None:
    cid, m = await edited_conversation(client)
    other = (await create_conversation(client))["id"]
    foreign = await say(client, other, "elsewhere")
    before = len((await client.get("/api/v1/conversations")).json()["data"])
    for message_id in (foreign["id"], str(uuid.uuid4())):
        response = await client.post(
            f"/api/v1/conversations/{cid}/fork", json={"message_id": message_id}
        )
        assert response.status_code == 422, response.text
    empty = (await create_conversation(client))["id"]
    assert (await client.post(f"/api/v1/conversations/{empty}/fork", json={})).status_code == 422
    intruder = new_caller(caller.tenant)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=intruder.headers
    ) as stranger:
        response = await stranger.post(f"/api/v1/conversations/{cid}/fork", json={})
        assert response.status_code == 404
    assert len((await client.get("/api/v1/conversations")).json()["data"]) == before + 1
    assert m["u1"]["id"]


async def test_a_forks_copies_are_found_by_search_like_the_originals(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    word = f"zebra{uuid.uuid4().hex[:8]}"
    await say(client, cid, f"I saw a {word} today")
    fork = (await client.post(f"/api/v1/conversations/{cid}/fork", json={})).json()
    found = (await client.get("/api/v1/search", params={"q": word})).json()["data"]
    assert sorted(hit["conversation_id"] for hit in found) == sorted([cid, fork["id"]])
