"""Internal WebSocket ``/internal/v1/ws/stream`` for agents: transport only.

The service key as ``Authorization: Bearer``; frames ``create``, ``delta``, ``complete``,
``fail``, ``ping`` (see ``models.streaming``), each answered in order by ``created``/``ack``/
``completed``/``failed``/``pong`` or ``error`` echoing the frame's ``ref``. Each frame calls the
same use case as its internal REST route, in a unit of work of its own.
"""

from typing import Any, Final

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from conversation_service.errors import ServiceError, UnauthorizedError
from conversation_service.events.log import Delta
from conversation_service.models.streaming import (
    AGENT_FRAMES,
    AgentCompleteFrame,
    AgentCreateFrame,
    AgentDeltaFrame,
    AgentFailFrame,
    AgentPingFrame,
)
from conversation_service.resources import Resources
from conversation_service.services import streaming
from conversation_service.services.auth import verify_service_key
from conversation_service.utils import jsonio
from conversation_service.websocket.handlers import bearer, frame_payload, invalid_frame_detail
from conversation_service.websocket.outbox import CLOSE_MESSAGE_TOO_BIG, CLOSE_UNAUTHENTICATED

MAX_AGENT_FRAME_BYTES: Final = 1_048_576


def _answer(kind: str, ref: str | None, data: Any) -> str:
    return jsonio.dumps({"type": kind, "ref": ref, "data": data}).decode()


class AgentSession:
    """One orchestrator WebSocket: each frame is one streaming operation, answered in order."""

    def __init__(self, websocket: WebSocket, resources: Resources) -> None:
        self.websocket = websocket
        self.resources = resources

    async def run(self) -> None:
        """Receive, handle and answer frames until the agent leaves."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = frame_payload(message)
                if len(raw) > MAX_AGENT_FRAME_BYTES:
                    await self.websocket.close(CLOSE_MESSAGE_TOO_BIG, "frame too big")
                    return
                await self.websocket.send_text(await self.handle(raw))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def handle(self, raw: str | bytes) -> str:
        """One frame in, one answer out."""
        try:
            frame = AGENT_FRAMES.validate_json(raw)
        except ValidationError as exc:
            return _answer("error", None, {"code": "invalid_frame", "status": 400,
                                           "detail": invalid_frame_detail(exc)})  # fmt: skip
        try:
            return await self._dispatch(frame)
        except ServiceError as exc:
            return _answer("error", frame.ref, {"code": exc.code, "status": exc.status,
                                                "detail": exc.detail})  # fmt: skip

    async def _dispatch(
        self,
        frame: AgentCreateFrame
        | AgentDeltaFrame
        | AgentCompleteFrame
        | AgentFailFrame
        | AgentPingFrame,
    ) -> str:
        resources = self.resources
        store = resources.streams
        if isinstance(frame, AgentDeltaFrame):
            ids = await streaming.append_deltas(
                resources.units,
                resources.events,
                store,
                frame.conversation_id,
                frame.message_id,
                [Delta(d.index, d.text) for d in frame.deltas],
            )
            return _answer(
                "ack", frame.ref, {"message_id": str(frame.message_id), "event_ids": ids}
            )
        settings = resources.settings
        if isinstance(frame, AgentCreateFrame):
            async with resources.units.write() as uow:
                message = await streaming.create_agent_message(
                    uow, store, frame.conversation_id, frame, settings=settings
                )
            return _answer("created", frame.ref, {"message": message})
        if isinstance(frame, AgentCompleteFrame):
            async with resources.units.write() as uow:
                outcome = await streaming.complete_message(
                    uow, store, frame.conversation_id, frame.message_id, frame, settings=settings
                )
            return _answer(
                "completed", frame.ref, {"message": outcome.message.model_dump(mode="json")}
            )
        if isinstance(frame, AgentFailFrame):
            async with resources.units.write() as uow:
                outcome = await streaming.fail_message(
                    uow, store, frame.conversation_id, frame.message_id, frame.error
                )
            return _answer(
                "failed", frame.ref, {"message": outcome.message.model_dump(mode="json")}
            )
        return _answer("pong", frame.ref, None)


async def serve_agent(websocket: WebSocket, resources: Resources) -> None:
    """``/internal/v1/ws/stream``: check the service key, then run the session."""
    key = bearer(websocket)
    await websocket.accept()
    try:
        if key is None:
            raise UnauthorizedError("missing service key")
        verify_service_key(key, resources.internal_keys)
    except UnauthorizedError as exc:
        await websocket.close(CLOSE_UNAUTHENTICATED, exc.detail[:120])
        return
    await AgentSession(websocket, resources).run()
