"""A bare ``websockets`` fan-out server: the raw floor of the streaming benchmark.

``python -m bench.ws_floor PORT [REDIS_URL]``: every text frame a connection sends is broadcast
to every other connection with ``websockets.broadcast`` (no JSON, no auth). With a Redis URL it
also forwards every message published on ``PIPE_CHANNEL`` to all connections (one redis-py
subscriber with hiredis): the raw pipeline Redis publish → subscriber → fan-out. It runs on
uvloop in a process of its own, as the service does, and prints ``ready`` once it listens.
"""

import asyncio
import sys

import uvloop
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()
PIPE_CHANNEL = "bench:floor:pipe"


async def handler(connection: ServerConnection) -> None:
    CLIENTS.add(connection)
    try:
        async for message in connection:
            broadcast(CLIENTS - {connection}, message)
    finally:
        CLIENTS.discard(connection)


async def forward(redis_url: str, subscribed: asyncio.Event) -> None:
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(PIPE_CHANNEL)
    subscribed.set()
    async for message in pubsub.listen():
        if message["type"] == "message":
            broadcast(CLIENTS, message["data"].decode())


async def main(port: int, redis_url: str | None) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        subscribed = asyncio.Event()
        if redis_url:
            task = asyncio.create_task(forward(redis_url, subscribed))
            await subscribed.wait()
        print("ready", flush=True)
        await asyncio.Future()
        task.cancel()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
