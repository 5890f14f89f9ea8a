"""The app's Redis client writes commands inline and keeps redis-py's timeouts and errors."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import TimeoutError as RedisTimeoutError

from conversation_service.utils.redis_client import async_redis


async def test_commands_pipelines_and_scripts_work_as_with_redis_py(redis_url: str) -> None:
    client = async_redis(redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    key = f"test:inline:{uuid.uuid4().hex}"
    try:
        assert await client.set(key, "1", ex=60)
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.get(key)
            assert await pipe.execute() == [2, b"2"]
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert await script(keys=[key], args=[5]) == 7
        connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        assert type(connection).__name__ == "InlineConnection"
        assert connection.socket_timeout == 2.0
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.fixture
async def deaf_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never reads or answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_write_the_server_never_takes_times_out_and_drops_the_connection(
    deaf_server: int,
) -> None:
    # No handshake on connect (HELLO, CLIENT SETINFO: no reply would come): straight to the write.
    client = async_redis(
        f"redis://127.0.0.1:{deaf_server}/0", socket_timeout=0.3, driver_info=None, protocol=2
    )
    try:
        # Far more than the socket buffers hold: the write itself blocks.
        async with asyncio.timeout(30):  # a guard against a hang, not a timing
            with pytest.raises(RedisTimeoutError, match="writing"):
                await client.set("big", b"x" * (64 * 1024 * 1024))
        connection = client.connection_pool._available_connections  # type: ignore[attr-defined]
        assert all(not c.is_connected for c in connection)
        # The next command starts on a new connection (and times out reading, redis-py's way).
        with pytest.raises(RedisTimeoutError):
            await client.get("small")
    finally:
        await client.aclose()


# A connection of ours and redis-py's own (never connected: packing only).
_PACKERS = (
    async_redis("redis://127.0.0.1:1/0").connection_pool.make_connection(),  # type: ignore[no-untyped-call]
    Connection(),
)
_ARGUMENTS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["SET", "EVALSHA", "CLIENT SETINFO", b"ZADD"]), args=st.lists(_ARGUMENTS)
)
def test_commands_are_packed_exactly_as_redis_py_packs_them(
    name: str | bytes, args: list[Any]
) -> None:
    ours, theirs = _PACKERS
    assert b"".join(ours.pack_command(name, *args)) == b"".join(theirs.pack_command(name, *args))
