"""Run the real ``conversation-service`` command in a subprocess, for tests that need a live server.

The in-process ASGI client covers most tests; this module is for what only a real process shows:
the CLI start-up checks, uvicorn and its signal handling, and black-box tools (schemathesis,
browsers, benchmarks) that talk HTTP to a port. The child gets a clean environment (no inherited
``CONVERSATION_*`` variables) and runs in its own directory, so a developer's ``.env`` or
``.data/`` never leaks in. Its stdout and stderr go to a log file whose tail is put in every
assertion message, so a server that dies at start-up says why.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx

ENV_PREFIX = "CONVERSATION_"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cli_command() -> list[str]:
    """The ``conversation-service`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "conversation-service"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "conversation_service.cli"]


def service_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment minus any ``CONVERSATION_*`` variable, plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run one ``conversation-service`` command to completion and fail loudly if it fails.

    ``env`` is applied as for ``live_server``; ``cwd`` matters because settings also read a
    ``.env`` file from the working directory.
    """
    result = subprocess.run(
        [*cli_command(), *args],
        env=service_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"conversation-service {' '.join(args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result


class ServerProcess:
    """One ``conversation-service serve`` subprocess on ``host:port``.

    It starts in a new session (process group) so that a SIGKILL after a failed graceful stop
    also reaches anything it spawned, such as an embedded Valkey server.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        cwd: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.base_url = f"http://{host}:{self.port}"
        self.cwd = cwd
        self.log_path = log_path or cwd / f"server-{self.port}.log"
        self.command = [
            *cli_command(),
            "serve",
            "--host",
            host,
            "--port",
            str(self.port),
            *args,
        ]
        self._env = service_env(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the process (does not wait for it to be ready)."""
        assert self._process is None, "already started"
        # Append: a server restarted on the same port keeps its predecessor's log above its own.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                env=self._env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def tail(self, lines: int = 40) -> str:
        """The last lines the server wrote to stdout/stderr."""
        return tail(self.log_path, lines)

    def describe(self, problem: str) -> str:
        """An assertion message: what went wrong, then the server's own last words."""
        return (
            f"{problem}\ncommand: {' '.join(self.command)}\n"
            f"--- server log tail ({self.log_path}) ---\n{self.tail()}"
        )

    def wait_ready(self, path: str = "/health/ready", timeout: float = 30.0) -> None:
        """Poll ``path`` until it answers 200; fail with the log tail if the server dies first."""
        assert self._process is not None, "not started"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._process.poll()
                if code is not None:
                    raise AssertionError(self.describe(f"server exited with {code} during start"))
                try:
                    response = client.get(path)
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:500]}"
                time.sleep(0.1)
        raise AssertionError(self.describe(f"{path} not ready after {timeout}s (last: {last})"))

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once: a crash, with no graceful close."""
        return self.stop(grace=0.0)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the whole process group."""
        process = self._process
        if process is None or self._stopped:
            return None if process is None else process.returncode
        self._stopped = True
        if process.poll() is None and grace > 0:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # Whatever is left of its group (a hung server, an orphaned embedded Valkey, uvicorn
        # workers) must not outlive the test. The group id stays reserved while any member lives.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


@contextmanager
def live_server(
    env: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
    log_path: Path | None = None,
    wait_ready: bool = True,
    ready_path: str = "/health/ready",
    ready_timeout: float = 30.0,
) -> Iterator[str]:
    """Start ``conversation-service serve`` with ``env`` (CONVERSATION_* overrides) and yield
    its base URL, e.g. ``http://127.0.0.1:41234``; the server is stopped on exit.

    ``env`` is applied on top of this process's environment with every inherited
    ``CONVERSATION_*`` variable removed. The server runs in ``cwd`` (a temporary directory
    by default) and logs to ``log_path`` (default: ``server-<port>.log`` in ``cwd``): pass a
    path to read the log afterwards with ``tail``. Migrate the database first
    (``run_cli(["migrate"], env)``): ``serve`` refuses an unmigrated schema.
    """
    with ExitStack() as stack:
        if cwd is None:
            cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="live-server-")))
        server = ServerProcess(env, cwd=cwd, host=host, port=port, args=args, log_path=log_path)
        server.start()
        stack.callback(server.stop)
        if wait_ready:
            server.wait_ready(ready_path, timeout=ready_timeout)
        yield server.base_url
