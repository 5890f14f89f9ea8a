"""The live hub's pub/sub session: one connection to a single Redis, or one per cluster primary.

A link subscribes channels, reads what Redis pushes and reports any broken connection by raising
from ``read``; the hub (``connection_manager``) then drops the whole link, sends every
subscription back to buffering and opens a new link, which catches everyone up by event id. A
link never reconnects on its own: a silent reconnect would hide the events published meanwhile.

``StandaloneLink`` is one connection (``SUBSCRIBE``). ``ClusterLink`` uses sharded pub/sub: the
channel ``cs:live:{<conversation id>}`` lives on the primary that owns its slot, so the link
opens a connection to every primary (topology read afresh on every open, which is how it follows
a failover) and sends ``SSUBSCRIBE`` for each channel to its owner. Replies are handed to the hub
in the standalone spelling (``message``, ``subscribe``). A shard channel that its node gives up
(``sunsubscribe`` nobody asked for: the slot moved) or a channel whose owner the link has no
connection to breaks the link, so the hub starts over on the new topology.
"""

import asyncio
import contextlib
import math
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError

from conversation_service.utils.redis_client import as_cluster, async_redis

CONNECT_TIMEOUT: Final = 2.0
CLIENT_NAME: Final = "conversation-service-live"
CONTROL_CHANNEL: Final = b"cs:live:~process"
_SHARDED: Final = {b"smessage": b"message", b"ssubscribe": b"subscribe"}


def _new_connection(client: Redis) -> AbstractConnection:
    # A connection of the pool's kind that the pool never hands out: pub/sub reads block.
    return client.connection_pool.make_connection()  # type: ignore[no-untyped-call,no-any-return]


async def _client_id(connection: AbstractConnection) -> int:
    await connection.send_command("CLIENT", "ID", check_health=False)
    return int(await connection.read_response())


