"""``conversation-service`` command line: serve, migrate, worker, dev, orchestrator, api-keys."""

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from conversation_service.config.constants import EMBEDDED_REDIS_PORT
from conversation_service.config.settings import ConversationSettings, Environment


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="conversation-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")

    commands.add_parser("migrate", help="apply database migrations")

    worker = commands.add_parser("worker", help="run background job workers (RQ)")
    worker.add_argument("--pool", type=int, default=1, help="number of worker processes")
    worker.add_argument(
        "--queues",
        default="high,default,low",
        help="comma-separated queues to serve, always taken in priority order (default: all)",
    )
    worker.add_argument(
        "--reserve-high",
        type=int,
        default=None,
        metavar="N",
        help="processes of the pool that serve only high, so urgent work never waits behind "
        "a running low job (default: 1 with --pool 2 or more, else 0)",
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument(
        "--fork",
        action="store_true",
        help="run each job in a forked work horse (isolation; ~3x the per-job overhead)",
    )

    dev = commands.add_parser(
        "dev", help="run the whole stack here: Valkey, migrations, API, worker, orchestrator"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000, help="the API's port")
    dev.add_argument("--orchestrator-port", type=int, default=8001)
    dev.add_argument(
        "--redis-port", type=int, default=EMBEDDED_REDIS_PORT, help="the embedded Valkey's port"
    )
    dev.add_argument(
        "--data-dir", type=Path, default=Path(".data"), help="SQLite, Valkey data and logs"
    )
    dev.add_argument("--quiet", action="store_true", help="do not echo the children's logs")

    orchestrator = commands.add_parser(
        "orchestrator", help="run the reference orchestrator (demo agents; ORCHESTRATOR_* env)"
    )
    orchestrator.add_argument("--host", default="127.0.0.1")
    orchestrator.add_argument("--port", type=int, default=8001)

    keys = commands.add_parser("api-keys", help="API keys of the OpenAI-compatible API")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    create_key = key_commands.add_parser("create", help="issue a key (printed once, to stdout)")
    create_key.add_argument("--tenant", required=True)
    create_key.add_argument("--user", required=True)
    create_key.add_argument("--name", default=None, help="a label for operators")
    revoke_key = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke_key.add_argument("id")

    args = parser.parse_args(argv)
    if args.command == "orchestrator":
        # A separate program that only shares the distribution: it reads ORCHESTRATOR_* only.
        from conversation_orchestrator.server import serve as serve_orchestrator

        return serve_orchestrator(args.host, args.port)
    try:
        settings = ConversationSettings()
    except ValidationError as exc:
        # Only the messages: the default rendering repeats the input, secrets included.
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        reasons = "; ".join(str(err["msg"]) for err in errors)
        print(f"conversation-service: configuration error: {reasons}", file=sys.stderr)
        return 2

    if args.command == "migrate":
        from conversation_service.db.migrate import upgrade

        upgrade(settings)
        print("database is at the newest schema")
        return 0
    if args.command == "serve":
        return _serve(settings, args.host, args.port, args.workers)
    if args.command == "api-keys":
        return _api_keys(settings, args)
    if args.command == "worker":
        return _worker(settings, args)
    return _dev(settings, args)


def _dev(settings: ConversationSettings, args: argparse.Namespace) -> int:
    from conversation_service.devstack import DevOptions, run_dev

    if settings.environment is Environment.PRODUCTION:
        print(
            "conversation-service dev: refusing to run a development stack with "
            "CONVERSATION_ENVIRONMENT=production",
            file=sys.stderr,
        )
        return 2
    options = DevOptions(
        host=args.host,
        port=args.port,
        orchestrator_port=args.orchestrator_port,
        redis_port=args.redis_port,
        data_dir=args.data_dir,
        echo_logs=not args.quiet,
    )
    return run_dev(options, settings)


def _api_keys(settings: ConversationSettings, args: argparse.Namespace) -> int:
    """``api-keys create`` prints the key alone on stdout (for scripts); details go to stderr."""
    import uuid

    from conversation_service.db.engine import DatabaseNotMigratedError, assert_migrated
    from conversation_service.db.engine import create_engine as create_db_engine
    from conversation_service.errors import NotFoundError
    from conversation_service.models.api_key import ApiKeyCreate
    from conversation_service.services import api_keys

    try:
        if args.key_command == "create":
            request = ApiKeyCreate(tenant=args.tenant, user=args.user, name=args.name)
        else:
            key_id = uuid.UUID(args.id)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        reasons = "; ".join(f"--{err['loc'][0]}: {err['msg']}" for err in errors)
        print(f"conversation-service api-keys: {reasons}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"conversation-service api-keys: {args.id!r} is not a key id", file=sys.stderr)
        return 2

    async def run() -> None:
        engine = create_db_engine(settings, null_pool=True)
        try:
            await assert_migrated(engine)
            async with engine.begin() as conn:
                if args.key_command == "revoke":
                    await api_keys.revoke_api_key(conn, key_id)
                    print(f"revoked API key {key_id}", file=sys.stderr)
                    return
                issued = await api_keys.create_api_key(
                    conn, tenant_id=request.tenant, user_id=request.user, name=request.name
                )
            print(issued.key)
            print(
                f"issued API key {issued.id} ({issued.prefix}...) for tenant {issued.tenant_id}, "
                f"user {issued.user_id}; it is shown only this once",
                file=sys.stderr,
            )
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except DatabaseNotMigratedError as exc:
        print(f"conversation-service api-keys: {exc}", file=sys.stderr)
        return 2
    except NotFoundError as exc:
        print(f"conversation-service api-keys: {exc.detail}", file=sys.stderr)
        return 1
    return 0


class _Terminated(BaseException):
    """SIGTERM, as an exception, so that every ``finally`` runs before the process ends."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Inside: SIGTERM unwinds the stack, then ends the process as SIGTERM would have.

    uvicorn handles SIGTERM itself while it serves: it shuts down gracefully, puts back the
    handler it found and raises the signal again, so that the process still ends by it. With the
    default handler the process died right there, before ``_serve``'s ``finally`` stopped the
    embedded Valkey, which then outlived it on its port. With this handler that second SIGTERM
    (or one before uvicorn started) raises instead; once the ``finally`` blocks have run, the
    default disposition is restored and the signal raised again, so a process manager still sees
    a process terminated by SIGTERM.
    """

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        raise  # not reached: the default disposition ends the process
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(settings: ConversationSettings, host: str, port: int, workers: int) -> int:
    import uvicorn

    from conversation_service.db.engine import (
        DatabaseNotMigratedError,
        assert_migrated,
        create_engine,
    )
    from conversation_service.embedded import start_embedded_redis

    async def check() -> None:
        engine = create_engine(settings, null_pool=True)
        try:
            await assert_migrated(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except DatabaseNotMigratedError as exc:
        print(f"conversation-service serve: {exc}", file=sys.stderr)
        return 2
    from conversation_service.observability import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_json)
    with _sigterm_unwinds():
        embedded = (
            start_embedded_redis(port=settings.embedded_redis_port)
            if settings.redis_url is None
            else None
        )
        try:
            uvicorn.run(
                "conversation_service.main:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                loop="uvloop",
                http="httptools",
                access_log=False,
                log_config=None,
                proxy_headers=True,
                # Open SSE streams would otherwise hold a graceful shutdown forever; WebSockets
                # are closed with 1012 and resume on another replica.
                timeout_graceful_shutdown=5,
                # Compression runs per connection during fan-out: off, as the floors assume.
                ws_per_message_deflate=False,
            )
        finally:
            if embedded is not None:
                embedded.stop()
    return 0


def _worker(settings: ConversationSettings, args: argparse.Namespace) -> int:
    from redis import Redis
    from rq import Worker

    from conversation_service.embedded import start_embedded_redis
    from conversation_service.observability import configure_logging
    from conversation_service.queue.names import drain_legacy_queues, queue_name, queue_names
    from conversation_service.queue.worker import (
        HIGH,
        JobWorker,
        listening_order,
        run_pool,
        run_worker,
    )

    pool: int = args.pool
    try:
        # Listening order is priority: a worker always takes from high before default before low.
        queues = listening_order(name.strip() for name in args.queues.split(",") if name.strip())
    except ValueError as exc:
        print(f"conversation-service worker: --queues: {exc}", file=sys.stderr)
        return 2
    reserve = args.reserve_high
    if reserve is None:
        reserve = 1 if pool >= 2 and HIGH in queues and len(queues) > 1 else 0
    if pool < 1 or not 0 <= reserve < pool or (reserve and HIGH not in queues):
        print(
            "conversation-service worker: --pool must be at least 1 and --reserve-high must "
            "leave at least one process for every queue (and needs high among --queues)",
            file=sys.stderr,
        )
        return 2

    configure_logging(settings.log_level, json_lines=settings.log_json)
    # Models and tokenizers load once here, not in every job (forked horses inherit them).
    from conversation_service.analysis import warm_up
    from conversation_service.utils.memory_utils import preload_encoders

    warm_up()
    preload_encoders()
    embedded = (
        start_embedded_redis(port=settings.embedded_redis_port)
        if settings.redis_url is None
        else None
    )
    # RQ's Redis: CONVERSATION_QUEUE_REDIS_URL (required in cluster mode).
    url = settings.effective_queue_redis_url()
    # --fork: plain RQ work horses, each job on a fresh loop with resources of its own.
    worker_class = Worker if args.fork else JobWorker
    prefix = settings.queue_prefix
    names = queue_names(prefix, queues)
    try:
        with Redis.from_url(url) as redis:
            # Jobs an earlier release left on the unprefixed queues (README, "Queue names").
            drain_legacy_queues(redis, prefix)
        if pool > 1:
            run_pool(
                url,
                names,
                processes=pool,
                reserve_high=reserve,
                burst=args.burst,
                worker_class=worker_class,
                high=queue_name(prefix, HIGH),
            )
        else:
            run_worker(worker_class(names, connection=Redis.from_url(url)), burst=args.burst)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
