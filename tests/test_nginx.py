"""deploy/nginx.conf with Debian's nginx in front of two real API replicas.

nginx runs the deployment's own file; only its ``listen`` port and the two upstream ``server``
addresses are replaced by this test's loopback ports. Every client here talks to nginx only:

* a WebSocket stays up while the REST requests around it are balanced to both replicas;
* SSE delivers each delta while the reply is still streaming (the next one is posted only after
  the client has received the previous one: a buffering proxy would hold it back);
* a replica killed mid-reply leaves its viewers to reconnect through nginx, which sends them to
  the survivor, and resume from their last event id, gap-free and without duplicates.
"""

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from conversation_service.config.settings import ConversationSettings
from tests import nginx_proxy
from tests.conftest import Caller, new_caller
from tests.live_server import ServerProcess
from tests.test_replicas import _env
from tests.websocket.helpers import (
    TIMEOUT,
    Client,
    complete,
    post_deltas,
    start_reply,
    ws_client,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not nginx_proxy.available(), reason="needs nginx (apt-get install nginx)"),
]


@dataclass
class Balanced:
    """nginx at ``base_url`` in front of ``replicas``."""

    base_url: str
    replicas: list[ServerProcess]


@contextmanager
def _balanced(settings: ConversationSettings) -> Iterator[Balanced]:
    with ExitStack() as stack:
        cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="balanced-")))
        servers = [ServerProcess(_env(settings), cwd=cwd) for _ in range(2)]
        for server in servers:
            server.start()
            stack.callback(server.stop)
        for server in servers:
            server.wait_ready()
        ports = [s.port for s in servers]
        yield Balanced(stack.enter_context(nginx_proxy.nginx(ports)), servers)


@pytest.fixture(scope="module")
def balanced(settings: ConversationSettings) -> Iterator[Balanced]:
    """Two API replicas (real uvicorn processes) and nginx in front of them, for the tests that
    leave both running."""
    with _balanced(settings) as running:
        yield running


@pytest.fixture
def doomed(settings: ConversationSettings) -> Iterator[Balanced]:
    """The same, for a test that kills a replica."""
    with _balanced(settings) as running:
        yield running


def _http(base_url: str, caller: Caller) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers=caller.headers, timeout=TIMEOUT)


async def _appends_served(server: ServerProcess) -> float:
    """How many appends this replica answered (its own /metrics, not through nginx)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        text = (await http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total"
        and sample.labels.get("method") == "POST"
        and sample.labels.get("route") == "/api/v1/conversations/{conversation_id}/messages"
    )


async def test_a_websocket_stays_up_while_requests_are_balanced_to_both_replicas(
    balanced: Balanced,
) -> None:
    caller = new_caller()
    before = [await _appends_served(server) for server in balanced.replicas]
    async with _http(balanced.base_url, caller) as http:
        created = await http.post("/api/v1/conversations", json={"agent_id": "agent-1"})
        cid = created.json()["id"]
        async with ws_client(balanced.base_url, caller.token) as ws:
            await ws.subscribe(cid)
            for i in range(8):
                sent = await http.post(
                    f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"}
                )
                assert sent.status_code == 201, sent.text
                frame = await ws.recv_until(lambda f: f["type"] == "message.created")
                assert frame[-1]["data"]["message"]["content"] == f"m{i}"
            # Still the same socket, still answering.
            await ws.send({"type": "ping"})
            assert (await ws.recv())["type"] == "pong"
    after = [await _appends_served(server) for server in balanced.replicas]
    served = [now - then for now, then in zip(after, before, strict=True)]
    assert sum(served) == 8
    assert all(count > 0 for count in served), served


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield orjson.loads("\n".join(data))
            data = []


async def test_sse_through_nginx_delivers_each_delta_before_the_next_is_posted(
    balanced: Balanced,
) -> None:
    caller = new_caller()
    async with _http(balanced.base_url, caller) as http, _http(balanced.base_url, caller) as sse:
        cid = (await http.post("/api/v1/conversations", json={"agent_id": "agent-1"})).json()["id"]
        async with sse.stream("GET", f"/api/v1/conversations/{cid}/events") as stream:
            assert stream.status_code == 200
            events = _sse_events(stream)
            mid = (await start_reply(http, cid))["id"]
            received: list[str] = []
            for i in range(5):
                await post_deltas(http, cid, mid, [(i, f"d{i} ")])
                async with asyncio.timeout(TIMEOUT):
                    async for event in events:
                        if event["type"] == "message.delta":
                            received.append(event["data"]["text"])
                            break
            # Every delta arrived while the reply was still streaming.
            assert received == [f"d{i} " for i in range(5)]
            await complete(http, cid, mid)
            async with asyncio.timeout(TIMEOUT):
                async for event in events:
                    if event["type"] == "message.completed":
                        assert event["data"]["message"]["content"] == "".join(received)
                        break


@asynccontextmanager
async def _viewer(
    base_url: str, caller: Caller, cid: str, after: str | None
) -> AsyncIterator[Client]:
    async with ws_client(base_url, caller.token) as ws:
        await ws.subscribe(cid, after=after)
        yield ws


async def _watch_to_the_end(
    base_url: str, caller: Caller, cid: str, ws: Client, seen: list[dict[str, Any]]
) -> bool:
    """Frames until the reply completes, reconnecting through nginx with the last event id if
    the connection drops; returns whether it had to reconnect."""
    try:
        seen.extend(await ws.recv_until(lambda f: f["type"] == "message.completed"))
        return False
    except ConnectionClosed:
        pass
    last = next((f["id"] for f in reversed(seen) if f.get("id")), None)
    async with _viewer(base_url, caller, cid, last) as again:
        seen.extend(await again.recv_until(lambda f: f["type"] == "message.completed"))
    return True


async def test_viewers_of_a_killed_replica_resume_through_the_other_one(doomed: Balanced) -> None:
    caller = new_caller()
    base = doomed.base_url
    async with _http(base, caller) as http:
        cid = (await http.post("/api/v1/conversations", json={"agent_id": "agent-1"})).json()["id"]
        mid = (await start_reply(http, cid))["id"]
        async with AsyncExitStack() as stack:
            # Consecutive connections alternate between the replicas (shared round robin).
            viewers = [
                await stack.enter_async_context(_viewer(base, caller, cid, None)) for _ in range(4)
            ]
            seen: list[list[dict[str, Any]]] = [[] for _ in viewers]
            await post_deltas(http, cid, mid, [(i, f"{i} ") for i in range(5)])
            for ws, frames in zip(viewers, seen, strict=True):
                frames.extend(await ws.recv_until(lambda f: f.get("data", {}).get("index") == 4))
            doomed.replicas[0].kill()
            # The orchestrator carries on through nginx, which now reaches only the survivor.
            await post_deltas(http, cid, mid, [(i, f"{i} ") for i in range(5, 10)])
            await complete(http, cid, mid)
            resumed = await asyncio.gather(
                *(
                    _watch_to_the_end(base, caller, cid, ws, frames)
                    for ws, frames in zip(viewers, seen, strict=True)
                )
            )
    assert any(resumed), "no viewer was on the killed replica"
    assert not all(resumed), "no viewer was on the surviving replica"
    for frames in seen:
        deltas = [f["data"]["index"] for f in frames if f["type"] == "message.delta"]
        assert deltas == list(range(10))
        ids = [f["id"] for f in frames if f.get("id")]
        assert len(ids) == len(set(ids))
        assert frames[-1]["data"]["message"]["content"] == "".join(f"{i} " for i in range(10))
