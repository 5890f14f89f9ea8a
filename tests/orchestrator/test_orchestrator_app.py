"""The orchestrator's HTTP surface: signed callbacks only, repeats dropped, the agent directory."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from conversation_orchestrator.app import create_app
from conversation_orchestrator.settings import OrchestratorSettings

SECRET = "whsec_" + "dGVzdC1vcmNoZXN0cmF0b3Itc2VjcmV0LTMyYnl0ZXM="


@pytest.fixture
async def orchestrator() -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on port 9: a turn that starts fails fast and is cancelled at shutdown.
    settings = OrchestratorSettings(
        service_url="http://127.0.0.1:9", webhook_secret=SECRET, request_timeout_seconds=0.5
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client:
            yield client


def signed(event: dict[str, object], webhook_id: str, secret: str = SECRET) -> dict[str, str]:
    body = orjson.dumps(event).decode()
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }


def message_event(role: str) -> dict[str, object]:
    conversation_id = str(uuid.uuid4())
    return {
        "type": "message.created",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "conversation_id": conversation_id,
            "message": {"id": str(uuid.uuid4()), "seq": 1, "role": role, "content": "hi"},
        },
    }


async def test_a_callback_with_a_bad_signature_is_refused(
    orchestrator: httpx.AsyncClient,
) -> None:
    event = message_event("user")
    other = "whsec_" + "b3RoZXItc2VjcmV0LW9mLWF0LWxlYXN0LTMyLWJ5dGVz"
    response = await orchestrator.post(
        "/callbacks", content=orjson.dumps(event), headers=signed(event, "msg_1", other)
    )
    assert response.status_code == 401
    stats = (await orchestrator.get("/health")).json()["stats"]
    assert stats["rejected"] == 1
    assert stats["replies_started"] == 0


async def test_a_repeated_webhook_id_is_acknowledged_once(orchestrator: httpx.AsyncClient) -> None:
    event = message_event("assistant")  # not a user message: acknowledged, no turn
    headers = signed(event, "msg_repeat")
    first = await orchestrator.post("/callbacks", content=orjson.dumps(event), headers=headers)
    again = await orchestrator.post("/callbacks", content=orjson.dumps(event), headers=headers)
    assert first.json()["status"] == "ignored"
    assert again.json()["status"] == "duplicate"


async def test_a_user_message_starts_a_turn(orchestrator: httpx.AsyncClient) -> None:
    event = message_event("user")
    response = await orchestrator.post(
        "/callbacks", content=orjson.dumps(event), headers=signed(event, "msg_user")
    )
    assert response.status_code == 202
    assert (await orchestrator.get("/health")).json()["stats"]["replies_started"] == 1


async def test_a_regenerate_request_starts_a_turn(orchestrator: httpx.AsyncClient) -> None:
    event = {**message_event("user"), "type": "message.regenerate_requested"}
    response = await orchestrator.post(
        "/callbacks", content=orjson.dumps(event), headers=signed(event, "msg_regenerate")
    )
    assert response.status_code == 202
    assert (await orchestrator.get("/health")).json()["stats"]["replies_started"] == 1


async def test_agent_directory_knows_the_demo_agents(orchestrator: httpx.AsyncClient) -> None:
    known = await orchestrator.get("/agents/demo-assistant")
    assert known.status_code == 200
    assert known.json()["usable"] is True
    retired = await orchestrator.get("/agents/retired-agent")
    assert retired.json()["usable"] is False
    assert (await orchestrator.get("/agents/nobody")).status_code == 404
