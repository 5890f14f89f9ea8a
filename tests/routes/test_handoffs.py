"""Handoffs between agents, against the reference orchestrator running for real: validation,
the history line, tracked context, events and the signed callback, races and retries."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
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
from conversation_service.events.log import read_after
from conversation_service.main import create_app
from tests.conftest import create_conversation, make_settings
from tests.orchestrator_server import run_orchestrator
from tests.websocket.helpers import SERVICE, complete, post_deltas, start_reply

CALLBACK_URL = "http://127.0.0.1:9/hooks"


@pytest.fixture(scope="module")
def orchestrator_url() -> Iterator[str]:
    """The reference orchestrator (knows demo-assistant, support-agent, retired-agent)."""
    with run_orchestrator() as url:
        yield url


@pytest.fixture
async def app(settings: ConversationSettings, orchestrator_url: str) -> AsyncIterator[FastAPI]:
    """The app validating agents through the orchestrator and recording callbacks."""
    configured = make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        orchestrator_url=orchestrator_url,
        orchestrator_callback_url=CALLBACK_URL,
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        yield app


async def event_log(app: FastAPI, cid: str) -> list[dict[str, Any]]:
    redis: Redis = app.state.resources.redis
    chunk = await read_after(redis, cid, None, count=10_000)
    return [orjson.loads(entry.frame) for entry in chunk.entries]


async def callbacks_of(engine: AsyncEngine, cid: str) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.event_type, deliveries.c.payload)
            .where(deliveries.c.conversation_id == uuid.UUID(cid))
            .order_by(deliveries.c.created_at, deliveries.c.id)
        )
        return [(row.event_type, row.payload) for row in rows]


async def handoff(client: httpx.AsyncClient, cid: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"/internal/v1/conversations/{cid}/handoff",
        json=body,
        headers={**SERVICE, **body.pop("headers", {})},
    )


async def test_a_handoff_moves_the_conversation_and_records_it_everywhere(
    client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    response = await handoff(
        client,
        cid,
        to_agent_id="support-agent",
        reason="asked for support",
        context={"user_name": "Ana"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation"]["agent_id"] == "support-agent"
    assert body["conversation"]["agents"] == ["demo-assistant", "support-agent"]
    line = body["message"]
    assert (line["role"], line["metadata"]["type"]) == ("system", "handoff")
    assert line["metadata"]["context"] == {"user_name": "Ana"}
    assert line["content"] == (
        "Conversation handed off from demo-assistant to support-agent: asked for support"
    )
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert [m["id"] for m in history] == [line["id"]]
    tracked = await client.get(f"/internal/v1/conversations/{cid}/tracked-context", headers=SERVICE)
    assert tracked.json()["data"]["active_agent"] == "support-agent"
    events = await event_log(app, cid)
    assert [e["type"] for e in events] == [
        "message.created",
        "context.updated",
        "conversation.agent_changed",
    ]
    changed = events[-1]["data"]
    assert (changed["from_agent_id"], changed["to_agent_id"]) == ("demo-assistant", "support-agent")
    sent = await callbacks_of(engine, cid)
    assert [event for event, _ in sent] == ["conversation.created", "conversation.agent_changed"]
    assert sent[-1][1]["data"] == changed
    reply = await client.post(
        f"/internal/v1/conversations/{cid}/messages",
        json={"role": "assistant", "content": "Hi Ana"},
        headers=SERVICE,
    )
    assert reply.json()["agent_id"] == "support-agent"


@pytest.mark.parametrize(
    ("agent", "code"), [("no-such-agent", "unknown-agent"), ("retired-agent", "agent-not-usable")]
)
async def test_a_handoff_to_an_unknown_or_retired_agent_answers_422_and_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, agent: str, code: str
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    response = await handoff(client, cid, to_agent_id=agent)
    assert response.status_code == 422
    assert response.json()["type"].endswith(code)
    conversation = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert conversation["agent_id"] == "demo-assistant"
    assert await event_log(app, cid) == []


async def test_a_handoff_of_an_unknown_conversation_answers_404(client: httpx.AsyncClient) -> None:
    response = await handoff(client, str(uuid.uuid4()), to_agent_id="support-agent")
    assert response.status_code == 404


async def test_from_agent_id_that_no_longer_holds_it_answers_409_naming_the_holder(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    response = await handoff(
        client, cid, to_agent_id="demo-assistant", from_agent_id="support-agent"
    )
    assert response.status_code == 409
    problem = response.json()
    assert problem["current_agent_id"] == "demo-assistant"
    assert "demo-assistant holds the conversation" in problem["detail"]


async def test_of_two_racing_handoffs_from_the_same_agent_exactly_one_wins(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    results = await asyncio.gather(
        *(
            handoff(client, cid, to_agent_id="support-agent", from_agent_id="demo-assistant")
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in results) == [200, 409, 409, 409]
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert len(history) == 1
    sent = await callbacks_of(engine, cid)
    assert [event for event, _ in sent].count("conversation.agent_changed") == 1


async def test_handoffs_without_from_agent_apply_one_after_the_other(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    results = await asyncio.gather(
        handoff(client, cid, to_agent_id="support-agent"),
        handoff(client, cid, to_agent_id="demo-assistant"),
    )
    assert [r.status_code for r in results] == [200, 200]
    conversation = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert conversation["agents"] == ["demo-assistant", "support-agent"]
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    # Each line names the agent that held it when that handoff applied.
    chain = [(m["metadata"]["from_agent_id"], m["metadata"]["to_agent_id"]) for m in history]
    assert chain[0][1] == chain[1][0]
    assert conversation["agent_id"] == chain[1][1]


async def test_a_reply_streaming_during_a_handoff_keeps_its_original_agent(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    reply = await start_reply(client, cid)
    assert reply["agent_id"] == "demo-assistant"
    await post_deltas(client, cid, reply["id"], [(0, "Let me ")])
    moved = await handoff(client, cid, to_agent_id="support-agent")
    assert moved.status_code == 200, moved.text
    await post_deltas(client, cid, reply["id"], [(1, "check.")])
    final = await complete(client, cid, reply["id"])
    assert (final["content"], final["agent_id"]) == ("Let me check.", "demo-assistant")
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert [m["agent_id"] for m in history] == ["demo-assistant", None]


async def test_a_retried_handoff_with_an_idempotency_key_returns_the_first_response(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant"))["id"]
    key = {"Idempotency-Key": f"handoff-{uuid.uuid4()}"}
    first = await handoff(client, cid, to_agent_id="support-agent", headers=key)
    again = await handoff(client, cid, to_agent_id="support-agent", headers=key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert len(history) == 1
    sent = await callbacks_of(engine, cid)
    assert [event for event, _ in sent].count("conversation.agent_changed") == 1
    reused = await handoff(client, cid, to_agent_id="demo-assistant", headers=key)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("idempotency-key-reused")


async def test_a_workflow_step_change_publishes_old_and_new_and_sends_a_callback(
    client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client, agent_id="demo-assistant", workflow_id="onboarding"))[
        "id"
    ]
    url = f"/internal/v1/conversations/{cid}/tracked-context"
    for patch in ({"workflow_step": "collect"}, {"intent": "x"}, {"workflow_step": "confirm"}):
        response = await client.patch(url, json=patch, headers=SERVICE)
        assert response.status_code == 200, response.text
    steps = [e["data"].get("workflow_step") for e in await event_log(app, cid)]
    assert steps == [{"old": None, "new": "collect"}, None, {"old": "collect", "new": "confirm"}]
    sent = [
        data["data"]
        for event, data in await callbacks_of(engine, cid)
        if event != "conversation.created"
    ]
    assert [(s["workflow_id"], s["old_step"], s["new_step"]) for s in sent] == [
        ("onboarding", None, "collect"),
        ("onboarding", "collect", "confirm"),
    ]
