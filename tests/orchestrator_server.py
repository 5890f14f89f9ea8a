"""Run the reference orchestrator for real (uvicorn in a background thread) on a free port."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from conversation_orchestrator.app import create_app
from conversation_orchestrator.settings import OrchestratorSettings
from tests.live_server import free_port


@contextmanager
def run_orchestrator(
    settings: OrchestratorSettings | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """Start the orchestrator app on a free port; yields its base URL; stops it on exit."""
    port = free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings or OrchestratorSettings()),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the orchestrator did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
