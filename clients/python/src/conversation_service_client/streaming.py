"""``stream(conversation_id, after=…)``: a conversation's events, over WebSocket or SSE.

The WebSocket ``/api/v1/ws`` is tried first; when its handshake is refused (a proxy without
WebSocket support, a server that turned it off) the stream moves to SSE
(``GET /api/v1/conversations/{id}/events``) for good. Either way the stream survives
disconnects: it reconnects with backoff and resumes after the last event id it yielded, so the
caller sees every event once, in order (the server replays from that id, or sends a
``snapshot`` frame when its log no longer holds everything after it).
"""

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Any, Final, Literal
from uuid import UUID

import httpx
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect

from conversation_service_client.errors import (
    NotFoundError,
    ProblemError,
    StreamError,
    problem_error,
)

Transport = Literal["websocket", "sse"]
# Frames that say something about the connection, not the conversation.
CONTROL: Final = frozenset({"subscribed", "unsubscribed", "pong", "heartbeat", "typing"})
# Close codes after which reconnecting cannot help.
FATAL_CLOSE: Final = {4401: "unauthenticated (4401): the token was refused"}
MAX_BACKOFF: Final = 5.0


class Event(BaseModel):
    """One frame of the conversation's event log (``message.created``, ``snapshot``…)."""

    id: str | None
    type: str
    conversation_id: str | None = None
    data: Any = None


def _position(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Resume:
    """The stream's state across connections: the last id seen, the transport in use."""

    conversation_id: str
    after: str | None
    transports: list[Transport]
    max_reconnects: int | None
    failures: int = 0
    reconnects: int = 0

    @property
    def transport(self) -> Transport:
        return self.transports[0]

    def fall_back(self) -> None:
        """The current transport cannot work here: use the next one, or give up."""
        if len(self.transports) == 1:
            raise StreamError(f"no transport left for the stream ({self.transport} refused)")
        self.transports.pop(0)

    def backoff(self) -> float:
        """Seconds to wait before reconnecting (raises once reconnects are used up)."""
        self.reconnects += 1
        if self.max_reconnects is not None and self.reconnects > self.max_reconnects:
            raise StreamError(f"gave up after {self.max_reconnects} reconnects")
        self.failures += 1
        return float(min(MAX_BACKOFF, 0.05 * 2 ** min(self.failures, 8)))

    def handle(self, raw: str | bytes) -> Event | None:
        """The event a frame carries (None for control frames); raises on a fatal error frame."""
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "subscribed":
            self.failures = 0
            # Subscribed "from now on": the position it started at makes a reconnect gap-free.
            start = (frame.get("data") or {}).get("after")
            if self.after is None:
                self.after = start or "0-0"
            return None
        if kind == "error":
            data = frame.get("data") or {}
            if data.get("status") == 404:
                problem = {"type": "not-found", "title": "Not found", "detail": data.get("detail")}
                raise NotFoundError(404, problem, httpx.Headers())
            if data.get("code") == "unavailable":
                raise ConnectionError(str(data.get("detail")))
            raise StreamError(f"stream error frame: {data}")
        if kind in CONTROL or (frame.get("conversation_id") not in (None, self.conversation_id)):
            return None
        event = Event.model_validate(frame)
        if event.id is not None:
            if self.after is not None and _position(event.id) <= _position(self.after):
                return None  # already yielded before a reconnect
            self.after = event.id
        return event

    def subscribe_frame(self) -> str:
        return json.dumps(
            {"type": "subscribe", "conversation_id": self.conversation_id, "after": self.after}
        )

    def sse_params(self) -> dict[str, str]:
        return {"after": self.after} if self.after is not None else {}


def _ws_url(base_url: str) -> str:
    scheme, _, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/api/v1/ws"


class SSEParser:
    """Server-Sent Events: ``data:`` lines joined until a blank line; comments dropped."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:
            frame = "\n".join(self.data) if self.data else None
            self.data = []
            return frame
        if line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        return None


def _check_sse(response: httpx.Response, body: bytes) -> None:
    if response.status_code != 200:
        failed = httpx.Response(response.status_code, headers=response.headers, content=body)
        raise problem_error(failed)


def _retryable(exc: ProblemError) -> bool:
    return exc.status in (429, 502, 503, 504)


async def astream(
    http: httpx.AsyncClient,
    base_url: str,
    token: str,
    conversation_id: str | UUID,
    *,
    after: str | None = None,
    transports: tuple[Transport, ...] = ("websocket", "sse"),
    max_reconnects: int | None = None,
) -> AsyncGenerator[Event, None]:
    """Async version of the stream (see the module's docstring)."""
    state = Resume(str(conversation_id), after, list(transports), max_reconnects)
    auth = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            if state.transport == "websocket":
                async with aconnect(_ws_url(base_url), additional_headers=auth) as ws:
                    await ws.send(state.subscribe_frame())
                    async for raw in ws:
                        event = state.handle(raw)
                        if event is not None:
                            yield event
            else:
                path = f"/api/v1/conversations/{state.conversation_id}/events"
                async with http.stream(
                    "GET", path, params=state.sse_params(), headers=auth, timeout=None
                ) as response:
                    if response.status_code != 200:
                        _check_sse(response, await response.aread())
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        data = parser.feed(line)
                        event = state.handle(data) if data is not None else None
                        if event is not None:
                            yield event
        except websockets.InvalidStatus:
            state.fall_back()
            continue
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code in FATAL_CLOSE:
                raise StreamError(FATAL_CLOSE[code]) from exc
        except ProblemError as exc:
            if not _retryable(exc):
                raise
        except (OSError, httpx.TransportError, websockets.InvalidHandshake, TimeoutError):
            pass
        await asyncio.sleep(state.backoff())


def stream(
    http: httpx.Client,
    base_url: str,
    token: str,
    conversation_id: str | UUID,
    *,
    after: str | None = None,
    transports: tuple[Transport, ...] = ("websocket", "sse"),
    max_reconnects: int | None = None,
) -> Generator[Event, None, None]:
    """Blocking version of the stream (see the module's docstring)."""
    state = Resume(str(conversation_id), after, list(transports), max_reconnects)
    auth = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            if state.transport == "websocket":
                with connect(_ws_url(base_url), additional_headers=auth) as ws:
                    ws.send(state.subscribe_frame())
                    for raw in ws:
                        event = state.handle(raw)
                        if event is not None:
                            yield event
            else:
                path = f"/api/v1/conversations/{state.conversation_id}/events"
                with http.stream(
                    "GET", path, params=state.sse_params(), headers=auth, timeout=None
                ) as response:
                    if response.status_code != 200:
                        _check_sse(response, response.read())
                    parser = SSEParser()
                    for line in response.iter_lines():
                        data = parser.feed(line)
                        event = state.handle(data) if data is not None else None
                        if event is not None:
                            yield event
        except websockets.InvalidStatus:
            state.fall_back()
            continue
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code in FATAL_CLOSE:
                raise StreamError(FATAL_CLOSE[code]) from exc
        except ProblemError as exc:
            if not _retryable(exc):
                raise
        except (OSError, httpx.TransportError, websockets.InvalidHandshake, TimeoutError):
            pass
        time.sleep(state.backoff())
