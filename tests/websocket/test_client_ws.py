"""``/api/v1/ws`` with a real ``websockets`` client against a real uvicorn server."""

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conversation_service.events.log import events_key
from conversation_service.websocket import handlers
from tests.conftest import Caller, create_conversation, new_caller
from tests.websocket.helpers import (
    TIMEOUT,
    Client,
    complete,
    event_key,
    new_uuid,
    post_deltas,
    serve,
    start_reply,
    wait_until,
    ws_client,
    ws_url,
)


@pytest.fixture(scope="session")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


@pytest.fixture
async def redis(app: FastAPI) -> Redis:
    client: Redis = app.state.resources.redis
    return client


def _ids(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["id"] for frame in frames if frame["id"] is not None]


async def test_a_streamed_reply_arrives_in_order(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with ws_client(base_url, caller.token) as ws:
        ack = await ws.subscribe(cid)
        assert ack["conversation_id"] == cid
        message = await start_reply(client, cid)
        for start in range(0, 20, 5):
            await post_deltas(
                client, cid, message["id"], [(i, f"t{i} ") for i in range(start, start + 5)]
            )
        final = await complete(client, cid, message["id"])
        frames = await ws.recv_until(lambda f: f["type"] == "message.completed")

    assert [f["type"] for f in frames] == [
        "message.created",
        *["message.delta"] * 20,
        "message.completed",
    ]
    assert frames[0]["data"]["message"]["status"] == "streaming"
    assert [f["data"]["index"] for f in frames[1:-1]] == list(range(20))
    assert all(f["conversation_id"] == cid for f in frames)
    ids = _ids(frames)
    assert len(ids) == len(frames)
    assert [event_key(i) for i in ids] == sorted({event_key(i) for i in ids})
    assert final["content"] == "".join(f"t{i} " for i in range(20))
    assert frames[-1]["data"]["message"]["content"] == final["content"]


async def test_resume_after_a_dropped_connection_mid_reply_has_no_gap_and_no_duplicate(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    message = await start_reply(client, cid)
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid)
        await post_deltas(client, cid, message["id"], [(i, str(i)) for i in range(5)])
        seen = await ws.recv_until(
            lambda f: f["type"] == "message.delta" and f["data"]["index"] == 4
        )
    last = seen[-1]["id"]
    # While the client is away: more deltas, a repeat of one it already has, and the end.
    await post_deltas(client, cid, message["id"], [(4, "4"), (5, "5"), (6, "6")])
    await post_deltas(client, cid, message["id"], [(i, str(i)) for i in range(7, 10)])
    async with ws_client(base_url, caller.token) as ws:
        ack = await ws.subscribe(cid, after=last)
        assert ack["data"]["after"] == last
        replayed = await ws.recv_until(
            lambda f: f["type"] == "message.delta" and f["data"]["index"] == 9
        )
        await complete(client, cid, message["id"])
        live = await ws.recv_until(lambda f: f["type"] == "message.completed")

    assert [f["data"]["index"] for f in replayed] == [5, 6, 7, 8, 9]
    assert [f["type"] for f in live] == ["message.completed"]
    every = _ids(seen) + _ids(replayed) + _ids(live)
    assert len(every) == len(set(every))
    assert [event_key(i) for i in every] == sorted(event_key(i) for i in every)
    assert live[0]["data"]["message"]["content"] == "0123456789"


async def test_subscribe_without_after_gets_only_new_events(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "earlier"})
    async with ws_client(base_url, caller.token) as ws:
        ack = await ws.subscribe(cid)
        assert ack["data"]["after"] is not None  # the log's head when the subscription began
        await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "later"})
        frame = await ws.recv()
    assert frame["type"] == "message.created"
    assert frame["data"]["message"]["content"] == "later"


async def test_resume_from_a_trimmed_log_gets_a_snapshot_then_live_events(
    base_url: str, client: httpx.AsyncClient, caller: Caller, redis: Redis
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hello"})
    message = await start_reply(client, cid)
    ids = await post_deltas(client, cid, message["id"], [(0, "Hi "), (1, "there")])
    stale = (await redis.xrange(events_key(cid), count=1))[0][0].decode()
    await redis.xtrim(events_key(cid), maxlen=1, approximate=False)  # the tail moved on
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid, after=stale)
        snapshot = await ws.recv()
        await post_deltas(client, cid, message["id"], [(2, "!")])
        delta = await ws.recv()

    assert snapshot["type"] == "snapshot"
    assert snapshot["id"] == ids[-1]  # the log position the snapshot is consistent with
    messages = snapshot["data"]["messages"]
    assert [m["content"] for m in messages] == ["hello", "Hi there"]
    assert messages[1]["status"] == "streaming"
    assert snapshot["data"]["conversation"]["id"] == cid
    assert snapshot["data"]["has_more"] is False
    assert delta["type"] == "message.delta"
    assert delta["data"]["text"] == "!"


async def test_resume_after_an_unknown_position_gets_a_snapshot(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid, after="1-0")  # the conversation has no log at all
        snapshot = await ws.recv()
    assert snapshot["type"] == "snapshot"
    assert snapshot["id"] is None
    assert snapshot["data"]["messages"] == []


