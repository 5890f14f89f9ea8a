"""The app's Redis client (redis-py's): scripts reload themselves, a hung Redis costs a timeout,
not a hang, and a connection the server dropped is replaced."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conversation_service.utils.redis_client import async_redis


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


def hung_client(port: int) -> Redis:
    # No handshake on connect (HELLO, CLIENT SETINFO: no reply would come): straight to the write.
    return async_redis(
        f"redis://127.0.0.1:{port}/0", socket_timeout=0.3, driver_info=None, protocol=2
    )


async def test_a_write_the_server_never_takes_times_out(deaf_server: int) -> None:
    client = hung_client(deaf_server)
    try:
        # Far more than the socket buffers hold: the write itself blocks.
        async with asyncio.timeout(30):  # a guard against a hang, not a timing
            with pytest.raises(RedisTimeoutError, match="writing"):
                await client.set("big", b"x" * (64 * 1024 * 1024))
            # The next command starts on a new connection (and times out reading).
            with pytest.raises(RedisTimeoutError):
                await client.get("small")
    finally:
        await client.aclose()


async def test_a_script_on_a_hung_redis_times_out(deaf_server: int) -> None:
    client = hung_client(deaf_server)
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a timing
            with pytest.raises(RedisTimeoutError):
                await client.register_script("return 1")()
    finally:
        await client.aclose()


@pytest.fixture
async def app_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client with the app's options and a name of its own (to find its connections)."""
    client = async_redis(
        redis_url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        client_name=f"test-{uuid.uuid4().hex}",
    )
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_script_loads_itself_again_when_redis_forgot_it(app_redis: Redis) -> None:
    key = f"test:lua:{uuid.uuid4().hex}"
    script = app_redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        assert await script(keys=[key], args=[5]) == 5
        await app_redis.script_flush()
        assert await script(keys=[key], args=[2]) == 7
        assert await app_redis.script_exists(script.sha) == [True]
    finally:
        await app_redis.delete(key)


async def test_a_failing_script_raises_and_leaves_its_connection_usable(
    app_redis: Redis,
) -> None:
    failing = app_redis.register_script("return redis.error_reply('refused: ' .. ARGV[1])")
    with pytest.raises(ResponseError, match="refused: no"):
        await failing(args=["no"])
    assert await app_redis.register_script("return ARGV[1]")(args=["next"]) == b"next"


async def test_a_script_survives_redis_closing_its_pooled_connections(
    app_redis: Redis, redis_url: str
) -> None:
    echo = app_redis.register_script("return ARGV[1]")
    assert await echo(args=["first"]) == b"first"
    name = app_redis.get_connection_kwargs()["client_name"]
    async with Redis.from_url(redis_url) as admin:
        ours = [c["id"] for c in await admin.client_list() if c["name"] == name]
        assert ours
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        assert not [c for c in await admin.client_list() if c["name"] == name]
    assert await echo(args=["again"]) == b"again"


async def test_more_concurrent_commands_than_pooled_connections_wait_for_one(
    redis_url: str,
) -> None:
    # redis-py 8's default pool refuses the 101st concurrent command (MaxConnectionsError): a
    # burst of viewers and requests on one process must queue for a connection instead.
    client = async_redis(redis_url, max_connections=4)
    key = f"test:burst:{uuid.uuid4()}"
    try:
        await asyncio.gather(*(client.incr(key) for _ in range(200)))
        assert int(await client.get(key)) == 200
    finally:
        await client.delete(key)
        await client.aclose()
