"""Fixtures of the security battery: a victim with one object of every kind, and the list of
every operation the OpenAPI document declares, with a valid body for each.

Operations come from the live document, so a route added later is in the battery at once; one
whose body is not in ``BODIES`` gets ``{}`` (enough for the 401 checks, which run before the body
is validated) and fails the 404 checks until a valid body is added here.
"""

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.services.auth import issue_token
from tests.conftest import INTERNAL_KEY, JWT_SECRET, Caller, cancel_open_jobs, create_conversation

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}
NDJSON = "application/x-ndjson"

# A valid body per operation (``METHOD path``), for the checks that must reach the handler.
BODIES: dict[str, Any] = {
    "POST /api/v1/conversations": {"agent_id": "intruder"},
    "PATCH /api/v1/conversations/{conversation_id}": {"title": "hijacked"},
    "POST /api/v1/conversations/{conversation_id}/messages": {"content": "hijacked"},
    "PATCH /api/v1/conversations/{conversation_id}/messages/{message_id}": {
        "metadata": {"hijacked": True}
    },
    "POST /api/v1/conversations/{conversation_id}/sessions": {"channel": "hijack"},
    "PUT /api/v1/conversations/{conversation_id}/messages/{message_id}/feedback": {"rating": -1},
    "PUT /api/v1/conversations/{conversation_id}/active-leaf": {
        "message_id": "00000000-0000-7000-8000-000000000001"
    },
    "PATCH /internal/v1/sessions/{session_id}/context": {"variables": {"hijacked": True}},
    "PATCH /internal/v1/conversations/{conversation_id}/tracked-context": {"hijacked": True},
    "POST /internal/v1/conversations/{conversation_id}/messages": {
        "role": "assistant",
        "content": "hijacked",
    },
    "POST /internal/v1/conversations/{conversation_id}/messages/{message_id}/deltas": {
        "deltas": [{"index": 0, "text": "hijacked"}]
    },
    "POST /internal/v1/conversations/{conversation_id}/messages/{message_id}/complete": {},
    "POST /internal/v1/conversations/{conversation_id}/messages/{message_id}/fail": {
        "error": "hijacked"
    },
    "POST /internal/v1/conversations/{conversation_id}/tasks": {"kind": "sentiment"},
    "POST /internal/v1/api-keys": {"tenant": "t", "user": "u"},
    "POST /v1/conversations": {},
    "POST /v1/conversations/{conversation_id}": {"metadata": {"hijacked": "yes"}},
    "POST /v1/conversations/{conversation_id}/items": {
        "items": [{"type": "message", "role": "user", "content": "hijacked"}]
    },
}


@pytest.fixture(autouse=True)
async def no_leftover_jobs(settings: ConversationSettings) -> AsyncIterator[None]:
    """Cancel the jobs a test leaves pending: no worker runs them here, and the queue tests'
    outbox sweep would otherwise hand them to their workers (as ``tests/queue`` does itself)."""
    yield
    engine = create_engine(settings, null_pool=True)
    try:
        await cancel_open_jobs(engine)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Operation:
    """One documented operation and the credential it takes."""

    method: str
    path: str
    scheme: str  # HTTPBearer (user JWT), ApiKey (/v1) or ServiceKey (internal)
    media_type: str = "application/json"  # of the request body

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def has_body(self) -> bool:
        return self.method in ("POST", "PATCH", "PUT")

    def body(self) -> Any:
        return BODIES.get(self.name, {}) if self.has_body else None

    def url(self, ids: dict[str, str]) -> str:
        return self.path.format(**ids)


