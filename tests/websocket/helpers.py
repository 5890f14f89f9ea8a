"""Helpers for realtime tests: the session's app behind a real uvicorn server, a JSON WebSocket
client, and the orchestrator's streaming calls.

The server runs in the test's event loop with ``lifespan="off"``: the ``app`` fixture already
runs the lifespan, so the in-process ASGI client and the WebSocket clients share one live hub.
Every wait has a generous timeout that only guards against a hang.
"""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import INTERNAL_KEY

SERVICE = {"Authorization": f"Bearer {INTERNAL_KEY}"}
TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan already running) on a free port; yields ``http://host:port``."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(TIMEOUT):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


def ws_url(base_url: str, path: str = "/api/v1/ws", token: str | None = None) -> str:
    """The ``ws://`` URL of ``path`` on the server, with ``?token=`` when given."""
    url = base_url.replace("http://", "ws://") + path
    return f"{url}?token={token}" if token else url


# Frames most tests do not look at: heartbeats, and the session a first subscription starts.
SKIPPED = frozenset({"heartbeat", "session.started"})


class Client:
    """A WebSocket client speaking JSON frames (``recv`` skips ``skip`` types)."""

    def __init__(self, connection: ClientConnection, skip: frozenset[str] = SKIPPED) -> None:
        self.connection = connection
        self.skip = skip

    async def send(self, frame: dict[str, Any] | str) -> None:
        """Send a JSON frame (or raw text)."""
        await self.connection.send(
            frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        )

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        """The next frame of a type not skipped."""
        async with asyncio.timeout(wait):
            while True:
                frame: dict[str, Any] = orjson.loads(await self.connection.recv())
                if frame["type"] not in self.skip:
                    return frame

    async def recv_until(
        self, done: Callable[[dict[str, Any]], bool], wait: float = TIMEOUT
    ) -> list[dict[str, Any]]:
        """Frames up to and including the first for which ``done`` is true."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(wait):
            while True:
                frame = await self.recv(wait)
                frames.append(frame)
                if done(frame):
                    return frames

    async def subscribe(self, conversation_id: str, after: str | None = None) -> dict[str, Any]:
        """Subscribe and return the ``subscribed`` acknowledgement."""
        await self.send({"type": "subscribe", "conversation_id": conversation_id, "after": after})
        frame = await self.recv()
        assert frame["type"] == "subscribed", frame
        return frame


@asynccontextmanager
async def ws_client(
    base_url: str, token: str, skip: frozenset[str] = SKIPPED, **options: Any
) -> AsyncIterator[Client]:
    """A connected client of ``/api/v1/ws`` authenticated with ``token``."""
    async with connect(ws_url(base_url, token=token), open_timeout=TIMEOUT, **options) as conn:
        yield Client(conn, skip)


async def start_reply(http: httpx.AsyncClient, conversation_id: str, **body: Any) -> dict[str, Any]:
    """The orchestrator opens a streaming assistant message."""
    response = await http.post(
        f"/internal/v1/conversations/{conversation_id}/messages",
        json={"role": "assistant", "status": "streaming", **body},
        headers=SERVICE,
    )
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()
    return message


async def post_deltas(
    http: httpx.AsyncClient, conversation_id: str, message_id: str, deltas: list[tuple[int, str]]
) -> list[str | None]:
    """The orchestrator streams chunks; returns their event ids."""
    response = await http.post(
        f"/internal/v1/conversations/{conversation_id}/messages/{message_id}/deltas",
        json={"deltas": [{"index": index, "text": text} for index, text in deltas]},
        headers=SERVICE,
    )
    assert response.status_code == 202, response.text
    ids: list[str | None] = response.json()["event_ids"]
    return ids


async def complete(
    http: httpx.AsyncClient, conversation_id: str, message_id: str, **body: Any
) -> dict[str, Any]:
    """The orchestrator completes the reply."""
    response = await http.post(
        f"/internal/v1/conversations/{conversation_id}/messages/{message_id}/complete",
        json=body,
        headers=SERVICE,
    )
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def event_key(event_id: str) -> tuple[int, int]:
    """An event id as a comparable tuple."""
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


async def wait_until(check: Callable[[], Awaitable[bool] | bool], wait: float = TIMEOUT) -> None:
    """Poll ``check`` until it holds (``wait`` seconds at most: a guard, not a timing)."""
    async with asyncio.timeout(wait):
        while True:
            outcome = check()
            if not isinstance(outcome, bool):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(0.01)


def new_uuid() -> str:
    """A random UUID string (an id nobody owns)."""
    return str(uuid.uuid4())
