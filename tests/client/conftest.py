"""A live ``conversation-service serve`` per backend, the client's users, and a TCP proxy that
can cut every connection (to show that streams resume across disconnects)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from conversation_service_client import AsyncConversationServiceClient, ConversationServiceClient
from tests.conftest import INTERNAL_KEY, Caller, new_caller
from tests.routes.test_openai_compat import Live, serve_live


@pytest.fixture(scope="package")
def live(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """``conversation-service serve`` on the backend under test."""
    with serve_live(database_url, redis_url, tmp_path_factory.mktemp("client-live")) as server:
        yield server


@pytest.fixture
def user() -> Caller:
    return new_caller()


@pytest.fixture
def client(live: Live, user: Caller) -> Iterator[ConversationServiceClient]:
    """The blocking client as ``user``, with the service key for internal calls."""
    with ConversationServiceClient(
        live.base_url, token=user.token, service_key=INTERNAL_KEY
    ) as client:
        yield client


@pytest.fixture
async def aclient(live: Live, user: Caller) -> AsyncIterator[AsyncConversationServiceClient]:
    """The async client as ``user``, with the service key for internal calls."""
    async with AsyncConversationServiceClient(
        live.base_url, token=user.token, service_key=INTERNAL_KEY
    ) as client:
        yield client


class CuttableProxy:
    """A TCP proxy to the live server that can drop every connection and refuse new ones.

    With ``refuse_websocket`` it answers WebSocket upgrades 403, like a proxy that does not
    support them.
    """

    def __init__(self, target_port: int, *, refuse_websocket: bool = False) -> None:
        self.target_port = target_port
        self.refuse_websocket = refuse_websocket
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.websocket_refusals = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and abort every open connection."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        self.writers.add(writer)
        try:
            head = await reader.read(65536)
            if self.refuse_websocket and b"upgrade: websocket" in head.lower():
                self.websocket_refusals += 1
                writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.writers.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self.writers.discard(writer)
            self.tasks.discard(task)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.server is not None:
            await self.cut()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.transport.abort()


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


@pytest.fixture
async def proxy(live: Live) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(port_of(live.base_url))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def websocketless_proxy(live: Live) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(port_of(live.base_url), refuse_websocket=True)
    await proxy.start()
    yield proxy
    await proxy.close()
