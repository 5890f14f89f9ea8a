"""Conversations a workflow starts: the orchestrator creates them for a user (with opening
messages and a step), retries safely, and lists a tenant's conversations."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.main import create_app
from tests.conftest import Caller, create_conversation, make_settings, new_caller
from tests.websocket.helpers import SERVICE


@pytest.fixture
async def app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The app recording callbacks to the orchestrator."""
    configured = make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        orchestrator_callback_url="http://127.0.0.1:9/hooks",
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        yield app


async def start(
    client: httpx.AsyncClient, caller: Caller, key: str | None = None, **body: Any
) -> httpx.Response:
    headers = {**SERVICE, **({"Idempotency-Key": key} if key else {})}
    return await client.post(
        "/internal/v1/conversations",
        json={"tenant": caller.tenant, "user": caller.user, "agent_id": "demo-assistant", **body},
        headers=headers,
    )


async def test_the_orchestrator_starts_a_users_conversation_with_opening_messages(
    client: httpx.AsyncClient, caller: Caller, engine: AsyncEngine
) -> None:
    response = await start(
        client,
        caller,
        workflow_id="follow-up",
        workflow_step="greet",
        title="Your order",
        messages=[{"role": "assistant", "content": "Hi! How was your order?"}],
    )
    assert response.status_code == 201, response.text
    created = response.json()
    cid = created["id"]
    assert (created["user_id"], created["workflow_id"], created["message_count"]) == (
        caller.user,
        "follow-up",
        1,
    )
    assert [m["agent_id"] for m in created["messages"]] == ["demo-assistant"]
    mine = (await client.get("/api/v1/conversations")).json()["data"]
    assert [c["id"] for c in mine] == [cid]
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert [m["content"] for m in history] == ["Hi! How was your order?"]
    tracked = await client.get(f"/internal/v1/conversations/{cid}/tracked-context", headers=SERVICE)
    assert tracked.json()["data"]["workflow_step"] == "greet"
    async with engine.connect() as conn:
        sent = (
            await conn.scalars(
                select(deliveries.c.event_type)
                .where(deliveries.c.conversation_id == uuid.UUID(cid))
                .order_by(deliveries.c.created_at, deliveries.c.id)
            )
        ).all()
    assert sent == ["conversation.created", "workflow.step_changed"]


async def test_an_internal_create_retried_with_an_idempotency_key_creates_one_conversation(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    key = f"wf-{uuid.uuid4()}"
    body = {"workflow_id": "form-7", "messages": [{"role": "user", "content": "My answers"}]}
    first = await start(client, caller, key, **body)
    again = await start(client, caller, key, **body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    mine = (await client.get("/api/v1/conversations")).json()["data"]
    assert len(mine) == 1
    other = await start(client, caller, key, workflow_id="form-8")
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")


async def test_an_internal_create_refuses_a_body_without_tenant_or_user(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/internal/v1/conversations", json={"agent_id": "demo-assistant"}, headers=SERVICE
    )
    assert response.status_code == 422
    anonymous = await client.post("/internal/v1/conversations", json={})
    assert anonymous.status_code == 401


async def test_the_internal_list_is_scoped_to_one_tenant_and_pages_by_keyset(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    neighbour = new_caller(caller.tenant)
    stranger = new_caller()
    for owner in (caller, caller, neighbour, stranger):
        assert (await start(client, owner, workflow_id="onboarding")).status_code == 201
    await start(client, caller, workflow_id="other", agent_id="support-agent")
    url = "/internal/v1/conversations"
    params: dict[str, Any] = {"tenant": caller.tenant, "workflow_id": "onboarding", "limit": 2}
    first = (await client.get(url, params=params, headers=SERVICE)).json()
    assert first["has_more"] is True
    rest = await client.get(url, params={**params, "cursor": first["next_cursor"]}, headers=SERVICE)
    seen = first["data"] + rest.json()["data"]
    assert rest.json()["has_more"] is False
    assert sorted(c["user_id"] for c in seen) == sorted([caller.user, caller.user, neighbour.user])
    assert len({c["id"] for c in seen}) == 3
    theirs = await client.get(url, params={"tenant": stranger.tenant}, headers=SERVICE)
    assert [c["user_id"] for c in theirs.json()["data"]] == [stranger.user]
    one_user = await client.get(
        url, params={"tenant": caller.tenant, "user": neighbour.user}, headers=SERVICE
    )
    assert [c["user_id"] for c in one_user.json()["data"]] == [neighbour.user]
    by_agent = await client.get(
        url,
        params={"tenant": caller.tenant, "agent_id": "support-agent", "status": "active"},
        headers=SERVICE,
    )
    assert [c["workflow_id"] for c in by_agent.json()["data"]] == ["other"]
    assert (await client.get(url, headers=SERVICE)).status_code == 422  # tenant is required
    assert (await client.get(url, params={"tenant": caller.tenant})).status_code == 401


async def test_the_public_list_filters_by_workflow_id(client: httpx.AsyncClient) -> None:
    wanted = await create_conversation(client, workflow_id="billing")
    await create_conversation(client, workflow_id="onboarding")
    await create_conversation(client)
    listed = await client.get("/api/v1/conversations", params={"workflow_id": "billing"})
    assert [c["id"] for c in listed.json()["data"]] == [wanted["id"]]
