"""The reference orchestrator's HTTP app: the callback receiver, the agent directory, health.

``POST /callbacks`` verifies the Standard Webhooks signature, drops repeated ``webhook-id``\\ s,
answers ``202`` at once and runs the turn in the background (the service's delivery has a short
timeout, and a reply takes seconds to stream): a user's ``message.created``, or
``message.regenerate_requested`` (the new reply becomes a sibling of the earlier one).
``GET /agents/{agent_id}`` answers the service's agent validation: ``200`` with ``usable`` for a
known agent, ``404`` for an unknown one. A turn whose reply hands over (``demo-assistant`` asked
for support) calls the service's handoff and lets the next agent greet the user from the context
it reads then.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook, WebhookVerificationError

from conversation_orchestrator.agent import (
    DEMO_AGENTS,
    MODEL_NAME,
    AgentCard,
    Reply,
    build_turn,
    compose_reply,
    greet_after_handoff,
    tokens,
)
from conversation_orchestrator.client import ServiceClient
from conversation_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("conversation_orchestrator")

SEEN_WEBHOOK_IDS: Final = 10_000
DEFAULT_AGENT: Final = "demo-assistant"


@dataclass
class Stats:
    """Counters shown by ``GET /health`` (handy in tests and when watching the demo)."""

    callbacks: int = 0
    duplicates: int = 0
    rejected: int = 0
    replies_started: int = 0
    replies_completed: int = 0
    replies_failed: int = 0


@dataclass
class _Streaming:
    """The reply being streamed now, if any (failed if the turn breaks off)."""

    message_id: str | None = None


class ReplyRunner:
    """Runs turns in background tasks; remembers recent webhook ids to drop repeats."""

    def __init__(self, service: ServiceClient, settings: OrchestratorSettings) -> None:
        self.service = service
        self.settings = settings
        self.stats = Stats()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random()

    def first_delivery(self, webhook_id: str) -> bool:
        """True the first time a ``webhook-id`` is seen (within the last 10,000)."""
        if webhook_id in self._seen:
            self._seen.move_to_end(webhook_id)
            return False
        self._seen[webhook_id] = None
        if len(self._seen) > SEEN_WEBHOOK_IDS:
            self._seen.popitem(last=False)
        return True

    def start(self, conversation_id: str, message: Mapping[str, Any]) -> None:
        """Answer ``message`` in the background."""
        self.stats.replies_started += 1
        task = asyncio.create_task(self.respond(conversation_id, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pause(self) -> float:
        low, high = self.settings.token_delay_min_ms, self.settings.token_delay_max_ms
        return self._random.uniform(low, high) / 1000

    async def respond(self, conversation_id: str, message: Mapping[str, Any]) -> None:
        """One turn: read the context, compose the reply, stream it, complete it; when the
        reply hands over, the next agent reads the context again and greets the user."""
        started = time.perf_counter()
        streaming = _Streaming()
        try:
            async with asyncio.timeout(self.settings.reply_timeout_seconds):
                conversation = await self.service.conversation(conversation_id)
                agent = DEMO_AGENTS.get(conversation["agent_id"]) or DEMO_AGENTS[DEFAULT_AGENT]
                # The path to the message answered: a regenerated reply, or a reply to a message
                # the user has since branched away from, sees that message's history.
                context = await self.service.context(conversation_id, leaf=str(message["id"]))
                reply = compose_reply(build_turn(context, message), agent)
                if reply.learned_name:
                    # Durable memory: the window and the summary may lose it, this does not.
                    await self.service.patch_tracked_context(
                        conversation_id,
                        {"entities": {"user_name": reply.learned_name}, "active_agent": agent.id},
                    )
                replied = await self._stream(
                    conversation_id, str(message["id"]), agent, reply, started, streaming
                )
                if reply.handoff_to is not None:
                    replied = await self._hand_over(
                        conversation_id, message, agent, reply, streaming
                    )
            self.stats.replies_completed += 1
            log.info(
                "reply completed",
                extra={"conversation_id": conversation_id, "message_id": replied},
            )
        except asyncio.CancelledError:
            self.stats.replies_failed += 1
            await self._fail(conversation_id, streaming.message_id, "the orchestrator stopped")
            raise
        except Exception as exc:
            self.stats.replies_failed += 1
            log.exception("reply failed", extra={"conversation_id": conversation_id})
            await self._fail(conversation_id, streaming.message_id, f"{type(exc).__name__}: {exc}")

    async def _stream(
        self,
        conversation_id: str,
        parent_id: str,
        agent: AgentCard,
        reply: Reply,
        started: float,
        streaming: _Streaming,
    ) -> str:
        """Create the reply (its author: the conversation's current agent), stream it token by
        token and complete it; ``streaming`` names it while it is open, so a failure fails it."""
        created = await self.service.create_message(
            conversation_id,
            parent_id=parent_id,
            metadata=_reply_metadata(agent, reply.language, reply.used),
        )
        streaming.message_id = str(created["id"])
        chunks = tokens(reply.text)
        for index, chunk in enumerate(chunks):
            await asyncio.sleep(self._pause())
            await self.service.deltas(conversation_id, streaming.message_id, [(index, chunk)])
        latency_ms = round((time.perf_counter() - started) * 1000)
        await self.service.complete(
            conversation_id,
            streaming.message_id,
            metadata={"latency_ms": latency_ms, "chunks": len(chunks)},
        )
        replied, streaming.message_id = streaming.message_id, None
        return replied

    async def _hand_over(
        self,
        conversation_id: str,
        message: Mapping[str, Any],
        agent: AgentCard,
        reply: Reply,
        streaming: _Streaming,
    ) -> str:
        """Hand the conversation to ``reply.handoff_to``; that agent reads the context (now with
        the handoff in it) and greets the user by name."""
        target = DEMO_AGENTS[str(reply.handoff_to)]
        handoff = await self.service.handoff(
            conversation_id,
            target.id,
            from_agent_id=agent.id,
            reason="the user asked for support",
            context={"requested_by_message": str(message["id"]), "language": reply.language},
        )
        started = time.perf_counter()
        context = await self.service.context(conversation_id)
        greeting = greet_after_handoff(build_turn(context, message), target, agent)
        parent_id = str(handoff["message"]["id"])  # the handoff line comes before the greeting
        return await self._stream(conversation_id, parent_id, target, greeting, started, streaming)

    async def _fail(self, conversation_id: str, message_id: str | None, error: str) -> None:
        if message_id is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.service.fail(conversation_id, message_id, error), 2.0)

    async def shutdown(self) -> None:
        """Cancel the turns in flight (each marks its message failed) and wait briefly."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3.0)


def _reply_metadata(agent: AgentCard, language: str, used: tuple[str, ...]) -> dict[str, Any]:
    return {"agent_id": agent.id, "model": MODEL_NAME, "language": language, "used": list(used)}


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    """Build the orchestrator app; its HTTP client to the service lives in the lifespan."""
    settings = settings or OrchestratorSettings()
    verifier = Webhook(settings.webhook_secret.get_secret_value())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ServiceClient.connect(
            settings.service_url,
            settings.service_key.get_secret_value(),
            settings.request_timeout_seconds,
        )
        runner = ReplyRunner(service, settings)
        app.state.runner = runner
        try:
            yield
        finally:
            await runner.shutdown()
            await service.aclose()

    app = FastAPI(
        title="Reference Agent Orchestrator",
        version="1",
        description=(
            "Receives the Conversation Service's signed callbacks, answers with a demo agent "
            "streamed through the internal API, and serves the agent directory."
        ),
        lifespan=lifespan,
    )

    def runner_of(request: Request) -> ReplyRunner:
        runner: ReplyRunner = request.app.state.runner
        return runner

    @app.post("/callbacks", status_code=202)
    async def callbacks(request: Request) -> JSONResponse:
        """Signed callbacks from the service; ``message.created`` from a user, and
        ``message.regenerate_requested`` (a new reply to a user message, a sibling of the old
        one), start a turn."""
        runner = runner_of(request)
        raw = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            verifier.verify(raw, headers)
        except WebhookVerificationError as exc:
            runner.stats.rejected += 1
            return JSONResponse({"detail": f"invalid signature: {exc}"}, status_code=401)
        runner.stats.callbacks += 1
        if not runner.first_delivery(headers["webhook-id"]):
            runner.stats.duplicates += 1
            return JSONResponse({"status": "duplicate"}, status_code=200)
        event = orjson.loads(raw)
        data = event.get("data") or {}
        message = data.get("message") or {}
        answered = ("message.created", "message.regenerate_requested")
        if event.get("type") not in answered or message.get("role") != "user":
            return JSONResponse({"status": "ignored", "type": event.get("type")}, status_code=200)
        runner.start(str(data["conversation_id"]), message)
        return JSONResponse({"status": "accepted"}, status_code=202)

    @app.get("/agents")
    async def list_agents() -> dict[str, Any]:
        """The demo agents."""
        return {"data": [card.as_json() for card in DEMO_AGENTS.values()]}

    @app.get("/agents/{agent_id}")
    async def get_agent(agent_id: str) -> JSONResponse:
        """One agent (``usable`` says whether it may take conversations), or 404."""
        card = DEMO_AGENTS.get(agent_id)
        if card is None:
            return JSONResponse({"detail": f"unknown agent {agent_id!r}"}, status_code=404)
        return JSONResponse(card.as_json())

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Up, and what it has done so far."""
        stats = runner_of(request).stats
        return {"status": "ok", "stats": asdict(stats)}

    return app
