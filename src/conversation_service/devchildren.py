"""The launcher's children and probes: ports, child processes with their logs, readiness checks.

Used by ``devstack`` (``conversation-service dev``); nothing here knows the stack's order.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TextIO

import httpx
from redis import Redis
from redis.exceptions import RedisError

PR_SET_PDEATHSIG: Final = 1


def port_is_free(host: str, port: int) -> bool:
    """True if a server could bind ``host:port`` now (as uvicorn does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM the child when the launcher dies (Linux).

    Safe as a ``preexec_fn`` here: the launcher runs no threads.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return preexec


class Child:
    """One child process in its own session, logging to a file."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        preexec: Callable[[], None] | None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.preexec = preexec
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn it (output to its log file, truncated)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own commands
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.preexec,  # safe: the launcher runs no threads
            )

    @property
    def pid(self) -> int | None:
        """Its pid (also its process group id), once started."""
        return None if self.process is None else self.process.pid

    def poll(self) -> int | None:
        """Its exit status, or None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    @property
    def running(self) -> bool:
        """Started and not yet exited."""
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its whole process group (whatever it spawned too)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def tail(self, lines: int = 25) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Console:
    """Where the launcher prints; a closed or broken stream (``make run | tee`` after Ctrl-C)
    silences it instead of interrupting the shutdown."""

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream

    def write(self, text: str) -> None:
        """Write and flush ``text``, unless the stream is gone."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None


class LogEcho:
    """Echo the children's log files to a console, each line prefixed with the child's name."""

    def __init__(self, out: Console, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self._positions: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}

    def pump(self, children: Sequence[Child]) -> None:
        """Write whatever complete lines the children logged since the last call."""
        if not self.enabled:
            return
        for child in children:
            try:
                with child.log_path.open("rb") as log:
                    log.seek(self._positions.get(child.name, 0))
                    data = log.read()
                    self._positions[child.name] = log.tell()
            except FileNotFoundError:
                continue
            if not data:
                continue
            buffered = self._partial.get(child.name, b"") + data
            *lines, rest = buffered.split(b"\n")
            self._partial[child.name] = rest
            prefixed = (
                f"{child.name:<12}| {line.decode(errors='replace').rstrip(chr(13))}\n"
                for line in lines
            )
            self.out.write("".join(prefixed))


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def redis_ok(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def serves_dir(url: str, directory: Path) -> bool:
    """True if a Redis/Valkey server at ``url`` keeps its files in ``directory``."""
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        served = client.config_get("dir").get("dir")
    except (RedisError, OSError):
        return False
    finally:
        client.close()
    if isinstance(served, bytes):
        served = served.decode()
    return isinstance(served, str) and Path(served).resolve() == directory.resolve()


def worker_registered(url: str | None, pid: int | None) -> bool:
    from rq import Worker

    if url is None or pid is None:
        return False
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return any(worker.pid == pid for worker in Worker.all(connection=client))
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def redacted(url: str) -> str:
    """``url`` without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
