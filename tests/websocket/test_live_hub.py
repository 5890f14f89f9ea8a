"""The per-process live hub: one pub/sub connection, resync after it drops, shared channels."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from conversation_service.websocket.connection_manager import ConnectionManager, Outbox
from conversation_service.websocket.events import Delta
from tests.conftest import Caller, create_conversation
from tests.websocket.helpers import serve, start_reply, wait_until, ws_client


@pytest.fixture(scope="session")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


async def _wait_connected(hub: ConnectionManager, old_id: int | None) -> None:
    await wait_until(lambda: hub.client_id not in (None, old_id) and hub._connection is not None)


async def test_events_published_while_the_pubsub_connection_was_down_are_not_lost(
    base_url: str, client: httpx.AsyncClient, caller: Caller, app: FastAPI
) -> None:
    resources = app.state.resources
    hub: ConnectionManager = resources.live
    redis: Redis = resources.redis
    cid = (await create_conversation(client))["id"]
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid)
        await resources.events.publish(cid, "summary.updated", {"n": 0})
        assert (await ws.recv())["data"] == {"n": 0}
        old_id = hub.client_id
        assert old_id is not None
        await redis.client_kill_filter(_id=str(old_id))
        # Published while the hub is (re)connecting: recovered from the log, in order, once.
        for n in range(1, 6):
            await resources.events.publish(cid, "summary.updated", {"n": n})
        await _wait_connected(hub, old_id)
        for n in range(6, 9):
            await resources.events.publish(cid, "summary.updated", {"n": n})
        frames = await ws.recv_until(lambda f: f["data"] == {"n": 8})
    assert [f["data"]["n"] for f in frames] == list(range(1, 9))


async def test_one_channel_per_conversation_whatever_the_number_of_viewers(
    base_url: str, client: httpx.AsyncClient, caller: Caller, app: FastAPI
) -> None:
    hub: ConnectionManager = app.state.resources.live
    cid = (await create_conversation(client))["id"]
    before = hub.channels
    async with (
        ws_client(base_url, caller.token) as first,
        ws_client(base_url, caller.token) as second,
        ws_client(base_url, caller.token) as third,
    ):
        for ws in (first, second, third):
            await ws.subscribe(cid)
        assert hub.channels == before + 1
        numsub = await app.state.resources.redis.pubsub_numsub(f"cs:live:{cid}")
        assert numsub[0][1] == 1  # one Redis subscription for three viewers
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
        got = [await ws.recv() for ws in (first, second, third)]
        await first.send({"type": "unsubscribe", "conversation_id": cid})
        await first.recv()
        assert hub.channels == before + 1
    await wait_until(lambda: hub.channels == before)
    assert len({orjson.dumps(frame) for frame in got}) == 1


async def _frames(outbox: Outbox) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while frames := await outbox.next_frames(0.01):
        got.extend(orjson.loads(frame) for frame in frames)
    return got


async def test_deltas_reach_local_subscribers_once_and_in_order_with_their_pubsub_copies(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    resources = app.state.resources
    hub: ConnectionManager = resources.live
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    outbox = Outbox()
    subscription = await hub.subscribe(outbox, uuid.UUID(cid), None)
    try:
        await _frames(outbox)  # subscribed (and catch-up)
        ids = await resources.events.publish_deltas(cid, mid, [Delta(0, "a"), Delta(1, "b")])
        ids += await resources.events.publish_deltas(cid, mid, [Delta(2, "c")])
        # An event that only comes through pub/sub: once it is here, so are the deltas' copies.
        marker = await resources.events.publish(cid, "summary.updated", {"n": 1})
        got: list[dict[str, Any]] = []

        async def marker_arrived() -> bool:
            got.extend(await _frames(outbox))
            return any(frame["id"] == marker for frame in got)

        await wait_until(marker_arrived)
    finally:
        hub.unsubscribe(subscription)
    deltas = [frame for frame in got if frame["type"] == "message.delta"]
    assert [frame["id"] for frame in deltas] == ids
    assert [frame["data"]["text"] for frame in deltas] == ["a", "b", "c"]


async def test_local_delivery_skips_a_subscriber_that_has_not_seen_the_event_before(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    hub: ConnectionManager = app.state.resources.live
    cid = (await create_conversation(client))["id"]
    outbox = Outbox()
    subscription = await hub.subscribe(outbox, uuid.UUID(cid), None)
    try:
        await _frames(outbox)
        seen = subscription.last
        unseen = (2**62, 0)  # an event of another replica, still on its way
        assert hub.deliver_local(cid, [(unseen, (2**62, 1), '{"id":"x"}')]) == 0
        assert await _frames(outbox) == []
        assert hub.deliver_local(cid, [(seen, (2**62, 2), '{"id":"y"}')]) == 1
        assert await _frames(outbox) == [{"id": "y"}]
    finally:
        hub.unsubscribe(subscription)
