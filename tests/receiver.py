"""A real local HTTP receiver for callbacks: verifies Standard Webhooks signatures.

It runs uvicorn in a background thread on 127.0.0.1 and records what it received. Its behaviour
is scripted per test: a list of status codes to answer in turn, a delay, or a redirect.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.live_server import free_port


@dataclass
class Received:
    """One request as the receiver saw it."""

    webhook_id: str
    event_type: str
    body: dict[str, Any]
    verified: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """The receiver's script and record."""

    secret: str
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 200
    delay: float = 0.0  # seconds before answering (a timeout when above the client's)
    redirect_to: str | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def verified_ids(self) -> list[str]:
        return [r.webhook_id for r in self.received if r.verified]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return self.received
            time.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.received)} requests, expected {count}")


def _app(state: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        raw = await request.body()
        headers = dict(request.headers.items())
        try:
            Webhook(state.secret).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        body = orjson.loads(raw)
        state.received.append(
            Received(headers.get("webhook-id", ""), body.get("type", ""), body, verified, headers)
        )
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.redirect_to:
            return RedirectResponse(state.redirect_to, status_code=307)
        if not verified:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        status = state.statuses.pop(0) if state.statuses else 200
        return JSONResponse({"ok": status < 300}, status_code=status)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@contextmanager
def run_receiver(secret: str, host: str = "127.0.0.1") -> Iterator[Receiver]:
    """Start a receiver on a free port; yields its state (``url`` is the hook URL)."""
    state = Receiver(secret=secret)
    port = free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(_app(state), host=host, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("receiver did not start")
        time.sleep(0.02)
    state.url = f"http://{host}:{port}/hook"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=5)