class StandaloneLink:
    """Pub/sub on one Redis server: one connection, ``SUBSCRIBE``/``UNSUBSCRIBE``."""

    def __init__(self, client: Redis, control_channel: bytes) -> None:
        self._client = client
        # Keeps the connection in subscribed mode even with no clients.
        self.extra_channels: tuple[bytes, ...] = (control_channel,)
        self._connection: AbstractConnection | None = None
        self.client_id: int | None = None

    async def open(self, channels: Sequence[bytes]) -> None:
        """Connect and subscribe ``channels`` (confirmations arrive through ``read``)."""
        connection = _new_connection(self._client)
        self._connection = connection
        await connection.connect()  # type: ignore[no-untyped-call]
        self.client_id = await _client_id(connection)
        await connection.send_command("SUBSCRIBE", *channels, check_health=False)

    async def send(self, verb: str, channel: bytes) -> None:
        """``SUBSCRIBE`` or ``UNSUBSCRIBE`` one channel (raises when the link is broken)."""
        if self._connection is None:
            raise RedisConnectionError("pub/sub link closed")
        await self._connection.send_command(verb, channel, check_health=False)

    async def ping(self) -> None:
        """Ask for a reply, so that a silent connection is noticed."""
        if self._connection is not None:
            await self._connection.send_command("PING", check_health=False)

    async def read(self) -> Any:
        """The next reply Redis pushes."""
        if self._connection is None:
            raise RedisConnectionError("pub/sub link closed")
        return await self._connection.read_response(timeout=math.inf, push_request=True)

    async def close(self) -> None:
        """Close the connection (a blocked ``read`` fails)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)


class ClusterLink:
    """Sharded pub/sub on a Redis Cluster: a connection per primary, ``SSUBSCRIBE`` by slot."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        self._cluster = cluster
        options = parse_url(url)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self.extra_channels: tuple[bytes, ...] = ()
        self._connections: dict[str, AbstractConnection] = {}
        self._clients: list[Redis] = []
        self._readers: list[asyncio.Task[None]] = []
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._wanted: set[bytes] = set()
        # SUNSUBSCRIBEs sent and not yet confirmed, per channel: their confirmations are ours.
        self._leaving: dict[bytes, int] = {}
        self.client_id: int | None = None

    async def open(self, channels: Sequence[bytes]) -> None:
        """Read the topology afresh, connect to every primary, subscribe ``channels``."""
        await self._cluster.initialize()
        await self._cluster.nodes_manager.initialize()
        for node in self._cluster.get_primaries():
            client = Redis(
                host=node.host,
                port=int(node.port),
                username=self._username,
                password=self._password,
                socket_connect_timeout=CONNECT_TIMEOUT,
                client_name=CLIENT_NAME,
            )
            self._clients.append(client)
            connection = _new_connection(client)
            self._connections[node.name] = connection
            await connection.connect()  # type: ignore[no-untyped-call]
            if self.client_id is None:
                self.client_id = await _client_id(connection)
        for connection in self._connections.values():
            self._readers.append(asyncio.create_task(self._read_from(connection)))
        for channel in channels:
            await self.send("SUBSCRIBE", channel)

    async def send(self, verb: str, channel: bytes) -> None:
        """``SSUBSCRIBE`` or ``SUNSUBSCRIBE`` one channel on the primary owning its slot."""
        if verb == "SUBSCRIBE":
            self._wanted.add(channel)
        else:
            self._wanted.discard(channel)
            self._leaving[channel] = self._leaving.get(channel, 0) + 1
        node = self._cluster.get_node_from_key(channel.decode())
        connection = self._connections.get(node.name) if node is not None else None
        if connection is None:
            # The slot moved to a node this link does not know: start over.
            self._replies.put_nowait(RedisConnectionError(f"no link to the owner of {channel!r}"))
            return
        command = "SSUBSCRIBE" if verb == "SUBSCRIBE" else "SUNSUBSCRIBE"
        await connection.send_command(command, channel, check_health=False)

    async def ping(self) -> None:
        """PING every connection, so that a silent one is noticed."""
        for connection in list(self._connections.values()):
            await connection.send_command("PING", check_health=False)

    async def read(self) -> Any:
        """The next reply any primary pushes, in the standalone spelling."""
        reply = await self._replies.get()
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, list) and reply:
            kind = reply[0]
            if kind == b"sunsubscribe":
                channel = reply[1]
                leaving = self._leaving.pop(channel, 0)
                if leaving > 1:
                    self._leaving[channel] = leaving - 1
                if not leaving and channel in self._wanted:
                    raise RedisConnectionError(f"{channel!r} moved to another node")
            if kind in _SHARDED:
                return [_SHARDED[kind], *reply[1:]]
        return reply

    async def _read_from(self, connection: AbstractConnection) -> None:
        try:
            while True:
                reply = await connection.read_response(timeout=math.inf, push_request=True)
                self._replies.put_nowait(reply)
        except Exception as exc:
            self._replies.put_nowait(exc)

    async def close(self) -> None:
        """Stop the readers, then close every connection and client.

        One that fails to close (its node was just killed) must not leave the others open or
        their readers pending, so each is closed on its own.
        """
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        connections = list(self._connections.values())
        self._connections.clear()
        clients, self._clients = self._clients, []
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


PubSubLink = StandaloneLink | ClusterLink


class Links:
    """Makes the hub's links: on a client of their own, since pub/sub reads block indefinitely,
    which the app's client (with a socket timeout) must not do. On a cluster that client only
    reads the topology."""

    def __init__(self, url: str, *, cluster: bool) -> None:
        self._url = url
        self._client = async_redis(
            url, cluster=cluster, socket_connect_timeout=CONNECT_TIMEOUT, client_name=CLIENT_NAME
        )
        self._last: PubSubLink | None = None

    async def new(self) -> PubSubLink:
        """A link not yet open. The one made before is closed first: whichever path let it go
        (a stop that cancelled its ``open``, a reconnect), its connections and readers end."""
        await self._close_last()
        cluster = as_cluster(self._client)
        link: PubSubLink = (
            ClusterLink(cluster, self._url)
            if cluster is not None
            else StandaloneLink(self._client, CONTROL_CHANNEL)
        )
        self._last = link
        return link

    async def _close_last(self) -> None:
        link, self._last = self._last, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close()

    async def aclose(self) -> None:
        """Close the last link and the client."""
        await self._close_last()
        await self._client.aclose()
