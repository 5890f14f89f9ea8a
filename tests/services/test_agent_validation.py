"""Agent validation through the orchestrator: against the reference orchestrator running for
real, with the orchestrator down, and the cache, single flight and circuit breaker in isolation.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from conversation_service.config.settings import ConversationSettings
from conversation_service.errors import PROBLEM_BASE
from conversation_service.main import create_app
from conversation_service.services.agents import (
    AgentDirectory,
    AgentValidationUnavailableError,
    CircuitBreaker,
    CircuitState,
    UnknownAgentError,
)
from tests.conftest import Caller, make_settings
from tests.live_server import free_port
from tests.orchestrator_server import run_orchestrator


@pytest.fixture(scope="module")
def orchestrator_url() -> Iterator[str]:
    """The reference orchestrator, running for real on a free port."""
    with run_orchestrator() as url:
        yield url


@asynccontextmanager
async def service(
    settings: ConversationSettings, caller: Caller, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with ``overrides`` (lifespan running), as ``caller``."""
    app = create_app(make_settings(settings.database_url, settings.redis_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            yield client


async def create(client: httpx.AsyncClient, agent_id: str) -> httpx.Response:
    return await client.post("/api/v1/conversations", json={"agent_id": agent_id})


async def test_known_agent_is_accepted_and_unknown_or_retired_agents_answer_422(
    settings: ConversationSettings, caller: Caller, orchestrator_url: str
) -> None:
    async with service(settings, caller, orchestrator_url=orchestrator_url) as client:
        assert (await create(client, "demo-assistant")).status_code == 201
        unknown = await create(client, "no-such-agent")
        assert unknown.status_code == 422
        assert unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["type"] == PROBLEM_BASE + "unknown-agent"
        assert unknown.json()["agent_id"] == "no-such-agent"
        retired = await create(client, "retired-agent")
        assert retired.status_code == 422
        assert retired.json()["type"] == PROBLEM_BASE + "agent-not-usable"
        assert "retired" in retired.json()["detail"]


async def test_cached_answers_outlive_the_orchestrator_within_one_app(
    settings: ConversationSettings, caller: Caller
) -> None:
    app = create_app(
        make_settings(
            settings.database_url,
            settings.redis_url,
            orchestrator_url="http://placeholder",
            agent_validation_required=True,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            with run_orchestrator() as url:
                app.state.resources.agents.base_url = url
                assert (await create(client, "support-agent")).status_code == 201
                assert (await create(client, "ghost-agent")).status_code == 422
            # The orchestrator is down now: the answers of the last minute still hold.
            assert (await create(client, "support-agent")).status_code == 201
            assert (await create(client, "ghost-agent")).status_code == 422
            assert (await create(client, "demo-assistant")).status_code == 503


async def test_orchestrator_down_answers_503_when_validation_is_required(
    settings: ConversationSettings, caller: Caller
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with service(
        settings, caller, orchestrator_url=down, agent_validation_required=True
    ) as client:
        response = await create(client, "demo-assistant")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEM_BASE + "agent-validation-unavailable"
    assert int(response.headers["retry-after"]) >= 1


async def test_orchestrator_down_lets_conversations_through_when_not_required(
    settings: ConversationSettings, caller: Caller
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with service(
        settings, caller, orchestrator_url=down, agent_validation_required=False
    ) as client:
        assert (await create(client, "demo-assistant")).status_code == 201


async def test_without_an_orchestrator_url_nothing_is_validated(client: httpx.AsyncClient) -> None:
    assert (await create(client, "anything-goes")).status_code == 201


# -- the directory in isolation (the orchestrator replaced by a scripted transport) ------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def directory(
    handler: Callable[[httpx.Request], Any], clock: FakeClock, *, required: bool = True
) -> AgentDirectory:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AgentDirectory(
        client, "http://orchestrator", required=required, timeout=1.0, clock=clock
    )


async def test_circuit_opens_after_consecutive_failures_then_probes_once() -> None:
    calls: list[str] = []
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if not healthy:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"id": "a", "usable": True})

    clock = FakeClock()
    agents = directory(handler, clock)
    for _ in range(3):
        with pytest.raises(AgentValidationUnavailableError):
            await agents.ensure_usable("t", "a")
    assert len(calls) == 3
    assert agents.breaker.state is CircuitState.OPEN
    with pytest.raises(AgentValidationUnavailableError) as failed_fast:
        await agents.ensure_usable("t", "a")
    assert len(calls) == 3  # no call while open
    assert failed_fast.value.headers["Retry-After"] == "30"
    clock.now += 31
    with pytest.raises(AgentValidationUnavailableError):
        await agents.ensure_usable("t", "a")  # the probe fails: open again
    assert len(calls) == 4
    assert agents.breaker.state is CircuitState.OPEN
    clock.now += 31
    healthy = True
    await agents.ensure_usable("t", "a")
    assert agents.breaker.state is CircuitState.CLOSED
    await agents.client.aclose()


async def test_concurrent_lookups_of_one_agent_share_one_request() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return httpx.Response(404)

    agents = directory(handler, FakeClock())
    results = await asyncio.gather(
        *(agents.ensure_usable("t", "ghost") for _ in range(5)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(result, UnknownAgentError) for result in results)
    await agents.client.aclose()


async def test_an_expired_answer_is_used_while_the_orchestrator_fails() -> None:
    up = True

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            return httpx.Response(502)
        return httpx.Response(200, json={"id": "a"})

    clock = FakeClock()
    agents = directory(handler, clock)
    await agents.ensure_usable("t", "a")
    up = False
    clock.now += 120  # past the minute: asked again, fails, the stale answer stands
    await agents.ensure_usable("t", "a")
    clock.now += 3600  # too old to stand in for an answer
    with pytest.raises(AgentValidationUnavailableError):
        await agents.ensure_usable("t", "a")
    await agents.client.aclose()


def test_half_open_breaker_lets_exactly_one_caller_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=10, clock=clock)
    breaker.record_failure()
    assert not breaker.allow()
    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.allow()
