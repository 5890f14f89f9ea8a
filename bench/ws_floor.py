"""A bare ``websockets`` fan-out server: the raw floor of the streaming benchmark.

``python -m bench.ws_floor PORT``: every text frame a connection sends is broadcast to every
other connection with ``websockets.broadcast`` (no JSON, no Redis, no auth). It runs on uvloop
in a process of its own, as the service does, and prints ``ready`` once it listens.
"""

import asyncio
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(connection: ServerConnection) -> None:
    CLIENTS.add(connection)
    try:
        async for message in connection:
            broadcast(CLIENTS - {connection}, message)
    finally:
        CLIENTS.discard(connection)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
