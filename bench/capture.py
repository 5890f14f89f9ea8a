"""List the SQL statements and Redis commands each hot operation issues (how ``bench.raw.hot``
was written): ``python -m bench.capture --backend postgres|sqlite [--redis-url URL]``.

The service runs as a black box, as in the benchmark. On PostgreSQL it connects through a
small proxy that reads the wire protocol (``Parse`` and ``Bind`` give the statement each
execution runs, whatever the driver or its statement cache; ``Query`` gives ``BEGIN`` and
``COMMIT``). On SQLite it runs under ``bench.sqlite_trace``, which sets sqlite3's trace callback
on every connection. Redis commands come from ``MONITOR``, filtered to the service's database
(use a database nothing else writes to). Each operation runs a few times first; the last run is
printed. Run it again after a change to the service and compare with ``bench.raw.hot``.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import uvloop
from redis.asyncio import Redis

from bench.server import CLI, ServiceConfig, ServiceProcess, free_port, migrate

CONTENT = "Could you summarise the last three invoices for ACME Corp? Please keep it short."
SETTLE = 0.5  # after-commit work (relay, events) finishes within this


class PgProxy:
    """A TCP proxy that logs the statement of every ``Bind`` and every simple ``Query``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.log: list[str] = []

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        named: dict[bytes, str] = {}
        startup = True
        while True:
            if startup:  # untyped: SSLRequest or StartupMessage
                head = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(head) - 4)
                writer.write(head + body)
                startup = body[:4] == (80877103).to_bytes(4)  # an SSLRequest: startup follows
                continue
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head) - 4)
            writer.write(kind + head + body)
            if kind == b"P":
                name, query = body.split(b"\0")[:2]
                named[name] = query.decode()
            elif kind == b"B":
                statement = body.split(b"\0")[1]
                self.log.append(named.get(statement, "?"))
            elif kind == b"Q":
                self.log.append(body.rstrip(b"\0").decode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)

        async def client_to_server() -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await self._client_to_server(reader, up_writer)

        # Whichever side closes first ends the other (asyncpg waits for the server's EOF).
        tasks = [asyncio.create_task(server_to_client()), asyncio.create_task(client_to_server())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        up_writer.close()
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        async with server:
            yield


class SqliteLog:
    """The trace file ``bench.sqlite_trace`` appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()

    @property
    def log(self) -> list[str]:
        return self.path.read_text().splitlines()


async def _monitor(redis_url: str, lines: list[str]) -> None:
    db = int(urlsplit(redis_url).path.strip("/") or 0)
    async with Redis.from_url(redis_url).monitor() as monitor:
        async for entry in monitor.listen():
            if entry.get("db") == db:
                # Commands a Lua script runs are indented under its EVALSHA.
                lua = "    " if entry.get("client_type") == "lua" else ""
                command = entry["command"]
                lines.append(f"{lua}{command[:160]} [{len(command)} chars]")


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="conversation-capture-") as tmp:
        yield Path(tmp)


async def _operations(
    base_url: str, token: str, key: str
) -> dict[str, list[tuple[str, str, object]]]:
    user = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=user) as client:
        made = await client.post("/api/v1/conversations", json={"agent_id": "capture"})
        cid = made.json()["id"]
    prefix = f"/api/v1/conversations/{cid}"
    internal = f"/internal/v1/conversations/{cid}"
    return {
        "append": [("POST", f"{prefix}/messages", {"content": CONTENT})],
        "agent turn": [
            ("POST", f"{internal}/messages", {"role": "assistant", "status": "streaming"}),
            ("POST", f"{internal}/messages/{{mid}}/complete", {"content": CONTENT}),
        ],
        "history page": [("GET", f"{prefix}/messages?order=desc&limit=50", None)],
        "context": [("GET", f"{internal}/context", None)],
    }


async def capture(backend: str, postgres_url: str, redis_url: str) -> None:
    """Run each operation a few times and print the statements and commands of the last run."""
    with _workdir() as workdir:
        proxy: PgProxy | None = None
        trace: SqliteLog | None = None
        if backend == "postgres":
            url = urlsplit(postgres_url)
            proxy = PgProxy((url.hostname or "127.0.0.1", url.port or 5432))
            database_url = postgres_url.replace(f":{url.port or 5432}/", f":{proxy.port}/")
            command: tuple[str, ...] = (str(CLI),)
        else:
            database_url = f"sqlite+aiosqlite:///{workdir / 'capture.db'}"
            trace = SqliteLog(workdir / "trace.sql")
            command = (sys.executable, "-m", "bench.sqlite_trace", str(trace.path))
        config = ServiceConfig(
            database_url=database_url,
            redis_url=redis_url,
            jwt_secret=secrets.token_urlsafe(48),
            internal_key=secrets.token_urlsafe(24),
            command=command,
        )
        await migrate(dataclasses.replace(config, database_url=postgres_url) if proxy else config)
        tenant = f"capture-{uuid.uuid4().hex[:8]}"
        token = jwt.encode(
            {"sub": "capture-user", "tenant": tenant, "exp": 4102444800},
            config.jwt_secret,
            algorithm="HS256",
        )
        redis_lines: list[str] = []
        async with (
            proxy.running() if proxy else _null(),
            ServiceProcess(config, workdir / "service.log") as service,
        ):
            sql = proxy or trace
            assert sql is not None
            ops = await _operations(service.base_url, token, config.internal_key)
            monitor = asyncio.create_task(_monitor(redis_url, redis_lines))
            await asyncio.sleep(SETTLE)
            async with httpx.AsyncClient(base_url=service.base_url) as client:
                for name, steps in ops.items():
                    for _ in range(4):
                        sql_from, redis_from = len(sql.log), len(redis_lines)
                        mid = ""
                        for method, path, body in steps:
                            key = config.internal_key if "/internal/" in path else token
                            response = await client.request(
                                method,
                                path.replace("{mid}", mid),
                                json=body,
                                headers={"Authorization": f"Bearer {key}"},
                            )
                            response.raise_for_status()
                            mid = str(response.json().get("id", mid))
                        await asyncio.sleep(SETTLE)
                    print(f"== {backend}: {name} (fourth run)")
                    for line in sql.log[sql_from:]:
                        print(f"  SQL   {' '.join(line.split())}")
                    for line in redis_lines[redis_from:]:
                        print(f"  REDIS {line}")
            monitor.cancel()


@asynccontextmanager
async def _null() -> AsyncIterator[None]:
    yield


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capture")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), required=True)
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    uvloop.run(capture(args.backend, args.postgres_url, args.redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
