"""The per-process live hub: one pub/sub connection, resync after it drops, shared channels."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from conversation_service.events.log import live_channel, parse_event_id
from conversation_service.websocket.connection_manager import ConnectionManager
from tests.conftest import Caller, create_conversation
from tests.websocket.helpers import serve, wait_until, ws_client


@pytest.fixture(scope="session")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


async def _wait_connected(hub: ConnectionManager, old_id: int | None) -> None:
    await wait_until(lambda: hub.client_id not in (None, old_id) and hub._link is not None)


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
        numsub = await app.state.resources.redis.pubsub_numsub(live_channel(cid))
        assert numsub[0][1] == 1  # one Redis subscription for three viewers
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
        got = [await ws.recv() for ws in (first, second, third)]
        await first.send({"type": "unsubscribe", "conversation_id": cid})
        await first.recv()
        assert hub.channels == before + 1
    await wait_until(lambda: hub.channels == before)
    assert len({orjson.dumps(frame) for frame in got}) == 1


async def test_a_publisher_can_wait_for_its_event_to_reach_this_process_viewers(
    base_url: str, client: httpx.AsyncClient, caller: Caller, app: FastAPI
) -> None:
    resources = app.state.resources
    hub: ConnectionManager = resources.live
    cid = (await create_conversation(client))["id"]
    unwatched = (await create_conversation(client))["id"]
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid)
        subscription = next(iter(hub._channels[live_channel(cid).encode()]))
        # Live, no longer catching up (events meanwhile are buffered, then delivered in order).
        await wait_until(lambda: subscription.pending is None)
        event_id = await resources.events.publish(cid, "summary.updated", {"n": 1})
        await hub.fanned_out(uuid.UUID(cid), event_id)
        # Handed to the viewer's outbox before the publisher goes on (other events of the
        # conversation, e.g. from its creation, may come just before or after it).
        wanted = parse_event_id(event_id)
        assert wanted is not None
        assert subscription.last is not None
        assert subscription.last >= wanted
        frames = await ws.recv_until(lambda frame: frame["data"] == {"n": 1})
        assert frames[-1]["id"] == event_id
        # An event that never comes (an id far ahead): the wait is bounded and leaves nothing.
        async with asyncio.timeout(10):  # a guard against a hang, not a timing
            await hub.fanned_out(uuid.UUID(cid), "99999999999999-0", wait_seconds=0.05)
        assert hub._awaited == {}
    # Nobody here watches the conversation: no wait at all.
    other = await resources.events.publish(unwatched, "summary.updated", {"n": 2})
    await hub.fanned_out(uuid.UUID(unwatched), other, wait_seconds=60)
    assert hub._awaited == {}


async def test_a_hub_stopped_at_any_point_of_its_start_up_stops_its_reader(
    redis_url: str, app: FastAPI
) -> None:
    """Stop must not leave a reader behind, whatever it was doing.

    On Python 3.11, ``asyncio.wait_for`` (redis-py's send) drops a cancellation that arrives as
    the send finishes: a reader cancelled right then went on to read forever on a connection
    nobody would close, and was later destroyed pending.
    """
    redis: Redis = app.state.resources.redis
    for attempt in range(150):
        hub = ConnectionManager(redis_url=redis_url, redis=redis, snapshot=_no_snapshot)
        await hub.start()
        await asyncio.sleep((attempt % 50) / 10_000)
        await hub.stop()
        assert hub._reader is not None
        assert hub._reader.done(), f"reader still running after stop (attempt {attempt})"


async def _no_snapshot(conversation_id: uuid.UUID, head: str | None) -> str:
    raise AssertionError("no client subscribes in this test")
