"""Per-connection outboxes: bounded queues of frames between the live hub and one viewer.

A WebSocket's writer and an SSE response each drain their own outbox; a viewer more than
``OUTBOX_LIMIT`` frames behind is closed as too slow (it reconnects and resumes by event id).
"""

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from conversation_service.events.log import EventId

# WebSocket close codes (documented in the README and the ``/api/v1/ws`` description).
CLOSE_NORMAL: Final = 1000
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_TOO_SLOW: Final = 4408

OUTBOX_LIMIT: Final = 1_000
# Frames an SSE response takes from its outbox at once.
BATCH: Final = 16


class LiveUnavailableError(Exception):
    """The pub/sub connection is down or did not confirm a subscription in time."""


class Outbox:
    """The bounded queue of frames waiting to be sent to one client.

    ``put`` never blocks (the fan-out loop must not wait for a slow client): past ``limit``
    frames the outbox is marked ``overflowed`` and the writer closes the connection.

    The hot path is one ``put`` per event and subscriber and one wake-up of the writer: the
    writer waits on a bare future, and its idle timeout is one timer per outbox that is re-armed
    only when it fires (not a timeout scheduled and cancelled around every wait).
    """

    __slots__ = (
        "_deadline",
        "_frames",
        "_live_ms",
        "_room",
        "_timer",
        "_waiter",
        "close_code",
        "close_reason",
        "limit",
        "written_live_ms",
    )

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._frames: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._room = asyncio.Event()
        self.limit = limit
        self.close_code: int | None = None
        self.close_reason = ""
        # Publication time (epoch ms, from the event id) of the oldest live frame queued, and
        # of the oldest live frame in the batch the writer took last: the fan-out lag metric.
        self._live_ms = 0
        self.written_live_ms = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: str, event_id: str | None = None) -> None:
        """Queue a frame; on overflow ask the writer to close the connection as too slow."""
        if self.close_code is not None:
            return
        if len(self._frames) >= self.limit:
            self.close(CLOSE_TOO_SLOW, "too slow: resume with your last event id")
            return
        self._frames.append(self.render(frame, event_id))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def mark_live(self, published_ms: int) -> None:
        """The frame just put is a live event published at ``published_ms``."""
        if not self._live_ms:
            self._live_ms = published_ms

    def render(self, frame: str, event_id: str | None) -> str:
        """What goes on the wire for one frame (the WebSocket sends the frame itself)."""
        return frame

    def close(self, code: int, reason: str = "") -> None:
        """Ask the writer to close the connection now, dropping what is queued (first wins)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._frames.clear()
        self._live_ms = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._room.set()

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # the next wait re-arms it
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_result(None)
        else:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    async def next_frames(self, idle_timeout: float) -> list[str] | None:
        """The next few frames (waiting up to ``idle_timeout``); [] on timeout, None once closed."""
        if not self._frames and self.close_code is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + idle_timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._on_timer)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        queued = self._frames
        if queued:
            # A small batch: what the writer holds is outside the bound, so keep it small.
            if len(queued) == 1:
                frames = [queued.popleft()]
            else:
                frames = [queued.popleft() for _ in range(min(len(queued), BATCH))]
            # The batch holds the oldest live frame; a later one starts the next batch's clock.
            self.written_live_ms, self._live_ms = self._live_ms, 0
            self._room.set()
            return frames
        self.written_live_ms = 0
        return None if self.close_code is not None else []

    async def wait_for_room(self, room: int) -> None:
        """Wait until ``room`` more frames fit (replay goes at the client's pace)."""
        while self.close_code is None and len(self._frames) > self.limit - room:
            self._room.clear()
            await self._room.wait()


class SSEOutbox(Outbox):
    """An outbox whose frames are Server-Sent Events (``id:`` line for logged events)."""

    __slots__ = ()

    def render(self, frame: str, event_id: str | None) -> str:
        if event_id is None:
            return f"data: {frame}\n\n"
        return f"id: {event_id}\ndata: {frame}\n\n"


@dataclass(eq=False, slots=True)
class Subscription:
    """One client's subscription to one conversation.

    ``pending`` is not None while it is catching up (live frames are buffered there);
    ``last`` is the id of the last logged event handed to the client. ``resync`` marks a live
    subscription that must catch up after the pub/sub connection came back; ``broken`` one whose
    catch-up was overtaken by a lost connection (it fails and the client subscribes again).
    """

    conversation_id: uuid.UUID
    channel: bytes
    outbox: Outbox
    last: EventId | None = None
    pending: list[tuple[EventId | None, str | None, str]] | None = field(default_factory=list)
    active: bool = True
    resync: bool = False
    broken: bool = False

    def deliver(
        self, event_id: EventId | None, id_text: str | None, frame: str, *, live: bool = False
    ) -> None:
        """Hand a frame to the outbox unless its event was already handed over (by id).

        ``live``: it came straight from the pub/sub fan-out (its lag is measured).
        """
        if event_id is not None:
            last = self.last
            if last is not None and event_id <= last:
                return
            self.last = event_id
            if live:
                self.outbox.put(frame, id_text)
                self.outbox.mark_live(event_id[0])
                return
        self.outbox.put(frame, id_text)

    def go_live(self) -> None:
        """Flush what was buffered while catching up and take live frames from now on."""
        pending, self.pending = self.pending or [], None
        for event_id, id_text, frame in pending:
            self.deliver(event_id, id_text, frame)
