"""Every failure is RFC 9457 problem+json with the right status, and changes nothing."""

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import conversations_table
from tests.conftest import INTERNAL_KEY, Caller, create_conversation


def assert_problem(response: httpx.Response, status: int, type_suffix: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    if type_suffix:
        assert body["type"].endswith("/" + type_suffix), body


async def count_conversations(engine: AsyncEngine, tenant: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(conversations_table.c.tenant_id == tenant)
        )
    return int(count or 0)


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404)


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/api/v1/conversations"), 405)


async def test_bad_uuid_in_path_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/conversations/not-a-uuid"), 422, "validation-error")


async def test_malformed_json_is_400_and_writes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    for body in (b'{"agent_id": ', b"\xff\xfe{}", b"[1, 2", b'{"agent_id": "a"}}'):
        response = await client.post(
            "/api/v1/conversations", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert await count_conversations(engine, caller.tenant) == 0


async def test_non_json_content_type_is_415(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    response = await client.post(
        "/api/v1/conversations", content=b"agent_id=a", headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported-media-type")
    form = await client.post("/api/v1/conversations", data={"agent_id": "a"})
    assert_problem(form, 415)
    assert await count_conversations(engine, caller.tenant) == 0


async def test_oversized_body_is_413_before_parsing(
    client: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    big = b'{"agent_id": "a", "title": "' + b"x" * 2_000_000 + b'"}'
    response = await client.post(
        "/api/v1/conversations", content=big, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")

    async def chunks() -> object:
        for _ in range(40):
            yield b"x" * 65_536

    streamed = await client.post(
        "/api/v1/conversations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(streamed, 413)
    assert await count_conversations(engine, caller.tenant) == 0


async def test_deeply_nested_metadata_is_422(client: httpx.AsyncClient) -> None:
    nested: dict[str, object] = {}
    node = nested
    for _ in range(40):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    response = await client.post(
        "/api/v1/conversations", json={"agent_id": "a", "metadata": nested}
    )
    assert_problem(response, 422)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.jwt"},
    ],
)
async def test_missing_or_malformed_credentials_are_401(
    anon: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await anon.get("/api/v1/conversations", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_internal_routes_refuse_user_tokens_and_accept_service_key(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    conversation = await create_conversation(client)
    url = f"/internal/v1/conversations/{conversation['id']}"
    assert_problem(await client.get(url), 401)
    assert_problem(await anon.get(url), 401)
    assert_problem(await anon.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    ok = await anon.get(url, headers={"Authorization": f"Bearer {INTERNAL_KEY}"})
    assert ok.status_code == 200
    assert ok.json()["id"] == conversation["id"]
    missing = await anon.get(
        f"/internal/v1/conversations/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
    )
    assert_problem(missing, 404)


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/health/live", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = [(await client.get("/health/live")).headers["x-request-id"] for _ in range(3)]
    assert len(set(generated)) == 3
    for request_id in generated:
        assert len(request_id) == 32
        int(request_id, 16)
