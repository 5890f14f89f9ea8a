"""Internal API-key routes: only the orchestrator's service key may issue and revoke keys."""

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.db.tables import api_keys_table
from conversation_service.errors import UnauthorizedError
from conversation_service.services import api_keys
from conversation_service.services.auth import Principal
from tests.conftest import INTERNAL_KEY, Caller
from tests.routes.test_errors import assert_problem

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


async def authenticate(engine: AsyncEngine, key: str) -> Principal:
    async with engine.connect() as conn:
        return await api_keys.authenticate(conn, key)


async def test_issue_returns_the_key_once_and_stores_its_hash(
    anon: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    response = await anon.post(
        "/internal/v1/api-keys",
        json={"tenant": caller.tenant, "user": caller.user, "name": "billing bot"},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key"].startswith("cs_")
    assert body["prefix"] == body["key"][:10]
    assert (body["tenant"], body["user"], body["name"]) == (
        caller.tenant,
        caller.user,
        "billing bot",
    )
    assert await authenticate(engine, body["key"]) == Principal(caller.tenant, caller.user)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                select(api_keys_table.c.key_hash).where(
                    api_keys_table.c.id == uuid.UUID(body["id"])
                )
            )
        ).scalar_one()
    assert stored == api_keys.hash_key(body["key"]) != body["key"]


async def test_revoke_refuses_the_key_at_once_and_is_idempotent(
    anon: httpx.AsyncClient, engine: AsyncEngine, caller: Caller
) -> None:
    issued = (
        await anon.post(
            "/internal/v1/api-keys",
            json={"tenant": caller.tenant, "user": caller.user},
            headers=SERVICE,
        )
    ).json()
    for _ in range(2):
        revoked = await anon.delete(f"/internal/v1/api-keys/{issued['id']}", headers=SERVICE)
        assert revoked.status_code == 204, revoked.text
    with pytest.raises(UnauthorizedError):
        await authenticate(engine, issued["key"])


async def test_revoking_an_unknown_key_is_404(anon: httpx.AsyncClient) -> None:
    response = await anon.delete(f"/internal/v1/api-keys/{uuid.uuid4()}", headers=SERVICE)
    assert_problem(response, 404, "api-key-not-found")


@pytest.mark.parametrize("use_user_token", [False, True])
async def test_only_the_service_key_may_issue_or_revoke(
    anon: httpx.AsyncClient, caller: Caller, use_user_token: bool
) -> None:
    headers = caller.headers if use_user_token else {}
    body = {"tenant": caller.tenant, "user": caller.user}
    assert_problem(await anon.post("/internal/v1/api-keys", json=body, headers=headers), 401)
    assert_problem(await anon.delete(f"/internal/v1/api-keys/{uuid.uuid4()}", headers=headers), 401)


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "t"},
        {"tenant": "", "user": "u"},
        {"tenant": "t", "user": "u", "scope": "admin"},
        {"tenant": "t" * 129, "user": "u"},
    ],
)
async def test_invalid_requests_are_422(anon: httpx.AsyncClient, body: dict[str, str]) -> None:
    response = await anon.post("/internal/v1/api-keys", json=body, headers=SERVICE)
    assert_problem(response, 422, "validation-error")
