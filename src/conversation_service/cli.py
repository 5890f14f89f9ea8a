"""``conversation-service`` command line: serve, migrate, worker, dev."""

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from conversation_service.config.settings import ConversationSettings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="conversation-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")

    commands.add_parser("migrate", help="apply database migrations")

    worker = commands.add_parser("worker", help="run a background job worker")
    worker.add_argument("--pool", type=int, default=1, help="number of worker processes")

    commands.add_parser("dev", help="run the whole embedded stack (not yet available)")

    args = parser.parse_args(argv)
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
    # worker and dev arrive with the queue and launcher issues; say so instead of pretending.
    print(
        f"conversation-service {args.command}: not available in this release yet "
        "(the job queue and the dev launcher are still being built)",
        file=sys.stderr,
    )
    return 3


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
    embedded = start_embedded_redis() if settings.redis_url is None else None
    from conversation_service.observability import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_json)
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
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
