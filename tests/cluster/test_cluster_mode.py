"""Cluster mode itself: the app's client is a cluster client, live fan-out uses one sharded
subscription per watched conversation on the primary that owns it, and viewers coming and going
never break the hub's link."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster

from conversation_service.events.log import live_channel
from conversation_service.websocket.connection_manager import ConnectionManager
from tests.conftest import Caller, create_conversation
from tests.redis_cluster import LocalCluster
from tests.websocket.helpers import ws_client


@pytest.fixture(scope="module")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    from tests.websocket.helpers import serve

    async with serve(app) as url:
        yield url


async def test_the_app_runs_on_a_cluster_client_and_is_ready(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert isinstance(app.state.resources.redis, RedisCluster)
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"


async def test_a_watched_conversation_is_one_shard_subscription_on_its_primary(
    client: httpx.AsyncClient, caller: Caller, base_url: str, redis_cluster: LocalCluster
) -> None:
    cid = (await create_conversation(client))["id"]
    channel = live_channel(cid)
    primary = SyncRedis(port=redis_cluster.primary_of(channel))
    try:
        async with (
            ws_client(base_url, caller.token) as first,
            ws_client(base_url, caller.token) as second,
        ):
            await first.subscribe(cid)
            await second.subscribe(cid)
            assert primary.pubsub_shardnumsub(channel)[0][1] == 1  # two viewers, one SSUBSCRIBE
            assert primary.pubsub_numsub(channel)[0][1] == 0  # no classic (broadcast) channel
            await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
            for ws in (first, second):
                frame = await ws.recv()
                assert frame["type"] == "message.created"
    finally:
        primary.close()


async def test_viewers_leaving_and_joining_at_once_keep_the_link(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, base_url: str
) -> None:
    hub: ConnectionManager = app.state.resources.live
    cid = (await create_conversation(client))["id"]
    link = hub.client_id
    for _ in range(5):
        async with ws_client(base_url, caller.token) as ws:
            await ws.subscribe(cid)
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid)
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "still"})
        assert (await ws.recv())["data"]["message"]["content"] == "still"
    assert hub.client_id == link  # the SUNSUBSCRIBE confirmations were not taken for a move
