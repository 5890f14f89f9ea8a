"""Feedback on replies: give, replace, withdraw; shown on the message; the event and the signed
callback; the agent's aggregates; refusals that change nothing (both databases)."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.db.tables import feedback_table
from conversation_service.events.log import read_after
from tests.conftest import (
    Caller,
    app_recording_callbacks,
    create_conversation,
    new_caller,
)
from tests.websocket.helpers import SERVICE


@pytest.fixture(scope="module")
async def app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The app recording orchestrator callbacks (never delivered: nothing listens there)."""
    async with app_recording_callbacks(settings) as app:
        yield app


async def _reply(client: httpx.AsyncClient, cid: str, agent: str = "agent-1") -> dict[str, Any]:
    response = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": "Here you are", "agent_id": agent},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _url(cid: str, mid: str) -> str:
    return f"/api/v1/conversations/{cid}/messages/{mid}/feedback"


async def _feedback_events(app: FastAPI, cid: str) -> list[dict[str, Any]]:
    redis: Redis = app.state.resources.redis
    chunk = await read_after(redis, cid, None, count=1000)
    events = [orjson.loads(entry.frame) for entry in chunk.entries]
    return [e["data"] for e in events if e["type"] == "message.feedback"]


async def _callbacks(engine: AsyncEngine, cid: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.payload)
            .where(
                deliveries.c.conversation_id == uuid.UUID(cid),
                deliveries.c.event_type == "message.feedback",
            )
            .order_by(deliveries.c.created_at, deliveries.c.id)
        )
        return [row.payload for row in rows]


async def test_feedback_is_given_replaced_shown_and_withdrawn_with_its_side_effects(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    engine: AsyncEngine = app.state.resources.engine
    cid = (await create_conversation(client))["id"]
    mid = (await _reply(client, cid))["id"]

    given = await client.put(
        _url(cid, mid), json={"rating": 1, "comment": "Spot on", "tags": ["helpful"]}
    )
    assert given.status_code == 200, given.text
    assert given.json() == {"rating": 1, "comment": "Spot on", "tags": ["helpful"]}
    replaced = await client.put(_url(cid, mid), json={"rating": -1})
    assert replaced.json() == {"rating": -1, "comment": None, "tags": []}

    shown = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
    assert shown["feedback"] == {"rating": -1, "comment": None, "tags": []}
    [listed] = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert listed["feedback"] == shown["feedback"]

    assert (await client.delete(_url(cid, mid))).status_code == 204
    assert (await client.delete(_url(cid, mid))).status_code == 204  # nothing left: no-op
    shown = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
    assert shown["feedback"] is None

    expected = [
        {"rating": 1, "comment": "Spot on", "tags": ["helpful"]},
        {"rating": -1, "comment": None, "tags": []},
        None,
    ]
    events = await _feedback_events(app, cid)
    assert [e["feedback"] for e in events] == expected
    assert {(e["message_id"], e["agent_id"], e["user_id"]) for e in events} == {
        (mid, "agent-1", caller.user)
    }
    sent = await _callbacks(engine, cid)
    assert [p["type"] for p in sent] == ["message.feedback"] * 3
    assert [p["data"]["feedback"] for p in sent] == expected
    assert sent[0]["data"]["tenant_id"] == caller.tenant


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rating": 0},
        {"rating": 2},
        {"rating": True},
        {"rating": 1.0},
        {"rating": "1"},
        {"rating": 1, "comment": "x" * 2001},
        {"rating": 1, "tags": ["a,b"]},
        {"rating": 1, "tags": ["t"] * 17},
        {"rating": 1, "extra": True},
    ],
)
async def test_invalid_feedback_is_422_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await _reply(client, cid))["id"]
    response = await client.put(_url(cid, mid), json=body)
    assert response.status_code == 422, response.text
    async with app.state.resources.engine.connect() as conn:
        stored = await conn.execute(
            select(feedback_table.c.rating).where(feedback_table.c.message_id == uuid.UUID(mid))
        )
        assert stored.first() is None


async def test_feedback_only_on_the_callers_own_replies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    cid = (await create_conversation(client))["id"]
    mine = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    own = await client.put(_url(cid, mine.json()["id"]), json={"rating": 1})
    assert own.status_code == 422  # a user message is not a reply
    mid = (await _reply(client, cid))["id"]
    assert (await client.put(_url(cid, str(uuid.uuid4())), json={"rating": 1})).status_code == 404
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers=new_caller().headers,
    ) as stranger:
        assert (await stranger.put(_url(cid, mid), json={"rating": -1})).status_code == 404
        assert (await stranger.delete(_url(cid, mid))).status_code == 404
    deleted = await client.delete(f"/api/v1/conversations/{cid}/messages/{mid}")
    assert deleted.status_code == 204
    assert (await client.put(_url(cid, mid), json={"rating": 1})).status_code == 404
    assert await _feedback_events(app, cid) == []


async def test_agent_aggregates_count_a_window_and_list_the_newest_comments(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    cid = (await create_conversation(client, agent_id=agent))["id"]
    replies = [(await _reply(client, cid, agent))["id"] for _ in range(4)]
    for mid, rating, comment in zip(
        replies, [1, 1, -1, 1], ["great", None, "wrong answer", ""], strict=True
    ):
        response = await client.put(_url(cid, mid), json={"rating": rating, "comment": comment})
        assert response.status_code == 200, response.text
    other = (await _reply(client, cid, "someone-else"))["id"]
    await client.put(_url(cid, other), json={"rating": -1, "comment": "not counted"})

    url = f"/internal/v1/agents/{agent}/feedback"
    summary = await client.get(url, params={"tenant": caller.tenant}, headers=SERVICE)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert (body["up"], body["down"]) == (3, 1)
    assert [c["comment"] for c in body["latest_comments"]] == ["wrong answer", "great"]
    assert body["latest_comments"][0]["message_id"] == replies[2]

    later = await client.get(
        url,
        params={"tenant": caller.tenant, "from": "2999-01-01T00:00:00Z"},
        headers=SERVICE,
    )
    assert later.json() == {"up": 0, "down": 0, "latest_comments": []}
    earlier = await client.get(
        url, params={"tenant": caller.tenant, "to": "2000-01-01T00:00:00Z"}, headers=SERVICE
    )
    assert (earlier.json()["up"], earlier.json()["down"]) == (0, 0)
    elsewhere = await client.get(url, params={"tenant": "another-tenant"}, headers=SERVICE)
    assert elsewhere.json()["up"] == 0
    assert (await client.get(url, params={"tenant": caller.tenant})).status_code == 401
    bad = await client.get(url, params={"tenant": caller.tenant, "from": "soon"}, headers=SERVICE)
    assert bad.status_code == 422
    assert (await client.get(url, headers=SERVICE)).status_code == 422
