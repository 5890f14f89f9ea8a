"""The app's Redis client writes commands inline and keeps redis-py's timeouts and errors."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conversation_service.utils.redis_client import LuaScript, async_redis


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


@pytest.fixture
async def app_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = async_redis(redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_lua_script_loads_itself_when_redis_does_not_know_it(app_redis: Redis) -> None:
    key = f"test:lua:{uuid.uuid4().hex}"
    script = LuaScript(app_redis, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        await app_redis.script_flush()
        assert await script(keys=[key], args=[5]) == 5
        assert await app_redis.script_exists(script.sha) == [True]
        assert await script(keys=[key], args=[2]) == 7
    finally:
        await app_redis.delete(key)


async def test_a_failing_lua_script_raises_and_leaves_its_connection_usable(
    app_redis: Redis,
) -> None:
    failing = LuaScript(app_redis, "return redis.error_reply('refused: ' .. ARGV[1])")
    with pytest.raises(ResponseError, match="refused: no"):
        await failing(args=["no"])
    assert await LuaScript(app_redis, "return ARGV[1]")(args=["next"]) == b"next"


async def test_a_lua_script_survives_redis_closing_its_pooled_connection(app_redis: Redis) -> None:
    echo = LuaScript(app_redis, "return ARGV[1]")
    assert await echo(args=["first"]) == b"first"
    pooled = app_redis.connection_pool._available_connections  # type: ignore[attr-defined]
    ids = [await connection_id(connection) for connection in pooled]
    for client_id in ids:
        await app_redis.client_kill_filter(_id=client_id)
    assert await echo(args=["again"]) == b"again"


async def test_a_connection_returned_with_an_unread_reply_is_never_handed_out_dirty(
    app_redis: Redis,
) -> None:
    pool = app_redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    await connection.send_command("ECHO", "stale")
    await asyncio.sleep(0.05)  # the reply is waiting in the socket, unread
    await pool.release(connection)
    assert await app_redis.echo("fresh") == b"fresh"


async def test_concurrent_commands_each_get_their_own_reply(app_redis: Redis) -> None:
    values = [uuid.uuid4().hex for _ in range(50)]
    assert await asyncio.gather(*(app_redis.echo(value) for value in values)) == [
        value.encode() for value in values
    ]
    pool = app_redis.connection_pool
    assert not pool._in_use_connections  # type: ignore[attr-defined]


async def connection_id(connection: Any) -> int:
    """The server's id of one pooled connection (asked on that very connection)."""
    await connection.send_command("CLIENT", "ID")
    return int(await connection.read_response())


async def test_a_lua_script_on_a_hung_redis_times_out_once(deaf_server: int) -> None:
    client = async_redis(
        f"redis://127.0.0.1:{deaf_server}/0", socket_timeout=0.3, driver_info=None, protocol=2
    )
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a timing
            with pytest.raises(RedisTimeoutError):
                await LuaScript(client, "return 1")()
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
