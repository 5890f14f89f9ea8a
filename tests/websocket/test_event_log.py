"""The event log: ids, the publisher used outside requests, and the events public routes emit."""

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from conversation_service.events.log import (
    EventPublisher,
    events_key,
    parse_event_id,
    read_after,
)
from tests.conftest import create_conversation
from tests.websocket.helpers import SERVICE


@pytest.fixture
def redis(app: FastAPI) -> Redis:
    client: Redis = app.state.resources.redis
    return client


async def _events(redis: Redis, cid: str) -> list[dict[str, Any]]:
    chunk = await read_after(redis, cid, None, count=10_000)
    return [orjson.loads(entry.frame) for entry in chunk.entries]


async def test_concurrent_publishers_get_increasing_ids_in_stream_order(redis: Redis) -> None:
    cid = str(uuid.uuid4())
    publishers = [EventPublisher(redis) for _ in range(4)]
    ids = await asyncio.gather(
        *(p.publish(cid, "summary.updated", {"i": i}) for i, p in enumerate(publishers * 25))
    )
    stored = (await read_after(redis, cid, None, count=1000)).entries
    assert sorted(ids, key=lambda i: parse_event_id(i) or (0, 0)) == [e.id_text for e in stored]
    assert len(set(ids)) == 100
    assert await redis.ttl(events_key(cid)) > 0


async def test_publishing_never_fails_when_redis_is_down() -> None:
    broken = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        assert await EventPublisher(broken).publish_safely(uuid.uuid4(), "typing", {}) is None
        with pytest.raises(RedisConnectionError):
            await EventPublisher(broken).publish(uuid.uuid4(), "typing", {})
    finally:
        await broken.aclose()


async def test_public_routes_publish_their_changes_after_commit(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    base = f"/api/v1/conversations/{cid}"
    first = await client.post(
        f"{base}/messages", json={"content": "hi"}, headers={"Idempotency-Key": "k1"}
    )
    replay = await client.post(
        f"{base}/messages", json={"content": "hi"}, headers={"Idempotency-Key": "k1"}
    )
    assert replay.headers.get("idempotent-replayed") == "true"
    mid = first.json()["id"]
    await client.patch(f"{base}/messages/{mid}", json={"metadata": {"pinned": True}})
    await client.delete(f"{base}/messages/{mid}")
    await client.patch(base, json={"title": "Renamed"})
    await client.post(f"{base}/archive")
    await client.post(f"{base}/sessions", json={"channel": "web"})
    await client.post(f"{base}/sessions/current/end")
    await client.patch(
        f"/internal/v1/conversations/{cid}/tracked-context", json={"intent": "x"}, headers=SERVICE
    )
    refused = await client.patch(base, json={"status": "nonsense"})
    assert refused.status_code == 422

    events = await _events(redis, cid)
    assert [e["type"] for e in events] == [
        "session.started",  # the first message is activity that starts a session
        "message.created",  # once: the idempotent replay publishes nothing
        "message.updated",
        "message.deleted",
        "conversation.updated",
        "conversation.updated",
        "session.started",
        "session.ended",
        "context.updated",
    ]
    assert events[0]["data"]["session"]["active"] is True
    assert events[1]["data"]["message"]["id"] == mid
    assert events[2]["data"]["message"]["metadata"] == {"pinned": True}
    assert events[3]["data"] == {"message_id": mid}
    assert events[4]["data"]["conversation"]["title"] == "Renamed"
    assert events[5]["data"]["conversation"]["status"] == "archived"
    assert events[8]["data"]["tracked_context"]["data"] == {"intent": "x"}
    assert all(e["conversation_id"] == cid for e in events)
