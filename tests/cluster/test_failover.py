"""A primary of the cluster dies mid-stream: its replica takes over and the service carries on.

The conversation's primary (the node owning the slot of ``{<conversation id>}``) is killed
(SIGKILL: no shutdown, no handshake) while an agent streams a reply to a WebSocket viewer; a
second viewer comes in during the failover, resuming from an earlier event. The agent and a user
keep writing, retrying a 503 as it tells them to. Afterwards every write that was accepted is
there, each viewer saw every delta in order or was told to resync from a snapshot, and
``/health/ready`` answered 200 again within the failover time plus 5 s.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed

from conversation_service.events.log import events_key
from tests.conftest import Caller, create_conversation
from tests.redis_cluster import LocalCluster
from tests.websocket.helpers import SERVICE, post_deltas, serve, start_reply, ws_client

pytestmark = pytest.mark.slow

DELTAS = 30
KILLED_AT = 10
# Guards against a hang only: a failover takes about cluster-node-timeout (2 s) plus an election.
GUARD = 60.0


@pytest.fixture(scope="module")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


async def _until_accepted(send: Any, accepted: int) -> httpx.Response:
    """Send until the service accepts: a 503 during the failover says to retry."""
    async with asyncio.timeout(GUARD):
        while True:
            response: httpx.Response = await send()
            if response.status_code == accepted:
                return response
            assert response.status_code == 503, response.text
            await asyncio.sleep(0.1)


class Viewer:
    """A WebSocket client that resumes from its last id whenever its connection closes."""

    def __init__(self, base_url: str, caller: Caller, cid: str, after: str | None = None) -> None:
        self.base_url, self.caller, self.cid = base_url, caller, cid
        self.frames: list[dict[str, Any]] = []
        self.last: str | None = after
        self.resumes = 0
        self.done = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            try:
                async with ws_client(self.base_url, self.caller.token) as ws:
                    await ws.subscribe(self.cid, after=self.last)
                    self.subscribed.set()
                    while True:
                        frame = await ws.recv(GUARD)
                        self.frames.append(frame)
                        self.last = frame["id"] or self.last
                        if frame["type"] == "message.completed":
                            self.done.set()
                            return
            except (ConnectionClosed, OSError, AssertionError):
                self.resumes += 1
                await asyncio.sleep(0.2)


async def test_a_killed_primary_mid_stream_loses_no_accepted_write_and_leaves_no_silent_gap(
    app: FastAPI,
    client: httpx.AsyncClient,
    caller: Caller,
    base_url: str,
    redis_cluster: LocalCluster,
) -> None:
    cid = (await create_conversation(client))["id"]
    mid = (await start_reply(client, cid))["id"]
    primary = redis_cluster.primary_of(events_key(cid))
    viewer = Viewer(base_url, caller, cid)
    watching = asyncio.create_task(viewer.run())
    late: Viewer | None = None
    tasks = [watching]
    deltas_url = f"/internal/v1/conversations/{cid}/messages/{mid}/deltas"
    try:
        async with asyncio.timeout(GUARD):
            await viewer.subscribed.wait()
        ids = await post_deltas(client, cid, mid, [(i, f"{i} ") for i in range(KILLED_AT)])
        redis_cluster.kill(primary)
        killed = time.monotonic()
        # A second viewer comes (back) during the failover, resuming after delta 4.
        late = Viewer(base_url, caller, cid, after=ids[4])
        tasks.append(asyncio.create_task(late.run()))
        # The cluster's own view: when the slot has a new primary and the cluster is ok again.
        failed_over = asyncio.create_task(
            asyncio.to_thread(redis_cluster.wait_failover, events_key(cid), primary, GUARD)
        )
        for i in range(KILLED_AT, DELTAS):
            body = {"deltas": [{"index": i, "text": f"{i} "}]}
            await _until_accepted(
                lambda body=body: client.post(deltas_url, json=body, headers=SERVICE), 202
            )
        appended = await _until_accepted(
            lambda: client.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": "still there?"}
            ),
            201,
        )
        completed = await _until_accepted(
            lambda: client.post(f"{deltas_url[:-7]}/complete", json={}, headers=SERVICE), 200
        )
        failover_seconds = await failed_over - killed
        async with asyncio.timeout(GUARD):
            while (await client.get("/health/ready")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        ready_seconds = time.monotonic() - killed
        async with asyncio.timeout(GUARD):
            await viewer.done.wait()
            await late.done.wait()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if redis_cluster.processes[primary].poll() is not None:
            # The old primary comes back as a replica of the new one (later tests keep two
            # copies of every slot).
            redis_cluster.start_node(primary)
            await asyncio.to_thread(redis_cluster.wait_healed)

    text = "".join(f"{i} " for i in range(DELTAS))
    # No accepted write lost: every accepted delta is in the reply, the message in the history.
    assert completed.json()["message"]["content"] == text
    history = (await client.get(f"/api/v1/conversations/{cid}/messages")).json()["data"]
    assert appended.json()["id"] in [m["id"] for m in history]
    # Each viewer: every delta once and in order, or told to resync from a snapshot.
    assert late is not None
    for each, first in ((viewer, 0), (late, 5)):
        indexes = [f["data"]["index"] for f in each.frames if f["type"] == "message.delta"]
        snapshots = [f for f in each.frames if f["type"] == "snapshot"]
        assert indexes == list(range(first, DELTAS)) or snapshots, (indexes, each.resumes)
        assert len(indexes) == len(set(indexes))
        assert each.frames[-1]["data"]["message"]["content"] == text
    # Ready again within the cluster's failover time plus 5 s.
    assert ready_seconds <= failover_seconds + 5, (ready_seconds, failover_seconds)
