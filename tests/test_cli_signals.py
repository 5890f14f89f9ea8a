"""``serve`` and ``worker`` stop on SIGTERM and SIGINT and leave no process behind.

Each command runs as a real subprocess on the embedded default (SQLite under ``.data/`` and the
embedded Valkey it starts itself) in a directory of its own, in a session of its own. The signal
goes to the command's process alone, as a container runtime or a process manager sends it. After
it exits, nothing may remain of what it started: not its uvicorn or RQ children, and not the
``valkey-server`` it launched. Every wait polls against a generous deadline, so a slow machine
only makes the tests slower.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import psutil
import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker

from tests.devstack_process import is_alive
from tests.live_server import cli_command, free_port, run_cli, service_env, tail

pytestmark = pytest.mark.slow

START_TIMEOUT = 120.0
STOP_TIMEOUT = 90.0
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def wait_until(check: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``check`` until it holds; fail at once if ``process`` exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the command exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {START_TIMEOUT}s")
        time.sleep(0.2)


def session_members(session_id: int) -> list[psutil.Process]:
    """Every live process of the session ``session_id`` (including ones re-parented to init)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getsid(process.pid) == session_id and is_alive(process):
                members.append(process)
    return members


@contextlib.contextmanager
def command(
    args: Sequence[str], cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``conversation-service args`` in a new session; SIGKILL whatever is left on exit."""
    log_path = cwd / "command.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*cli_command(), *args],
            cwd=cwd,
            env=service_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- log tail ---\n{tail(log_path, 60)}") from None
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for leftover in session_members(process.pid):
            with contextlib.suppress(psutil.Error):
                leftover.kill()


def stop_and_assert_nothing_left(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the command alone; it and everything it started must end."""
    tree = psutil.Process(process.pid).children(recursive=True)
    names = [child.name() for child in tree]
    assert any(name.startswith("valkey-server") for name in names), names
    process.send_signal(signum)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {STOP_TIMEOUT}s after {signum!r}") from None
    # A clean stop: status 0, or ended by the signal itself (uvicorn's way on SIGTERM).
    assert process.returncode in (0, -signum), process.returncode
    deadline = time.monotonic() + STOP_TIMEOUT
    survivors = left_behind(tree, process.pid)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.2)
        survivors = left_behind(tree, process.pid)
    assert not survivors, survivors


def left_behind(tree: list[psutil.Process], session_id: int) -> list[str]:
    """The command lines of what still runs of ``tree`` or of the session."""
    alive = {child.pid: child for child in tree if is_alive(child)}
    alive.update((member.pid, member) for member in session_members(session_id))
    lines = []
    for process in alive.values():
        with contextlib.suppress(psutil.Error):
            lines.append(" ".join(process.cmdline()))
    return lines


def embedded_env(redis_port: int) -> dict[str, str]:
    """The development defaults, with the embedded Valkey on a port of the test's own."""
    return {"CONVERSATION_EMBEDDED_REDIS_PORT": str(redis_port), "CONVERSATION_LOG_JSON": "false"}


def redis_answers(port: int) -> bool:
    client = Redis(port=port, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["alone", "workers"])
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_serve_on_embedded_valkey_leaves_no_process_after_signal(
    tmp_path: Path, signum: int, workers: int
) -> None:
    redis_port, port = free_port(), free_port()
    env = embedded_env(redis_port)
    run_cli(["migrate"], env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/health/ready"

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    with command(
        ["serve", "--port", str(port), "--workers", str(workers)], tmp_path, env
    ) as process:
        wait_until(ready, process, "the API ready")
        stop_and_assert_nothing_left(process, signum)
    assert not redis_answers(redis_port)


@pytest.mark.parametrize("pool", [1, 2], ids=["alone", "pool"])
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_worker_on_embedded_valkey_leaves_no_process_after_signal(
    tmp_path: Path, signum: int, pool: int
) -> None:
    redis_port = free_port()
    env = embedded_env(redis_port)
    run_cli(["migrate"], env, cwd=tmp_path)

    def registered() -> bool:
        if not redis_answers(redis_port):
            return False
        client = Redis(port=redis_port, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            return len(Worker.all(connection=client)) == pool
        finally:
            client.close()

    with command(["worker", "--pool", str(pool)], tmp_path, env) as process:
        wait_until(registered, process, f"{pool} worker(s) registered")
        stop_and_assert_nothing_left(process, signum)
    assert not redis_answers(redis_port)
