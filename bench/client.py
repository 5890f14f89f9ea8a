"""HTTP/1.1 load clients: one keep-alive connection per simulated user.

The client and the server share the machine's two cores, so every microsecond of client CPU is
taken from the server. ``RawConnection`` is a minimal asyncio protocol that writes pre-encoded
request bytes and parses only the status line and ``Content-Length``. Measured here it costs
40-70 µs of CPU per request against 650-750 µs for ``httpx.AsyncClient``, whose overhead halved
the 16-client throughput, so it is the default. ``HttpxConnection`` (``--client httpx``) is kept
to cross-check the numbers.
"""

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import httpx
import orjson

ClientKind = Literal["raw", "httpx"]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request, encoded once and sent many times."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wire: bytes


def prepare(
    method: str, path: str, *, host: str, token: str, json_body: object | None = None
) -> PreparedRequest:
    """Encode a request with a bearer token and an optional JSON body."""
    body = orjson.dumps(json_body) if json_body is not None else b""
    headers = {"Authorization": f"Bearer {token}"}
    if json_body is not None:
        headers["Content-Type"] = "application/json"
    # Framing headers go on the wire only: httpx sets its own.
    wire_headers = {"Host": host, **headers}
    if json_body is not None:
        wire_headers["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in wire_headers.items()
    )
    return PreparedRequest(method, path, headers, body, head.encode("latin-1") + b"\r\n" + body)


class LoadConnection(Protocol):
    """A single keep-alive connection that sends one request at a time."""

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]:
        """Send ``request`` and return the response status and body."""
        ...

    async def aclose(self) -> None:
        """Close the connection."""
        ...


class _Http11(asyncio.Protocol):
    """Response framing by ``Content-Length`` only: what uvicorn sends for JSON responses."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self._parse()
        except ValueError as exc:
            waiter.set_exception(exc)
            return
        if response is not None:
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("server closed the connection"))

    def _parse(self) -> tuple[int, bytes] | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("chunked responses are not supported by the raw client")
        total = end + 4 + length
        if len(self._buffer) < total:
            return None
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        return int(head[9:12]), body

    async def request(self, wire: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(wire)
        return await self._waiter


class RawConnection:
    """Minimal HTTP/1.1 keep-alive client connection over asyncio."""

    def __init__(self, host: str, port: int, protocol: _Http11) -> None:
        self._host = host
        self._port = port
        self._protocol = protocol

    @staticmethod
    async def _connect(host: str, port: int) -> _Http11:
        # asyncio and uvloop set TCP_NODELAY on TCP transports.
        _, protocol = await asyncio.get_running_loop().create_connection(_Http11, host, port)
        return protocol

    @classmethod
    async def open(cls, host: str, port: int) -> "RawConnection":
        """Connect to ``host:port``."""
        return cls(host, port, await cls._connect(host, port))

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]:
        """Send ``request`` and return the response status and body."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            # The server closes idle keep-alive connections (uvicorn: after 5 s); reconnect.
            self._protocol = await self._connect(self._host, self._port)
        return await self._protocol.request(request.wire)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._protocol.transport is not None:
            self._protocol.transport.close()


class HttpxConnection:
    """The same interface over ``httpx.AsyncClient`` limited to one HTTP/1.1 connection."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=30.0,
        )

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]:
        """Send ``request`` and return the response status and body."""
        response = await self._client.request(
            request.method, request.path, headers=request.headers, content=request.body or None
        )
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Close the connection."""
        await self._client.aclose()


async def open_connections(
    kind: ClientKind, host: str, port: int, count: int
) -> list[LoadConnection]:
    """``count`` connected load connections of the chosen client kind."""
    connections: list[LoadConnection] = []
    for _ in range(count):
        if kind == "raw":
            connections.append(await RawConnection.open(host, port))
        else:
            connections.append(HttpxConnection(f"http://{host}:{port}"))
    return connections