async def test_subscribing_to_another_tenants_conversation_is_refused_like_a_404(
    base_url: str, client: httpx.AsyncClient
) -> None:
    cid = (await create_conversation(client))["id"]
    stranger = new_caller()
    async with ws_client(base_url, stranger.token) as ws:
        await ws.send({"type": "subscribe", "conversation_id": cid, "after": None})
        refused = await ws.recv()
        await ws.send({"type": "subscribe", "conversation_id": new_uuid(), "after": None})
        unknown = await ws.recv()
        await ws.send({"type": "ping", "data": 1})
        pong = await ws.recv()
    assert refused["type"] == "error"
    assert refused["data"]["code"] == "not_found"
    assert refused["data"]["status"] == 404
    assert unknown["data"] == refused["data"] | {"detail": unknown["data"]["detail"]}
    assert pong == {"id": None, "type": "pong", "conversation_id": None, "data": 1}


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "launch"}', "type"),
        ('{"type": "subscribe", "conversation_id": "nope"}', "conversation_id"),
        ('{"type": "subscribe", "conversation_id": "' + new_uuid() + '", "after": "x"}', "after"),
        ("[1, 2]", ""),
    ],
)
async def test_a_malformed_frame_is_answered_with_an_error_frame_and_the_connection_survives(
    base_url: str, caller: Caller, frame: str, detail: str
) -> None:
    async with ws_client(base_url, caller.token) as ws:
        await ws.send(frame)
        error = await ws.recv()
        await ws.send({"type": "ping"})
        pong = await ws.recv()
    assert error["type"] == "error"
    assert error["data"]["code"] == "invalid_frame"
    assert detail in error["data"]["detail"]
    assert pong["type"] == "pong"


async def test_an_oversize_frame_closes_the_connection_with_1009(
    base_url: str, caller: Caller
) -> None:
    async with ws_client(base_url, caller.token) as ws:
        await ws.send({"type": "ping", "data": "x" * (handlers.MAX_CLIENT_FRAME_BYTES + 1)})
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
async def test_a_connection_without_a_valid_token_is_closed_with_4401(
    base_url: str, token: str | None
) -> None:
    async with connect(ws_url(base_url, token=token)) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_the_token_may_come_in_an_authorization_header(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with connect(ws_url(base_url), additional_headers=caller.headers) as conn:
        ack = await Client(conn).subscribe(cid)
    assert ack["conversation_id"] == cid


async def test_typing_reaches_the_other_viewers_without_an_id(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with (
        ws_client(base_url, caller.token) as typist,
        ws_client(base_url, caller.token) as viewer,
    ):
        await typist.subscribe(cid)
        await viewer.subscribe(cid)
        await typist.send({"type": "typing", "conversation_id": cid})
        typing = await viewer.recv()
        await typist.send({"type": "typing", "conversation_id": new_uuid()})
        refused = await typist.recv_until(lambda f: f["type"] == "error")
    assert typing == {
        "id": None,
        "type": "typing",
        "conversation_id": cid,
        "data": {"user_id": caller.user},
    }
    assert refused[-1]["data"]["code"] == "not_subscribed"


async def test_unsubscribe_stops_the_events(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    first = (await create_conversation(client))["id"]
    second = (await create_conversation(client))["id"]
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(first)
        await ws.subscribe(second)
        await ws.send({"type": "unsubscribe", "conversation_id": first})
        assert (await ws.recv())["type"] == "unsubscribed"
        await client.post(f"/api/v1/conversations/{first}/messages", json={"content": "a"})
        await client.post(f"/api/v1/conversations/{second}/messages", json={"content": "b"})
        frame = await ws.recv()
    assert frame["conversation_id"] == second


async def test_a_client_too_slow_to_keep_up_is_closed_with_4408_and_can_resume(
    base_url: str,
    client: httpx.AsyncClient,
    caller: Caller,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "OUTBOX_LIMIT", 50)
    cid = (await create_conversation(client))["id"]
    publisher = app.state.resources.events
    # Incompressible: permessage-deflate would shrink a repeated character to nothing.
    total, blob = 1_000, base64.b64encode(os.urandom(6_144)).decode()
    # A tiny receive buffer and max_queue=1: the client stops reading, as a stalled tab does.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(base_url.rsplit(":", 1)[1])))
    async with connect(ws_url(base_url, token=caller.token), sock=sock, max_queue=1) as conn:
        ws = Client(conn)
        await ws.subscribe(cid)
        for _ in range(total):
            await publisher.publish(cid, "summary.updated", {"blob": blob})
        # Let the hub catch up with Redis: the outbox overflows while the client reads nothing.
        outbox = next(iter(app.state.resources.live._outboxes))
        await wait_until(lambda: outbox.close_code is not None)
        received: list[dict[str, Any]] = []

        async def drain() -> None:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    received.append(orjson.loads(await conn.recv()))

        with pytest.raises(ConnectionClosed) as closed:
            await drain()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4408
    summaries = sum(frame["type"] == "summary.updated" for frame in received)
    assert summaries < total
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid, after=received[-1]["id"])
        while summaries < total:
            frame = await ws.recv()
            assert frame["type"] == "summary.updated"
            summaries += 1


async def test_a_silent_connection_gets_heartbeats(
    base_url: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "HEARTBEAT_SECONDS", 0.05)
    async with ws_client(base_url, caller.token) as ws:
        frame = orjson.loads(await ws.connection.recv())
    assert frame["type"] == "heartbeat"


async def test_subscribing_counts_as_session_activity(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    assert (await client.get(f"/api/v1/conversations/{cid}/sessions/current")).status_code == 404
    async with ws_client(base_url, caller.token, skip=frozenset()) as ws:
        await ws.subscribe(cid)
        started = await ws.recv()
    assert started["type"] == "session.started"
    current = await client.get(f"/api/v1/conversations/{cid}/sessions/current")
    assert current.status_code == 200
    assert current.json()["channel"] == "websocket"
    assert started["data"]["session"]["id"] == current.json()["id"]
