"""WebSocket and SSE transports: authenticate, parse frames, call services, forward frames.

Client WebSocket ``/api/v1/ws`` — protocol:

* auth: a user JWT in the ``token`` query parameter or an ``Authorization: Bearer`` header;
  without a valid one the socket is accepted and closed with 4401.
* client frames (JSON text, at most ``MAX_CLIENT_FRAME_BYTES``; processed in order):
  ``{"type":"subscribe","conversation_id":…,"after":<event id or null>}``,
  ``{"type":"unsubscribe","conversation_id":…}``, ``{"type":"typing","conversation_id":…}``,
  ``{"type":"ping","data":<anything>}``.
* server frames: ``{"id","type","conversation_id","data"}``. Logged events carry their id;
  control frames (``subscribed``, ``unsubscribed``, ``pong``, ``heartbeat``, ``error``) and
  ``typing`` have ``"id": null``; ``snapshot`` carries the log position it is consistent with.
* ``after`` = the last id the client saw: everything after it is replayed, then live events
  follow, with no gap and no duplicate. ``after: null`` = from now on. When the log no longer
  holds everything after ``after`` (trimmed after ~10,000 events, or expired 24 h after the
  last event), a ``snapshot`` (the conversation and its newest 50 messages, streaming ones with
  their partial content; ``has_more`` says whether to page back with the REST API) replaces the
  replay. Events after the snapshot's id may repeat changes it already shows: they are upserts
  by message id (deltas by message id and index).
* errors answer with an error frame and the connection stays open: ``invalid_frame`` (400,
  malformed JSON or an unknown/invalid frame), ``not_found`` (404, a conversation the user may
  not read, exactly as the REST API answers), ``not_subscribed`` (typing before subscribing),
  ``too_many_subscriptions`` (more than ``MAX_SUBSCRIPTIONS``), ``unavailable`` (503, Redis is
  unreachable: retry).
* heartbeats: the server sends a ``heartbeat`` frame after ``HEARTBEAT_SECONDS`` of silence
  (and uvicorn pings at the protocol level).
* close codes: 1009 a client frame over 64 KiB; 1012 the server is restarting (or lost its
  Redis feed): reconnect and resume; 4401 unauthenticated; 4408 too slow (more than 1,000
  frames waiting): reconnect and resume with the last id; 4429 the user already holds
  ``rate_limit_ws_connections`` open sockets (close one, or retry later).

Internal WebSocket ``/internal/v1/ws/stream`` for agents: see ``websocket.agent``.

SSE ``GET /api/v1/conversations/{id}/events``: the same frames as ``data:`` lines, logged
events with an ``id:`` line (``Last-Event-ID`` resumes), a ``: keep-alive`` comment every
``SSE_KEEPALIVE_SECONDS``; a too slow client's stream ends (the browser reconnects and resumes).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from typing import Any, Final

from fastapi import WebSocket
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from conversation_service.errors import NotFoundError, ServiceError, UnauthorizedError
from conversation_service.events.log import EventType, control_frame
from conversation_service.metrics import ServiceMetrics
from conversation_service.models.streaming import (
    CLIENT_FRAMES,
    PingFrame,
    SubscribeFrame,
    TypingFrame,
    UnsubscribeFrame,
)
from conversation_service.resources import Resources
from conversation_service.services import subscriptions
from conversation_service.services.auth import Principal
from conversation_service.services.rate_limits import CLOSE_TOO_MANY_CONNECTIONS
from conversation_service.websocket.outbox import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    OUTBOX_LIMIT,
    LiveUnavailableError,
    Outbox,
    SSEOutbox,
    Subscription,
)

log = logging.getLogger(__name__)

MAX_CLIENT_FRAME_BYTES: Final = 65_536
MAX_SUBSCRIPTIONS: Final = 100
HEARTBEAT_SECONDS: Final = 25.0
SSE_KEEPALIVE_SECONDS: Final = 15.0
TYPING_INTERVAL_SECONDS: Final = 1.0
_HEARTBEAT = control_frame("heartbeat")


class ConnectionState(StrEnum):
    """Lifecycle of a client connection."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


def bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _error(code: str, status: int, detail: str, conversation_id: uuid.UUID | None = None) -> str:
    return control_frame(
        "error", conversation_id, {"code": code, "status": status, "detail": detail}
    )


def frame_payload(message: Mapping[str, Any]) -> str | bytes:
    """The text or bytes of a received WebSocket message (empty bytes when it has neither)."""
    text: str | None = message.get("text")
    if text is not None:
        return text
    data: bytes = message.get("bytes") or b""
    return data


def _frame_size(raw: str | bytes) -> int:
    if isinstance(raw, bytes) or len(raw) * 4 <= MAX_CLIENT_FRAME_BYTES:
        return len(raw)
    return len(raw.encode())


def invalid_frame_detail(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(err["type"] == "json_invalid" for err in errors):
        return "frame is not valid JSON"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


async def _pump(websocket: WebSocket, outbox: Outbox, metrics: ServiceMetrics) -> None:
    """Send what the outbox holds (a heartbeat after silence); close when it asks to."""
    send = websocket.send
    try:
        while True:
            frames = await outbox.next_frames(HEARTBEAT_SECONDS)
            if frames is None:
                break
            for frame in frames or (_HEARTBEAT,):
                await send({"type": "websocket.send", "text": frame})
            if outbox.written_live_ms:
                metrics.written(outbox.written_live_ms)
        if websocket.application_state is WebSocketState.CONNECTED:
            await websocket.close(outbox.close_code or 1000, outbox.close_reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client is gone; the receive loop sees it too


class ClientSession:
    """One user's WebSocket: its subscriptions and its outbox."""

    def __init__(self, websocket: WebSocket, principal: Principal, resources: Resources) -> None:
        self.websocket = websocket
        self.principal = principal
        self.resources = resources
        self.outbox = Outbox(OUTBOX_LIMIT)
        self.subscriptions: dict[uuid.UUID, Subscription] = {}
        self.typed_at: dict[uuid.UUID, float] = {}
        self.state = ConnectionState.OPEN

    async def run(self) -> None:
        """Receive and handle frames until the client leaves; then release everything."""
        hub = self.resources.live
        hub.register(self.outbox)
        metrics = self.resources.operations
        metrics.connection_opened("websocket")
        writer = asyncio.create_task(_pump(self.websocket, self.outbox, metrics))
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = frame_payload(message)
                if _frame_size(raw) > MAX_CLIENT_FRAME_BYTES:
                    self.outbox.close(
                        CLOSE_MESSAGE_TOO_BIG,
                        f"frames are limited to {MAX_CLIENT_FRAME_BYTES} bytes",
                    )
                    continue
                await self.handle(raw)
        except WebSocketDisconnect:
            pass
        finally:
            self.state = ConnectionState.CLOSED
            for subscription in self.subscriptions.values():
                hub.unsubscribe(subscription)
            self.subscriptions.clear()
            hub.unregister(self.outbox)
            metrics.connection_closed("websocket")
            if not writer.done():
                self.outbox.close(1000)
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def handle(self, raw: str | bytes) -> None:
        """Handle one client frame."""
        try:
            frame = CLIENT_FRAMES.validate_json(raw)
        except ValidationError as exc:
            self.outbox.put(_error("invalid_frame", 400, invalid_frame_detail(exc)))
            return
        if isinstance(frame, SubscribeFrame):
            await self.subscribe(frame)
        elif isinstance(frame, UnsubscribeFrame):
            subscription = self.subscriptions.pop(frame.conversation_id, None)
            if subscription is not None:
                self.resources.live.unsubscribe(subscription)
            self.outbox.put(control_frame("unsubscribed", frame.conversation_id))
        elif isinstance(frame, TypingFrame):
            await self.typing(frame.conversation_id)
        elif isinstance(frame, PingFrame):
            self.outbox.put(control_frame("pong", None, frame.data))

    async def subscribe(self, frame: SubscribeFrame) -> None:
        """Authorize, count as activity, then replay and go live."""
        cid = frame.conversation_id
        previous = self.subscriptions.pop(cid, None)
        if previous is not None:
            self.resources.live.unsubscribe(previous)
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            self.outbox.put(
                _error(
                    "too_many_subscriptions",
                    429,
                    f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                    cid,
                )
            )
            return
        units = self.resources.units
        try:
            async with units.read() as uow:
                await subscriptions.authorize_subscription(uow.conn, self.principal, cid)
        except NotFoundError as exc:
            self.outbox.put(_error("not_found", 404, exc.detail, cid))
            return
        try:
            self.subscriptions[cid] = await self.resources.live.subscribe(
                self.outbox, cid, frame.after
            )
        except (LiveUnavailableError, ServiceError) as exc:
            self.outbox.put(_error("unavailable", 503, f"live updates unavailable: {exc}", cid))
            return
        async with units.write() as uow:
            await subscriptions.record_viewer_activity(uow, self.principal, cid, "websocket")

    async def typing(self, conversation_id: uuid.UUID) -> None:
        """Tell the conversation's viewers the user types (at most once a second)."""
        if conversation_id not in self.subscriptions:
            self.outbox.put(
                _error("not_subscribed", 409, "subscribe before sending typing", conversation_id)
            )
            return
        now = time.monotonic()
        if now - self.typed_at.get(conversation_id, -TYPING_INTERVAL_SECONDS) < (
            TYPING_INTERVAL_SECONDS
        ):
            return
        self.typed_at[conversation_id] = now
        try:
            await self.resources.events.publish_ephemeral(
                conversation_id, EventType.TYPING, {"user_id": self.principal.user_id}
            )
        except (RedisError, OSError) as exc:
            self.outbox.put(_error("unavailable", 503, str(exc), conversation_id))


async def serve_client(websocket: WebSocket, resources: Resources) -> None:
    """``/api/v1/ws``: authenticate, then run the session."""
    token = websocket.query_params.get("token") or bearer(websocket)
    principal: Principal | None = None
    reason = "missing token"
    if token:
        try:
            principal = resources.verifier.verify(token)
        except UnauthorizedError as exc:
            reason = exc.detail
    await websocket.accept()
    if principal is None:
        await websocket.close(CLOSE_UNAUTHENTICATED, reason[:120])
        return
    slot = await resources.limiter.acquire_connection(principal)
    if slot is None:
        await websocket.close(CLOSE_TOO_MANY_CONNECTIONS, "too many open connections")
        return
    try:
        await ClientSession(websocket, principal, resources).run()
    finally:
        await slot.release()


async def sse_frames(
    resources: Resources, conversation_id: uuid.UUID, after: str | None
) -> AsyncIterator[str]:
    """The SSE body: a retry hint, the subscription's frames and keep-alive comments."""
    hub = resources.live
    outbox = SSEOutbox()
    hub.register(outbox)
    metrics = resources.operations
    metrics.connection_opened("sse")
    subscription: Subscription | None = None
    try:
        yield "retry: 2000\n\n"
        try:
            subscription = await hub.subscribe(outbox, conversation_id, after)
        except (LiveUnavailableError, ServiceError) as exc:
            frame = _error("unavailable", 503, f"live updates unavailable: {exc}", conversation_id)
            yield f"data: {frame}\n\n"
            return
        while True:
            frames = await outbox.next_frames(SSE_KEEPALIVE_SECONDS)
            if frames is None:
                return
            yield "".join(frames) if frames else ": keep-alive\n\n"
            # Resumed once the server took the chunk for the socket.
            if outbox.written_live_ms:
                metrics.written(outbox.written_live_ms)
    finally:
        if subscription is not None:
            hub.unsubscribe(subscription)
        hub.unregister(outbox)
        metrics.connection_closed("sse")
