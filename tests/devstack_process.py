"""Run the real ``conversation-service dev`` launcher in a subprocess, for tests of the whole stack.

The launcher runs in a directory of the test's own, on free ports, with a clean environment (no
inherited ``CONVERSATION_*`` or ``ORCHESTRATOR_*`` variables). It gets its own session, like a
program started from a terminal, so a signal the test sends reaches the launcher alone, exactly as
Ctrl-C would. On exit, anything still alive that the launcher started is killed by its pid.
"""

import contextlib
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from tests.live_server import cli_command, free_port, service_env, tail

READY_LINE = "Ctrl-C stops everything"


def is_alive(process: psutil.Process) -> bool:
    """Running (zombies, which only wait to be reaped, count as gone)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DevStackProcess:
    """One ``conversation-service dev`` launcher and what it started."""

    def __init__(
        self,
        cwd: Path,
        *,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "dev",
    ) -> None:
        self.cwd = cwd
        self.data_dir = data_dir or cwd / ".data"
        self.api_port = free_port()
        self.orchestrator_port = free_port()
        self.redis_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.orchestrator_url = f"http://127.0.0.1:{self.orchestrator_port}"
        self.log_path = cwd / f"{name}-{self.api_port}.log"
        self.command = [
            *cli_command(),
            "dev",
            "--port", str(self.api_port),
            "--orchestrator-port", str(self.orchestrator_port),
            "--redis-port", str(self.redis_port),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        clean = {
            k: v for k, v in service_env(env or {}).items() if not k.startswith("ORCHESTRATOR_")
        }
        self.env = clean
        self.process: subprocess.Popen[bytes] | None = None
        self.children: list[psutil.Process] = []

    def __enter__(self) -> "DevStackProcess":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill_leftovers()

    def start(self, timeout: float = 90.0) -> None:
        """Start the launcher and wait until it prints its banner (everything is ready)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.describe(f"dev exited with {self.process.returncode}"))
            if READY_LINE in self.log():
                self.children = psutil.Process(self.process.pid).children(recursive=True)
                return
            time.sleep(0.1)
        raise AssertionError(self.describe(f"dev not ready after {timeout}s"))

    def log(self) -> str:
        """Everything the launcher printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self, problem: str) -> str:
        """An assertion message with the launcher's last words."""
        command = " ".join(self.command)
        return f"{problem}\ncommand: {command}\n--- log tail ---\n{tail(self.log_path, 60)}"

    def child_names(self) -> list[str]:
        """The command lines of the processes the launcher started (at start-up)."""
        return [" ".join(child.cmdline()) for child in self.children if is_alive(child)]

    def stop(self, signum: int = signal.SIGINT, timeout: float = 40.0) -> int:
        """Send ``signum`` to the launcher alone and wait for it to exit; returns its status."""
        assert self.process is not None
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.describe(f"dev did not stop on {signum!r}")) from None

    def survivors(self, grace: float = 2.0) -> list[psutil.Process]:
        """The launcher's children (recorded at start-up) still alive after ``grace`` seconds."""
        deadline = time.monotonic() + grace
        alive = [child for child in self.children if is_alive(child)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [child for child in alive if is_alive(child)]
        return alive

    def kill_leftovers(self) -> None:
        """SIGKILL the launcher and what it started, by pid, if anything is still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for child in self.children:
            if is_alive(child):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()

    def token(self) -> str:
        """A development user token from ``GET /dev/token``."""
        response = httpx.get(self.base_url + "/dev/token", timeout=5)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def client(self) -> httpx.Client:
        """A client of the public API, authenticated as the development user."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=10,
        )


def wait_for(check: Any, *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
