"""Per-process live fan-out: one Redis pub/sub link, in-process delivery to clients.

One pub/sub link per process (one connection, or one per primary of a Redis Cluster with sharded
pub/sub: ``websocket.pubsub_link``), subscribed to ``cs:live:{<conversation id>}`` of every
conversation with a local viewer (reference-counted); each published frame goes to the local
viewers' bounded outboxes, never published per viewer. A subscription resumes without gap or
duplicate: registered (buffering) first, SUBSCRIBE confirmed, the stream replayed after the
viewer's position (or a snapshot when the log no longer holds it), then the buffered live events
above the last replayed id flushed in one step. A dropped connection (any of the link's) sends
every subscription back to buffering and catching up on a new link; a watchdog PINGs it.
``docs/ARCHITECTURE.md`` tells more.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conversation_service.events import log as events
from conversation_service.events.log import EventId
from conversation_service.utils.tasks import stop_tasks
from conversation_service.websocket.outbox import (
    CLOSE_SERVICE_RESTART,
    LiveUnavailableError,
    Outbox,
    Subscription,
)
from conversation_service.websocket.pubsub_link import Links, PubSubLink

log = logging.getLogger(__name__)

REPLAY_CHUNK: Final = 256
SUBSCRIBE_TIMEOUT: Final = 5.0
# The longest a delta POST waits for its own fan-out to local viewers (``fanned_out``).
FAN_OUT_WAIT: Final = 0.01
_PING_EVERY: Final = 10.0
_SILENCE_LIMIT: Final = 30.0
_BACKOFF_MAX: Final = 2.0

SnapshotSource = Callable[[uuid.UUID, str | None], Awaitable[str]]


class ConnectionManager:
    """This process's live hub: the pub/sub connection, channels and local subscribers."""

    def __init__(
        self, *, redis_url: str, redis: Redis, snapshot: SnapshotSource, cluster: bool = False
    ) -> None:
        self._links = Links(redis_url, cluster=cluster)
        self._redis = redis
        self._snapshot = snapshot
        self._channels: dict[bytes, set[Subscription]] = {}
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._link: PubSubLink | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._outboxes: set[Outbox] = set()
        # Publishers waiting for this hub to fan out an event of theirs (``fanned_out``).
        self._awaited: dict[bytes, list[tuple[EventId, asyncio.Future[None]]]] = {}
        self._last_heard = time.monotonic()
        self._stopping = False
        # Redis CLIENT ID of the (first) pub/sub connection (operators and tests can find it).
        self.client_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reader (it connects, and reconnects, in the background)."""
        self._stopping = False
        self._reader = asyncio.create_task(self._run(), name="live-hub-reader")
        self._watchdog = asyncio.create_task(self._watch(), name="live-hub-watchdog")

    async def stop(self) -> None:
        """Close every client with 1012 (service restart) and the pub/sub connection."""
        self._stopping = True
        for outbox in list(self._outboxes):
            outbox.close(CLOSE_SERVICE_RESTART, "service restarting: resume with your last id")
        tasks = [t for t in (self._reader, self._watchdog, *self._background) if t is not None]
        # Close the socket first: a reader blocked in read_response may not see its
        # cancellation until the connection goes away, and shutdown must never hang on it.
        await self._drop_connection()
        await stop_tasks(*tasks)
        await self._links.aclose()

    def register(self, outbox: Outbox) -> None:
        """Track a client connection (closed with 1012 when the process stops)."""
        self._outboxes.add(outbox)
        if self._stopping:
            outbox.close(CLOSE_SERVICE_RESTART, "service restarting")

    def unregister(self, outbox: Outbox) -> None:
        """Forget a client connection."""
        self._outboxes.discard(outbox)

    @property
    def connections(self) -> int:
        """Client connections open on this process."""
        return len(self._outboxes)

    @property
    def channels(self) -> int:
        """Conversations this process is subscribed to."""
        return len(self._channels)

    async def fanned_out(
        self,
        conversation_id: uuid.UUID,
        event_id: str | None,
        *,
        wait_seconds: float = FAN_OUT_WAIT,
    ) -> None:
        """Return once this process's subscribers were handed ``event_id`` (just published).

        Handed means put in their outboxes, or, for one still catching up, in its buffer.

        A publisher that answers its caller only after this gives its own event's fan-out the
        event loop first: the pub/sub message and the publish's reply arrive together, and
        writing the response before the fan-out delays every local viewer by the response. At
        once when ``event_id`` is None, nobody here subscribes to the conversation or the hub is
        reconnecting; at most ``wait_seconds`` otherwise (the event reaches the viewers anyway,
        or they catch up by id).
        """
        channel = events.live_channel(conversation_id).encode()
        wanted = events.parse_event_id(event_id)
        if wanted is None or self._link is None or channel not in self._channels:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._awaited.setdefault(channel, [])
        entry = (wanted, future)
        waiting.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await future
        finally:
            waiting.remove(entry)
            if not waiting and self._awaited.get(channel) is waiting:
                del self._awaited[channel]

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(
        self, outbox: Outbox, conversation_id: uuid.UUID, after: str | None
    ) -> Subscription:
        """Deliver the conversation's events after ``after`` (None: from now on) to ``outbox``.

        Sends a ``subscribed`` frame first, then the replay (or a snapshot), then live events.
        Raises ``LiveUnavailableError`` when Redis cannot be reached.
        """
        channel = events.live_channel(conversation_id).encode()
        try:
            start = after if after is not None else await events.head(self._redis, conversation_id)
        except (RedisError, OSError) as exc:
            raise LiveUnavailableError(str(exc)) from exc
        subscription = Subscription(conversation_id, channel, outbox, events.parse_event_id(start))
        ready = self._add(subscription)
        try:
            await self._await_confirmation(ready)
            outbox.put(events.control_frame("subscribed", conversation_id, {"after": start}), None)
            await self._catch_up(subscription)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a subscription (UNSUBSCRIBE once nobody local listens)."""
        if not subscription.active:
            return
        subscription.active = False
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._channels[subscription.channel]
            self._send_nowait("UNSUBSCRIBE", subscription.channel)

    def _add(self, subscription: Subscription) -> asyncio.Future[None] | None:
        if self._link is None:
            raise LiveUnavailableError("live updates are unavailable right now")
        subscribers = self._channels.get(subscription.channel)
        if subscribers is not None:
            subscribers.add(subscription)
            pending = self._confirmations.get(subscription.channel)
            return pending[-1] if pending else None
        self._channels[subscription.channel] = {subscription}
        return self._request_subscribe(subscription.channel)

    def _request_subscribe(self, channel: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, deque()).append(future)
        self._send_nowait("SUBSCRIBE", channel)
        return future

    async def _await_confirmation(self, ready: asyncio.Future[None] | None) -> None:
        if ready is None:
            return
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(ready)
        except TimeoutError as exc:
            raise LiveUnavailableError("Redis did not confirm the subscription") from exc

    async def _catch_up(self, subscription: Subscription) -> None:
        """Replay after ``subscription.last`` (or a snapshot on a gap), then turn live."""
        snapshots = 0
        outbox = subscription.outbox
        count = max(1, min(REPLAY_CHUNK, outbox.limit // 2))
        while subscription.active:
            await outbox.wait_for_room(count)
            if outbox.close_code is not None:
                return
            try:
                chunk = await events.read_after(
                    self._redis, subscription.conversation_id, subscription.last, count=count
                )
            except (RedisError, OSError) as exc:
                raise LiveUnavailableError(str(exc)) from exc
            if chunk.gap:
                snapshots += 1
                if snapshots > 3:
                    raise LiveUnavailableError("the event log is changing too fast to resume")
                head = await events.head(self._redis, subscription.conversation_id)
                frame = await self._snapshot(subscription.conversation_id, head)
                outbox.put(frame, head)
                subscription.last = events.parse_event_id(head)
                continue
            for entry in chunk.entries:
                subscription.deliver(entry.id, entry.id_text, entry.frame)
            if len(chunk.entries) < count:
                break
        if subscription.broken:
            raise LiveUnavailableError("pub/sub connection lost while catching up")
        subscription.go_live()

    # -- the pub/sub connection ----------------------------------------------------------------

    def _send_nowait(self, verb: str, channel: bytes) -> None:
        link = self._link
        if link is None:
            return
        task = asyncio.create_task(self._send(link, verb, channel))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, link: PubSubLink, verb: str, channel: bytes) -> None:
        try:
            await link.send(verb, channel)
        except (RedisError, OSError) as exc:
            # The reader sees the broken connection too and reconnects (resubscribing all).
            log.warning("live hub command failed", extra={"error": str(exc)})

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                await self._connect_and_read()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("live hub connection lost", extra={"error": str(exc)})
            await self._connection_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _connect_and_read(self) -> None:
        link = await self._links.new()
        channels = [*link.extra_channels, *self._channels]
        futures = []
        for channel in channels:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(channel, deque()).append(future)
            futures.append(future)
        try:
            await link.open(channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await link.close()
            raise
        self.client_id = link.client_id
        self._link = link
        self._last_heard = time.monotonic()
        self._connected.set()
        resync = asyncio.create_task(self._resync(futures[len(link.extra_channels) :]))
        self._background.add(resync)
        resync.add_done_callback(self._background.discard)
        while True:
            reply = await link.read()
            self._last_heard = time.monotonic()
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0]
        if kind == b"message":
            self._fan_out(reply[1], reply[2])
        elif kind == b"subscribe":
            pending = self._confirmations.get(reply[1])
            if pending:
                future = pending.popleft()
                if not future.done():
                    future.set_result(None)
                if not pending:
                    del self._confirmations[reply[1]]

    def _fan_out(self, channel: bytes, payload: bytes) -> None:
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        space = payload.find(b" ")
        raw_id = payload[:space]
        frame = payload[space + 1 :].decode()
        event_id: EventId | None = None
        id_text: str | None = None
        if raw_id != b"-":
            ms, _, seq = raw_id.partition(b"-")
            event_id = (int(ms), int(seq))
            id_text = raw_id.decode()
        for subscription in subscribers:
            if subscription.pending is not None:
                subscription.pending.append((event_id, id_text, frame))
            else:
                subscription.deliver(event_id, id_text, frame, live=True)
        if event_id is not None and channel in self._awaited:
            for wanted, future in self._awaited[channel]:
                if wanted <= event_id and not future.done():
                    future.set_result(None)

    async def _resync(self, confirmations: list[asyncio.Future[None]]) -> None:
        """After a (re)connect: wait for the SUBSCRIBEs, then catch every buffering one up."""
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.gather(*confirmations)
        except TimeoutError:
            await self._drop_connection()
            return
        except LiveUnavailableError:
            return
        for subscribers in list(self._channels.values()):
            for subscription in list(subscribers):
                if subscription.active and subscription.resync:
                    subscription.resync = False
                    try:
                        await self._catch_up(subscription)
                    except Exception:
                        log.warning("live catch-up failed", exc_info=True)
                        subscription.outbox.close(
                            CLOSE_SERVICE_RESTART, "live updates interrupted: resume"
                        )

    async def _connection_lost(self) -> None:
        self._connected.clear()
        await self._drop_connection()
        for pending in self._confirmations.values():
            for future in pending:
                if not future.done():
                    future.set_exception(LiveUnavailableError("pub/sub connection lost"))
                    future.exception()  # retrieved: nobody may be waiting
        self._confirmations.clear()
        # Everyone buffers until the new connection is confirmed, then catches up by id.
        for subscribers in self._channels.values():
            for subscription in subscribers:
                if subscription.pending is None:
                    subscription.pending = []
                    subscription.resync = True
                elif not subscription.resync:
                    subscription.broken = True

    async def _drop_connection(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_PING_EVERY)
            link = self._link
            if link is None:
                continue
            if time.monotonic() - self._last_heard > _SILENCE_LIMIT:
                log.warning("live hub connection silent; reconnecting")
                await self._drop_connection()
                continue
            with contextlib.suppress(RedisError, OSError):
                await link.ping()  # a broken link is the reader's to notice
