"""Liveness, readiness naming the failing part, and Prometheus metrics."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from conversation_service.config.settings import ConversationSettings
from conversation_service.main import create_app
from tests.conftest import INTERNAL_KEY, Caller, make_settings


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "rate_limiter": "ok"},
    }


@pytest.fixture
async def app_without_redis(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    # Port 1 on loopback refuses connections: an unreachable Redis.
    broken = make_settings(settings.database_url, "redis://127.0.0.1:1/0")
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        yield app


async def test_ready_is_503_naming_redis_when_it_is_down(app_without_redis: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app_without_redis)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unavailable")
    assert body["checks"]["rate_limiter"] == "degraded (fail-open)"
    assert "redis" in body["detail"]


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/conversations")
    await client.get("/api/v1/conversations/00000000-0000-0000-0000-000000000000")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/api/v1/conversations",status="200"}' in text
    assert 'route="/api/v1/conversations/{conversation_id}",status="404"' in text, (
        "route label must be the template, not the raw path"
    )
    assert "http_request_duration_seconds_bucket" in text


async def test_metrics_label_openai_compatible_routes_with_their_prefix(
    anon: httpx.AsyncClient, caller: Caller
) -> None:
    issued = await anon.post(
        "/internal/v1/api-keys",
        json={"tenant": caller.tenant, "user": caller.user},
        headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
    )
    assert issued.status_code == 201, issued.text
    key = {"Authorization": f"Bearer {issued.json()['key']}"}
    created = await anon.post("/v1/conversations", json={}, headers=key)
    assert created.status_code == 200, created.text
    await anon.get(f"/v1/conversations/{created.json()['id']}/items", headers=key)
    text = (await anon.get("/metrics")).text
    assert 'http_requests_total{method="POST",route="/v1/conversations",status="200"}' in text
    assert 'route="/v1/conversations/{conversation_id}/items",status="200"' in text
    assert 'route="/conversations' not in text


async def test_metrics_keep_counting_the_same_label_set(client: httpx.AsyncClient) -> None:
    series = (
        'http_requests_total{method="GET",route="/health/live",status="200"}',
        'http_request_duration_seconds_count{method="GET",route="/health/live"}',
    )

    async def counts() -> list[float]:
        text = (await client.get("/metrics")).text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(series))
        return [float(values.get(name, 0)) for name in series]

    before = await counts()
    for _ in range(3):
        await client.get("/health/live")
    assert await counts() == [count + 3 for count in before]


async def test_metrics_say_which_dependency_is_down(app_without_redis: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app_without_redis)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, "a scrape answers while Redis is down"
    assert 'conversation_dependency_up{dependency="redis"} 0.0' in response.text
    assert 'conversation_dependency_up{dependency="database"} 1.0' in response.text
