"""The app's asyncio Redis client: redis-py's, minus a task per command and Python packing.

With a ``socket_timeout`` (the app sets one, so a hung Redis cannot hang a request), redis-py
writes every command through ``asyncio.wait_for``, which on Python 3.11 wraps the write in a new
task: a task allocation and one more event-loop pass before the bytes reach the socket, on every
command of every request (measured in-process: 10-20% of a delta POST). Here the write runs
inline under ``asyncio.timeout`` with the same deadline and the same outcome on expiry (the
connection is dropped and redis-py's ``TimeoutError`` raised). Reads are redis-py's own.

Commands are packed by hiredis (C) when it is installed, as redis-py's synchronous client already
does (its ``HiredisRespSerializer``); the asyncio connection packs in Python, about 1 µs per
argument, and an RQ job's enqueue script carries some fifty.

redis-py 8 also adds observability hooks, events and a retry loop around every command, which the
app does not use; measured in-process against a 72 µs round trip, they cost 24 µs per checkout
and check-in of a pooled connection (``_LeanCheckout`` skips them) and 20 µs more per script
call (``LuaScript``, for the hot paths' scripts: every delta, event and rate-limit refill).
"""

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT
from redis.utils import HIREDIS_AVAILABLE

_PACKER = HiredisRespSerializer() if HIREDIS_AVAILABLE else None


class _InlineWrites(AbstractConnection):
    """Writes a command inline under ``asyncio.timeout`` instead of in a ``wait_for`` task."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol, packed by hiredis when available."""
        if _PACKER is None:
            return super().pack_command(*args)
        packed: list[bytes] = _PACKER.pack(*args)
        return packed

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        try:
            async with asyncio.timeout(timeout):
                # Seen as "no timeout" by redis-py's write (ours applies instead); restored
                # before anything else can use the connection (one command at a time).
                self.socket_timeout = None
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None


class _LeanCheckout(ConnectionPool):
    """redis-py's checkout and check-in, minus its observability hooks and release events.

    Same lists under the same lock, and the same check that a pooled connection is still
    usable: one the server closed, or with unread data, is reconnected before it is handed out.
    """

    async def get_connection(
        self, command_name: str | None = None, *keys: Any, **options: Any
    ) -> AbstractConnection:
        async with self._lock:
            connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            if not connection.is_connected:
                await connection.connect()  # type: ignore[no-untyped-call]
            elif await self._dirty(connection):
                await connection.disconnect()
                await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await self.release(connection)
            raise
        return connection

    @staticmethod
    async def _dirty(connection: AbstractConnection) -> bool:
        try:
            return bool(await connection.can_read())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return True

    async def release(self, connection: AbstractConnection) -> None:
        async with self._lock:
            self._in_use_connections.remove(connection)
            if connection.should_reconnect():  # type: ignore[no-untyped-call]
                await connection.disconnect()
            self._available_connections.append(connection)


def async_redis(url: str, **kwargs: Any) -> Redis:
    """``Redis.from_url(url, **kwargs)`` with inline writes and a lean pool checkout."""
    client = Redis.from_url(url, **kwargs)
    pool = client.connection_pool
    base = pool.connection_class  # TCP, TLS or Unix socket, as the URL says
    pool.connection_class = type(f"Inline{base.__name__}", (_InlineWrites, base), {})
    pool.__class__ = type(f"Lean{type(pool).__name__}", (_LeanCheckout, type(pool)), {})
    return client


class LuaScript:
    """A Lua script called with ``EVALSHA`` (loaded on ``NOSCRIPT``) on a pooled connection.

    Errors are redis-py's: the connection drops itself on a failed or interrupted exchange, so
    no half-read reply reaches the next caller. Nothing is retried: the pool already replaces a
    connection the server closed when it hands it out, and a hung Redis then costs one
    ``socket_timeout``, not redis-py's ten retries with back-off. Callers handle ``RedisError``
    as they do for any command (fail open, or 503).
    """

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[KeyT] = (), args: Sequence[EncodableT] = ()) -> Any:
        """The script's reply to ``keys`` and ``args``."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await self._run(connection, keys, args)
        finally:
            await pool.release(connection)

    async def _run(
        self, connection: AbstractConnection, keys: Sequence[KeyT], args: Sequence[EncodableT]
    ) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        await connection.send_command(*command, check_health=False)
        try:
            return await connection.read_response()
        except NoScriptError:
            # Not loaded yet, or lost (Redis restarted, SCRIPT FLUSH).
            await connection.send_command("SCRIPT", "LOAD", self.source, check_health=False)
            await connection.read_response()
            await connection.send_command(*command, check_health=False)
            return await connection.read_response()