def operations(app: FastAPI) -> list[Operation]:
    """Every authenticated operation of the OpenAPI document."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            security = operation.get("security")
            if security:
                content = operation.get("requestBody", {}).get("content", {"application/json": {}})
                scheme = next(iter(security[0]))
                found.append(Operation(method.upper(), path, scheme, next(iter(content))))
    return found


async def send(
    client: httpx.AsyncClient, operation: Operation, ids: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    """Call ``operation`` on the objects ``ids`` name, with a valid body when it takes one."""
    if operation.media_type == NDJSON:
        # The import: one line is a valid body (the media type is checked before credentials).
        line = b'{"type": "conversation", "data": {"id": "' + uuid.uuid4().hex.encode() + b'"}}\n'
        return await client.request(
            operation.method,
            operation.url(ids),
            content=line,
            headers={**headers, "Content-Type": NDJSON},
        )
    return await client.request(
        operation.method, operation.url(ids), json=operation.body(), headers=headers
    )


def bad_user_tokens(caller: Caller) -> dict[str, str]:
    """Bearer values that must not authenticate ``caller``: expired, forged, unsigned, junk."""
    now = int(time.time())
    claims = {"sub": caller.user, "tenant": caller.tenant, "iat": now, "exp": now + 600}
    return {
        "expired": issue_token(
            JWT_SECRET, tenant=caller.tenant, user=caller.user, ttl_seconds=-600
        ),
        "wrong-signature": jwt.encode(claims, "another-secret-" + "z" * 40, algorithm="HS256"),
        "alg-none": jwt.encode(claims, None, algorithm="none"),
        "alg-none-unsigned-header": _unsigned(claims),
        "tampered-claims": _tampered(caller),
        "malformed": "not.a.jwt",
        "empty-claims": jwt.encode({"exp": now + 600}, JWT_SECRET, algorithm="HS256"),
    }


def _unsigned(claims: dict[str, Any]) -> str:
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    header, payload, _ = token.split(".")
    return f"{header}.{payload}."


def _tampered(caller: Caller) -> str:
    """A real token whose payload was swapped for another tenant's (signature kept)."""
    real = caller.token.split(".")
    other = issue_token(JWT_SECRET, tenant="someone-else", user=caller.user).split(".")
    return f"{real[0]}.{other[1]}.{real[2]}"


@dataclass
class Victim:
    """A user with one object of every kind, and the ids that name them."""

    caller: Caller
    api_key: str
    ids: dict[str, str]
    title: str


@pytest.fixture
async def victim(client: httpx.AsyncClient, caller: Caller) -> Victim:
    """The test's ``caller`` with a conversation, messages, a session, a job and an API key."""
    title = f"private {uuid.uuid4().hex}"
    conversation = await create_conversation(client, title=title)
    cid = conversation["id"]
    message = await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "mine"})
    assert message.status_code == 201, message.text
    mid = message.json()["id"]
    session = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    job = await client.post(
        f"/internal/v1/conversations/{cid}/tasks", json={"kind": "sentiment"}, headers=SERVICE
    )
    assert job.status_code == 202, job.text
    key = await client.post(
        "/internal/v1/api-keys",
        json={"tenant": caller.tenant, "user": caller.user},
        headers=SERVICE,
    )
    assert key.status_code == 201, key.text
    ids = {
        "conversation_id": cid,
        "message_id": mid,
        "session_id": session["id"],
        "job_id": job.json()["id"],
        "delivery_id": str(uuid.uuid4()),
        "key_id": key.json()["id"],
        "tenant_id": caller.tenant,
        "user_id": caller.user,
        "agent_id": conversation["agent_id"],
        "tenant": caller.tenant,
        "user": caller.user,
    }
    return Victim(caller=caller, api_key=key.json()["key"], ids=ids, title=title)


def openai_ids(ids: dict[str, str]) -> dict[str, str]:
    """The same objects named as the OpenAI-compatible API names them."""
    return {
        **ids,
        "conversation_id": "conv_" + uuid.UUID(ids["conversation_id"]).hex,
        "item_id": "msg_" + uuid.UUID(ids["message_id"]).hex,
    }


async def issue_api_key(client: httpx.AsyncClient, caller: Caller) -> str:
    """An API key acting as ``caller``."""
    response = await client.post(
        "/internal/v1/api-keys",
        json={"tenant": caller.tenant, "user": caller.user},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def assert_untouched(client: httpx.AsyncClient, victim: Victim) -> None:
    """The victim's objects are exactly as they were left by the fixture."""
    cid = victim.ids["conversation_id"]
    headers = victim.caller.headers
    conversation = await client.get(f"/api/v1/conversations/{cid}", headers=headers)
    assert conversation.status_code == 200, conversation.text
    body = conversation.json()
    assert (body["title"], body["status"], body["message_count"]) == (victim.title, "active", 1)
    messages = (await client.get(f"/api/v1/conversations/{cid}/messages", headers=headers)).json()
    assert [(m["content"], m["metadata"]) for m in messages["data"]] == [("mine", {})]
    sessions = (await client.get(f"/api/v1/conversations/{cid}/sessions", headers=headers)).json()
    assert [s["id"] for s in sessions["data"]] == [victim.ids["session_id"]]
    assert sessions["data"][0]["active"] is True
    key_works = await client.get(
        f"/v1/conversations/conv_{uuid.UUID(cid).hex}",
        headers={"Authorization": f"Bearer {victim.api_key}"},
    )
    assert key_works.status_code == 200, "the victim's API key must still work"
