"""The HTTP floor: a bare ASGI callable (no framework) on the service's uvicorn and options.

``python -m bench.http_floor PORT SHAPES`` serves ``app``: it reads the request body to the end
and answers every request with the status and a JSON body of the size that ``SHAPES`` (a JSON
object ``{"METHOD /path/shape": [status, size]}``) gives for its method and path shape (ids
replaced by ``{id}``, query dropped); anything else gets 404. uvicorn runs it exactly as
``conversation-service serve`` runs the service: uvloop, httptools, no access log, no log config,
proxy headers, one process. ``HttpFloor`` starts it and reads its CPU time from ``/proc``.
"""

import asyncio
import json
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from bench.server import free_port, process_cpu_seconds

_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
READY_TIMEOUT = 30.0

Shapes = dict[str, tuple[int, int]]


def shape_of(method: str, path: str) -> str:
    """``POST /api/v1/conversations/{id}/messages`` for any id and query."""
    return f"{method} {_ID.sub('{id}', path.split('?', 1)[0])}"


def make_app(shapes: Shapes) -> Any:
    """The ASGI callable answering ``shapes``."""
    answers = {
        shape: (status, json.dumps({"data": "x" * max(0, size - 12)}).encode())
        for shape, (status, size) in shapes.items()
    }
    missing = (404, b'{"detail":"not found"}')

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: nothing to set up
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        status, body = answers.get(shape_of(scope["method"], scope["path"]), missing)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class HttpFloor:
    """``async with HttpFloor(shapes) as floor``: the bare app on a free port, then stopped."""

    def __init__(self, shapes: Shapes) -> None:
        self.shapes = shapes
        self.host = "127.0.0.1"
        self.port = free_port()
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.http_floor",
            str(self.port),
            json.dumps(self.shapes),
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(int(READY_TIMEOUT / 0.05)):
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return self
        await self.stop()
        raise RuntimeError("the HTTP floor did not start")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the process."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the floor process so far."""
        assert self._proc is not None
        return process_cpu_seconds(self._proc.pid)


def main() -> None:
    """Serve the floor app as ``conversation-service serve`` serves the service."""
    shapes = {shape: (status, size) for shape, (status, size) in json.loads(sys.argv[2]).items()}
    uvicorn.run(
        make_app(shapes),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
