"""Sessions: start on activity after a gap, expire, end explicitly; context hot and durable."""

import uuid
from datetime import timedelta

import httpx
import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.constants import SESSION_TTL
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import sessions_table
from conversation_service.services.sessions import context_key
from conversation_service.utils.redis_client import async_redis
from tests.conftest import INTERNAL_KEY, create_conversation, new_caller

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}


async def age_sessions(engine: AsyncEngine, cid: str, seconds: int) -> None:
    """Pretend the user has been inactive for ``seconds``."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                select(sessions_table.c.id, sessions_table.c.last_activity_at).where(
                    sessions_table.c.conversation_id == uuid.UUID(cid)
                )
            )
        ).all()
        for session_id, last in rows:
            await conn.execute(
                update(sessions_table)
                .where(sessions_table.c.id == session_id)
                .values(
                    last_activity_at=last - timedelta(seconds=seconds),
                    started_at=last - timedelta(seconds=seconds),
                )
            )


async def test_message_starts_session_and_activity_extends_it(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    assert (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).status_code == 404
    await client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "hi", "metadata": {"channel": "web", "locale": "es-ES"}},
    )
    current = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    assert current["active"] is True
    assert current["channel"] == "web"
    assert current["locale"] == "es-ES"
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "again"})
    again = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    assert again["id"] == current["id"]
    assert again["last_activity_at"] > current["last_activity_at"]


async def test_activity_after_inactivity_gap_starts_new_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "one"})
    first = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    await age_sessions(engine, cid, SESSION_TTL + 60)
    assert (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).status_code == 404
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "two"})
    second = (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).json()
    assert second["id"] != first["id"]
    listed = (await client.get(f"/api/v1/conversations/{cid}/sessions")).json()["data"]
    assert [s["id"] for s in listed] == [second["id"], first["id"]]
    ended = listed[1]
    assert ended["active"] is False
    assert ended["end_reason"] == "expired"
    assert ended["ended_at"] is not None


async def test_explicit_start_and_end(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    started = await client.post(
        f"/api/v1/conversations/{cid}/sessions", json={"channel": "mobile", "client": "ios/1.2"}
    )
    assert started.status_code == 201
    assert started.json()["channel"] == "mobile"
    ended = await client.post(f"/api/v1/conversations/{cid}/sessions/current/end")
    assert ended.status_code == 200
    assert ended.json()["end_reason"] == "ended"
    assert ended.json()["active"] is False
    assert (
        await client.post(f"/api/v1/conversations/{cid}/sessions/current/end")
    ).status_code == 404
    bad = await client.post(f"/api/v1/conversations/{cid}/sessions", json={"locale": "x y"})
    assert bad.status_code == 422


async def test_sessions_of_another_user_are_404(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    other = new_caller().headers
    for response in (
        await client.get(f"/api/v1/conversations/{cid}/sessions", headers=other),
        await client.get(f"/api/v1/conversations/{cid}/sessions/current", headers=other),
        await client.post(f"/api/v1/conversations/{cid}/sessions", json={}, headers=other),
    ):
        assert response.status_code == 404


async def test_session_context_is_hot_in_redis_and_durable_in_db(
    client: httpx.AsyncClient, settings: ConversationSettings, engine: AsyncEngine
) -> None:
    cid = (await create_conversation(client))["id"]
    session = (await client.post(f"/api/v1/conversations/{cid}/sessions", json={})).json()
    url = f"/internal/v1/sessions/{session['id']}/context"
    first = await client.patch(url, json={"variables": {"cart": ["a"], "step": 1}}, headers=SERVICE)
    assert first.status_code == 200, first.text
    second = await client.patch(
        url, json={"variables": {"step": None, "lang": "es"}}, headers=SERVICE
    )
    assert second.json() == {
        "session_id": session["id"],
        "version": 2,
        "variables": {"cart": ["a"], "lang": "es"},
    }
    redis = async_redis(settings.effective_redis_url(), cluster=settings.redis_cluster)
    try:
        hot = orjson.loads(await redis.get(context_key(uuid.UUID(session["id"]))))
        assert hot == {"v": 2, "vars": {"cart": ["a"], "lang": "es"}}
        assert 0 < await redis.ttl(context_key(uuid.UUID(session["id"]))) <= SESSION_TTL
        # A Redis restart (or expiry) loses the hot copy; the durable copy answers.
        await redis.delete(context_key(uuid.UUID(session["id"])))
        cold = await client.get(url, headers=SERVICE)
        assert cold.json()["variables"] == {"cart": ["a"], "lang": "es"}
        assert await redis.exists(context_key(uuid.UUID(session["id"])))
    finally:
        await redis.aclose()
    async with engine.connect() as conn:
        durable = await conn.scalar(
            select(sessions_table.c.context).where(sessions_table.c.id == uuid.UUID(session["id"]))
        )
    assert durable == {"cart": ["a"], "lang": "es"}


async def test_session_context_refuses_user_tokens_and_unknown_sessions(
    client: httpx.AsyncClient,
) -> None:
    url = f"/internal/v1/sessions/{uuid.uuid4()}/context"
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers=SERVICE)).status_code == 404
    refused = await client.patch(url, json={"variables": {"a": 1}}, headers=SERVICE)
    assert refused.status_code == 404


async def test_a_session_client_or_channel_with_nul_is_422(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    for body in ({"client": "a\u0000b"}, {"channel": "\u0000"}):
        response = await client.post(f"/api/v1/conversations/{cid}/sessions", json=body)
        assert response.status_code == 422, response.text
