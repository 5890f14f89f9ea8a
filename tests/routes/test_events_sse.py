"""``GET /api/v1/conversations/{id}/events``: Server-Sent Events over a real uvicorn server."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from conversation_service.websocket import handlers
from tests.conftest import Caller, create_conversation, new_caller
from tests.websocket.helpers import TIMEOUT, complete, post_deltas, serve, start_reply


@pytest.fixture(scope="session")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


class EventStream:
    """A parsed ``text/event-stream``: events (id, data) and comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, wait: float = TIMEOUT) -> tuple[str | None, dict[str, Any]]:
        """The next event with data (comments and retry hints are recorded, not returned)."""
        event_id: str | None = None
        data: list[str] = []
        async with asyncio.timeout(wait):
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    frame: dict[str, Any] = orjson.loads("\n".join(data))
                    return event_id, frame
        raise AssertionError("stream ended")

    async def until(self, kind: str) -> list[tuple[str | None, dict[str, Any]]]:
        """Events up to and including the first of type ``kind`` (session events skipped)."""
        out = []
        while True:
            event_id, frame = await self.next()
            if frame["type"] == "session.started":
                continue
            out.append((event_id, frame))
            if frame["type"] == kind:
                return out


@asynccontextmanager
async def sse(
    base_url: str, cid: str, caller: Caller, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[EventStream]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http,
        http.stream(
            "GET",
            f"/api/v1/conversations/{cid}/events",
            headers={**caller.headers, **(headers or {})},
            params=params,
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


async def test_events_stream_with_ids_and_resume_with_last_event_id(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with sse(base_url, cid, caller) as stream:
        _, subscribed = await stream.next()
        assert subscribed["type"] == "subscribed"
        message = await start_reply(client, cid)
        await post_deltas(client, cid, message["id"], [(0, "a"), (1, "b")])
        first = await stream.until("message.delta")
    last_id = first[-1][0]
    assert last_id is not None
    assert all(event_id == frame["id"] for event_id, frame in first)

    await post_deltas(client, cid, message["id"], [(1, "b"), (2, "c")])
    await complete(client, cid, message["id"])
    async with sse(base_url, cid, caller, headers={"Last-Event-ID": last_id}) as stream:
        await stream.next()  # subscribed
        rest = await stream.until("message.completed")
    kinds = [(frame["type"], frame["data"].get("index")) for _, frame in rest]
    assert kinds == [("message.delta", 1), ("message.delta", 2), ("message.completed", None)]


async def test_after_query_and_token_query_work_for_clients_without_headers(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "one"})
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "two"})
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http:
        url = f"/api/v1/conversations/{cid}/events"
        async with http.stream(
            "GET", url, params={"token": caller.token, "after": "1-0"}
        ) as response:
            assert response.status_code == 200
            stream = EventStream(response)
            await stream.next()  # subscribed
            event_id, snapshot = await stream.next()
    assert snapshot["type"] == "snapshot"  # 1-0 predates the log: a snapshot, then live
    assert [m["content"] for m in snapshot["data"]["messages"]] == ["one", "two"]
    assert event_id == snapshot["id"]


async def test_keep_alive_comments_flow_while_nothing_happens(
    base_url: str, client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "SSE_KEEPALIVE_SECONDS", 0.05)
    cid = (await create_conversation(client))["id"]
    comments: list[str] = []
    async with sse(base_url, cid, caller) as stream:
        await stream.next()  # subscribed
        async with asyncio.timeout(TIMEOUT):
            async for line in stream.lines:
                if line.startswith(":"):
                    comments.append(line)
                if len(comments) == 2:
                    break
    # Two keep-alives in a row with no event between them: the stream stays open while idle.
    assert comments == [": keep-alive", ": keep-alive"]


async def test_another_tenants_conversation_is_404_and_no_token_is_401(
    base_url: str, client: httpx.AsyncClient
) -> None:
    cid = (await create_conversation(client))["id"]
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http:
        stranger = await http.get(
            f"/api/v1/conversations/{cid}/events", headers=new_caller().headers
        )
        anonymous = await http.get(f"/api/v1/conversations/{cid}/events")
    assert stranger.status_code == 404
    assert stranger.headers["content-type"] == "application/problem+json"
    assert anonymous.status_code == 401


async def test_a_last_event_id_that_is_not_an_event_id_is_ignored(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    cid = (await create_conversation(client))["id"]
    async with sse(base_url, cid, caller, headers={"Last-Event-ID": "yesterday"}) as stream:
        _, subscribed = await stream.next()
    assert subscribed["type"] == "subscribed"
    assert subscribed["data"]["after"] != "yesterday"  # live from the log's head


async def test_an_event_id_beyond_64_bits_is_refused_as_after_and_ignored_as_last_event_id(
    base_url: str, client: httpx.AsyncClient, caller: Caller
) -> None:
    # The shape of an event id, but Redis stream ids are two unsigned 64-bit numbers.
    too_big = "94012176560075768832-85"
    cid = (await create_conversation(client))["id"]
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http:
        refused = await http.get(
            f"/api/v1/conversations/{cid}/events", params={"after": too_big}, headers=caller.headers
        )
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert "after" in refused.text
    async with sse(base_url, cid, caller, headers={"Last-Event-ID": too_big}) as stream:
        _, subscribed = await stream.next()
    assert subscribed["type"] == "subscribed"
    assert subscribed["data"]["after"] != too_big
