"""Internal streaming API: agent messages, deltas, completion, failure and the idle sweep."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from conversation_service.events.log import (
    OPEN_STREAMS_KEY,
    Delta,
    events_key,
    partial_key,
    read_after,
)
from conversation_service.events.store import Partial, StreamStore, index_member
from conversation_service.services import streaming
from conversation_service.services.stream_expiry import sweep_idle_streams
from tests.conftest import create_conversation
from tests.websocket.helpers import SERVICE, complete, post_deltas, start_reply


def _url(cid: str, mid: str | None = None, action: str = "") -> str:
    base = f"/internal/v1/conversations/{cid}/messages"
    return base if mid is None else f"{base}/{mid}/{action}".rstrip("/")


async def _events(redis: Redis, cid: str) -> list[dict[str, Any]]:
    import orjson

    chunk = await read_after(redis, cid, None, count=10_000)
    return [orjson.loads(entry.frame) for entry in chunk.entries]


@pytest.fixture
def redis(app: FastAPI) -> Redis:
    client: Redis = app.state.resources.redis
    return client


async def test_a_completed_agent_message_is_appended_and_published(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    created = await client.post(
        _url(cid),
        json={"role": "tool", "content": "42", "metadata": {"tool": "calc"}},
        headers=SERVICE,
    )
    assert created.status_code == 201, created.text
    message = created.json()
    assert (message["role"], message["status"], message["seq"]) == ("tool", "completed", 1)
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert [m["content"] for m in history] == ["42"]
    events = await _events(redis, cid)
    assert [e["type"] for e in events] == ["message.created"]
    assert events[0]["data"]["message"]["id"] == message["id"]


async def test_deltas_accumulate_in_index_order_and_a_resent_index_changes_nothing(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    conversation = await create_conversation(client)
    cid = conversation["id"]
    message = await start_reply(client, cid, content="> ")
    mid = message["id"]
    assert message["status"] == "streaming"
    first = await post_deltas(client, cid, mid, [(1, "world"), (0, "hello ")])
    again = await post_deltas(client, cid, mid, [(0, "HELLO "), (2, "!")])
    assert all(first)
    assert again[0] is None
    assert again[1] is not None
    stored = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
    assert stored["status"] == "streaming"
    assert stored["content"] == "> "  # no database write per delta

    final = await complete(client, cid, mid)
    assert final["content"] == "> hello world!"
    assert final["status"] == "completed"
    assert final["token_count"] > message["token_count"]
    after = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert after["token_count"] == final["token_count"]
    deltas = [e for e in await _events(redis, cid) if e["type"] == "message.delta"]
    assert [(d["data"]["index"], d["data"]["text"]) for d in deltas] == [
        (1, "world"),
        (0, "hello "),
        (2, "!"),
    ]


async def test_completing_again_changes_nothing_and_later_deltas_are_refused(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await post_deltas(client, cid, mid, [(0, "a")])
    first = await complete(client, cid, mid)
    second = await complete(client, cid, mid)
    assert second == first
    late = await client.post(
        _url(cid, mid, "deltas"), json={"deltas": [{"index": 1, "text": "b"}]}, headers=SERVICE
    )
    assert late.status_code == 409
    assert late.json()["type"].endswith("/message-not-streaming")
    types = [e["type"] for e in await _events(redis, cid)]
    assert types.count("message.completed") == 1


async def test_complete_with_content_replaces_the_deltas_and_merges_metadata(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid, metadata={"model": "m1"}))["id"]
    await post_deltas(client, cid, mid, [(0, "draft")])
    final = await complete(client, cid, mid, content="Final answer.", metadata={"latency_ms": 12})
    assert final["content"] == "Final answer."
    assert final["metadata"] == {"model": "m1", "latency_ms": 12}


async def test_fail_keeps_the_partial_content_and_the_error(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await post_deltas(client, cid, mid, [(0, "Half an ")])
    failed = await client.post(
        _url(cid, mid, "fail"), json={"error": "model overloaded"}, headers=SERVICE
    )
    assert failed.status_code == 200, failed.text
    message = failed.json()["message"]
    assert (message["status"], message["content"]) == ("failed", "Half an ")
    assert message["metadata"]["error"] == "model overloaded"
    event = (await _events(redis, cid))[-1]
    assert event["type"] == "message.failed"
    assert event["data"]["error"] == "model overloaded"
    again = await client.post(_url(cid, mid, "complete"), json={}, headers=SERVICE)
    assert again.status_code == 409


async def test_deltas_survive_a_lost_stream_state_while_the_database_says_streaming(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await redis.delete(partial_key(cid, mid))  # as if Redis had restarted without the key
    ids = await post_deltas(client, cid, mid, [(0, "still ")])
    assert ids[0] is not None
    await post_deltas(client, cid, mid, [(1, "here")])
    assert (await complete(client, cid, mid))["content"] == "still here"


@pytest.mark.parametrize("where", ["unknown message", "other conversation"])
async def test_deltas_for_a_message_not_in_the_conversation_are_404(
    client: httpx.AsyncClient, where: str
) -> None:
    cid = (await create_conversation(client))["id"]
    other = (await create_conversation(client))["id"]
    mid = (
        (await start_reply(client, other))["id"]
        if where == "other conversation"
        else str(uuid.uuid4())
    )
    response = await client.post(
        _url(cid, mid, "deltas"), json={"deltas": [{"index": 0, "text": "x"}]}, headers=SERVICE
    )
    assert response.status_code == 404
    assert response.json()["type"].endswith("/message-not-found")


async def test_streaming_endpoints_need_the_service_key(client: httpx.AsyncClient) -> None:
    cid = (await create_conversation(client))["id"]
    response = await client.post(_url(cid), json={"role": "assistant"})  # a user JWT only
    assert response.status_code == 401
    refused = await client.post(_url(cid), json={"role": "user", "content": "x"}, headers=SERVICE)
    assert refused.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"deltas": []},
        {"deltas": [{"index": -1, "text": "x"}]},
        {"deltas": [{"index": 0}]},
        {"deltas": [{"index": 0, "text": "a\u0000b"}]},
    ],
)
async def test_invalid_deltas_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    response = await client.post(_url(cid, mid, "deltas"), json=body, headers=SERVICE)
    assert response.status_code == 422


async def test_an_idle_stream_ends_incomplete_with_its_partial_content_once(
    client: httpx.AsyncClient, app: FastAPI, redis: Redis
) -> None:
    resources = app.state.resources
    store = StreamStore(redis)
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await post_deltas(client, cid, mid, [(0, "I was saying")])
    await asyncio.sleep(0.05)
    # Earlier tests leave open streams of other databases in the shared Redis, older than this
    # one; each sweep claims the oldest first, so let each see them all.
    every = await redis.zcard(OPEN_STREAMS_KEY) + 1
    # Several replicas sweeping at once: one wins, one event.
    ended = await asyncio.gather(
        *(
            sweep_idle_streams(resources.units, store, idle_seconds=0.01, limit=every)
            for _ in range(3)
        )
    )
    assert sum(ended) >= 1
    message = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
    assert (message["status"], message["content"]) == ("incomplete", "I was saying")
    failed = [e for e in await _events(redis, cid) if e["type"] == "message.failed"]
    assert len(failed) == 1
    assert failed[0]["data"]["error"] == streaming.IDLE_ERROR
    assert failed[0]["data"]["message"]["status"] == "incomplete"
    # The agent came back after all: completing an incomplete reply is allowed.
    final = await complete(client, cid, mid, content="I was saying: done.")
    assert final["status"] == "completed"


async def test_a_sweep_keeps_the_partial_reply_of_a_stream_its_database_does_not_know(
    app: FastAPI, redis: Redis
) -> None:
    # Another deployment (its own database) streams a reply through the same Redis database:
    # a sweep here must not take that reply's deltas away while its agent is away.
    resources = app.state.resources
    store = StreamStore(redis)
    cid, mid = uuid.uuid4(), uuid.uuid4()
    await store.open(cid, mid)
    await resources.events.publish_deltas(cid, mid, [Delta(0, "still "), Delta(1, "here")])
    await asyncio.sleep(0.05)
    try:
        await sweep_idle_streams(resources.units, store, idle_seconds=0.01)
        assert await store.peek(cid, mid) == Partial(str(cid), "still here")
        assert await resources.events.publish_deltas(cid, mid, [Delta(2, "!")]) != [None]
    finally:
        await store.close(cid, mid)


@pytest.mark.parametrize("layout", ["message id (before hash tags)", "conversation/message"])
async def test_a_sweep_forgets_an_open_stream_entry_whose_deltas_are_gone(
    app: FastAPI, redis: Redis, layout: str
) -> None:
    resources = app.state.resources
    store = StreamStore(redis)
    orphan = str(uuid.uuid4())
    if layout == "conversation/message":
        orphan = index_member(uuid.uuid4(), orphan)
    await redis.zadd(OPEN_STREAMS_KEY, {orphan: 0})
    await sweep_idle_streams(resources.units, store, idle_seconds=0.01)
    assert await redis.zscore(OPEN_STREAMS_KEY, orphan) is None


async def test_an_entry_reopened_after_the_sweep_claimed_it_stays_indexed(redis: Redis) -> None:
    # The index and the hash are written by separate calls: between the sweep's claim and its
    # "hash gone, drop the entry", the stream may open again. Its new score saves it.
    store = StreamStore(redis)
    cid, mid = uuid.uuid4(), uuid.uuid4()
    member = index_member(cid, mid)
    await redis.zadd(OPEN_STREAMS_KEY, {member: 0})
    every = await redis.zcard(OPEN_STREAMS_KEY)
    claim = await store.claim_idle(idle_ms=1, lease_ms=60_000, limit=every)
    assert member in claim.members
    await store.open(cid, mid)
    try:
        assert not await store.forget_if_gone(claim, member)
        assert await redis.zscore(OPEN_STREAMS_KEY, member) is not None
    finally:
        await store.close(cid, mid)


async def test_a_sweep_puts_back_an_active_stream_whose_index_entry_is_stale(
    app: FastAPI, client: httpx.AsyncClient, redis: Redis
) -> None:
    # The open-streams index is written apart from the deltas (they live in the conversation's
    # slot): an index score older than the last delta must never end a live stream.
    resources = app.state.resources
    store = StreamStore(redis)
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await post_deltas(client, cid, mid, [(0, "still talking")])
    member = index_member(cid, mid)
    await redis.zadd(OPEN_STREAMS_KEY, {member: 0})  # as if refreshed last in 1970
    every = await redis.zcard(OPEN_STREAMS_KEY) + 1
    await sweep_idle_streams(resources.units, store, idle_seconds=600, limit=every)
    message = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
    assert message["status"] == "streaming"
    rescored = await redis.zscore(OPEN_STREAMS_KEY, member)
    assert rescored is not None
    assert rescored > 0  # back at its last delta's time
    await post_deltas(client, cid, mid, [(1, "!")])
    assert (await complete(client, cid, mid))["content"] == "still talking!"


async def test_the_lifespan_sweeper_ends_idle_streams(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    from conversation_service.websocket.runtime import Realtime

    resources = app.state.resources
    fast = resources.settings.model_copy(update={"stream_idle_timeout": 0.2})
    realtime = Realtime(fast, resources.engine, resources.redis)
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    await realtime.start(resources.units)
    try:
        async with asyncio.timeout(10):
            while True:
                status = (await client.get(f"/api/v1/conversations/{cid}/messages/{mid}")).json()
                if status["status"] == "incomplete":
                    break
                await asyncio.sleep(0.05)
    finally:
        await realtime.stop()


async def test_a_streaming_message_in_an_archived_conversation_is_refused(
    client: httpx.AsyncClient,
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/archive")
    response = await client.post(
        _url(cid), json={"role": "assistant", "status": "streaming"}, headers=SERVICE
    )
    assert response.status_code == 409
    missing = await client.post(
        _url(str(uuid.uuid4())), json={"role": "assistant"}, headers=SERVICE
    )
    assert missing.status_code == 404
    assert "{" + cid + "}" in events_key(cid)
