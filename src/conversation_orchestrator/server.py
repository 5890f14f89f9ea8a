"""``conversation-service orchestrator``: run the reference orchestrator with uvicorn."""

import logging
import sys

from pydantic import ValidationError

from conversation_orchestrator.settings import OrchestratorSettings


def serve(host: str, port: int, *, log_level: str = "INFO") -> int:
    """Run the orchestrator on ``host:port`` until SIGINT/SIGTERM; returns the exit status."""
    import uvicorn

    from conversation_orchestrator.app import create_app

    try:
        settings = OrchestratorSettings()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        reasons = "; ".join(str(err["msg"]) for err in errors)
        print(f"orchestrator: configuration error: {reasons}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=log_level.upper(), format="%(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
    )
    return 0
