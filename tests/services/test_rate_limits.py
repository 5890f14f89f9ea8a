"""Rate limits and quotas: per user, per tenant, per message append, per service key and per open
WebSocket, kept in Redis, answered with 429 and the IETF headers, failing open without Redis.

Every test runs an app of its own with limits low enough to reach in a few requests, over an hour
so no window can roll over mid-test. Counters are keyed by hashed ids of fresh users, tenants and
service keys, so no two tests (or test runs sharing a Redis) count against each other.
"""

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from limits import parse
from limits.aio.strategies import FixedWindowRateLimiter
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import func, select
from websockets.exceptions import ConnectionClosed

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import messages_table
from conversation_service.main import create_app
from conversation_service.services.auth import Principal
from conversation_service.services.rate_limits import (
    CLOSE_TOO_MANY_CONNECTIONS,
    DEGRADED,
    RETRY_SECONDS,
    RateLimitedError,
    RateLimiter,
    RateLimitMetrics,
)
from conversation_service.utils.redis_client import async_redis
from tests.conftest import INTERNAL_KEY, Caller, create_conversation, make_settings, new_caller

# Leaves no pending jobs behind for the queue tests' workers.
from tests.security.conftest import no_leftover_jobs as no_leftover_jobs
from tests.websocket.helpers import serve, wait_until, ws_client


@asynccontextmanager
async def limited_app(settings: ConversationSettings, **limits: Any) -> AsyncIterator[FastAPI]:
    """An app on the session's database and Redis with the given rate-limit settings."""
    # A generous check timeout: on a busy machine a 0.5 s check can fail open and let through
    # the request a test expects refused. Fail-open tests use a dead Redis: no slower for it.
    values = {
        "redis_url": settings.effective_redis_url(),
        "redis_mode": settings.redis_mode,
        "queue_redis_url": settings.queue_redis_url,
        "rate_limit_check_timeout": 5.0,
        **limits,
    }
    app = create_app(make_settings(settings.database_url, **values))
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def http(
    app: FastAPI, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers or {}
    ) as client:
        yield client


def assert_429(response: httpx.Response, scope: str, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/rate-limited")
    assert body["limit_scope"] == scope
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= 3600
    assert response.headers["ratelimit-policy"] == f"{limit};w=3600"


async def test_a_user_over_the_request_limit_gets_429_and_other_users_do_not(
    settings: ConversationSettings,
) -> None:
    alice, bob = new_caller(), new_caller()
    async with limited_app(settings, rate_limit_requests="3/hour") as app, http(app) as client:
        for _ in range(3):
            ok = await client.get("/api/v1/conversations", headers=alice.headers)
            assert ok.status_code == 200
        assert_429(await client.get("/api/v1/conversations", headers=alice.headers), "requests", 3)
        # Every public route counts, not only the one that was hammered.
        assert_429(
            await client.post(
                "/api/v1/conversations", json={"agent_id": "a"}, headers=alice.headers
            ),
            "requests",
            3,
        )
        assert (await client.get("/api/v1/conversations", headers=bob.headers)).status_code == 200
        # Liveness, readiness and metrics are never limited.
        assert (await client.get("/health/ready")).status_code == 200
        # Operators see the refusals by scope.
        metrics = (await client.get("/metrics")).text
        assert 'rate_limit_rejections_total{scope="requests"} 2.0' in metrics


async def test_the_tenant_quota_counts_every_user_of_the_tenant(
    settings: ConversationSettings,
) -> None:
    ana = new_caller()
    ben = new_caller(ana.tenant)
    outsider = new_caller()
    async with limited_app(settings, rate_limit_tenant="4/hour") as app, http(app) as client:
        for caller in (ana, ben, ana, ben):
            assert (await client.get("/api/v1/conversations", headers=caller.headers)).is_success
        assert_429(await client.get("/api/v1/conversations", headers=ben.headers), "tenant", 4)
        other = await client.get("/api/v1/conversations", headers=outsider.headers)
        assert other.status_code == 200


async def test_message_appends_have_their_own_limit_and_a_refused_one_writes_nothing(
    settings: ConversationSettings,
) -> None:
    caller = new_caller()
    async with (
        limited_app(settings, rate_limit_messages="2/hour") as app,
        http(app, caller.headers) as client,
    ):
        cid = (await create_conversation(client))["id"]
        url = f"/api/v1/conversations/{cid}/messages"
        for i in range(2):
            assert (await client.post(url, json={"content": f"m{i}"})).status_code == 201
        assert_429(await client.post(url, json={"content": "one too many"}), "messages", 2)
        # Reads and other writes are not appends.
        assert (await client.get(url)).status_code == 200
        assert (await client.patch(f"/api/v1/conversations/{cid}", json={"title": "t"})).is_success
        async with app.state.resources.engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).where(messages_table.c.conversation_id == uuid.UUID(cid))
            )
    assert stored == 2


async def test_openai_compatible_items_count_as_appends_and_answer_in_openai_shape(
    settings: ConversationSettings,
) -> None:
    caller = new_caller()
    service = {"Authorization": f"Bearer {INTERNAL_KEY}"}
    async with limited_app(settings, rate_limit_messages="1/hour") as app, http(app) as client:
        issued = await client.post(
            "/internal/v1/api-keys",
            json={"tenant": caller.tenant, "user": caller.user},
            headers=service,
        )
        assert issued.status_code == 201, issued.text
        key = {"Authorization": f"Bearer {issued.json()['key']}"}
        conversation = (await client.post("/v1/conversations", json={}, headers=key)).json()
        items = f"/v1/conversations/{conversation['id']}/items"
        body = {"items": [{"type": "message", "role": "user", "content": "hi"}]}
        assert (await client.post(items, json=body, headers=key)).status_code == 200
        refused = await client.post(items, json=body, headers=key)
        # The public API and the OpenAI-compatible one share the user's message quota.
        cid = uuid.UUID(conversation["id"].removeprefix("conv_"))
        public = await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "x"}, headers=caller.headers
        )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "1"
    assert_429(public, "messages", 1)


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter"])
async def test_openai_compatible_items_count_one_append_each_like_the_public_api(
    settings: ConversationSettings, strategy: str
) -> None:
    caller, batcher = new_caller(), new_caller()
    service = {"Authorization": f"Bearer {INTERNAL_KEY}"}

    def item(text: str) -> dict[str, Any]:
        return {"type": "message", "role": "user", "content": text}

    async with (
        limited_app(settings, rate_limit_messages="3/hour", rate_limit_strategy=strategy) as app,
        http(app) as client,
    ):
        keys = []
        for who in (caller, batcher):
            issued = await client.post(
                "/internal/v1/api-keys",
                json={"tenant": who.tenant, "user": who.user},
                headers=service,
            )
            assert issued.status_code == 201, issued.text
            keys.append({"Authorization": f"Bearer {issued.json()['key']}"})
        # Two items given at creation and one added: three appends, the whole quota.
        created = await client.post(
            "/v1/conversations", json={"items": [item("a"), item("b")]}, headers=keys[0]
        )
        assert created.status_code == 200, created.text
        items = f"/v1/conversations/{created.json()['id']}/items"
        assert (await client.post(items, json={"items": [item("c")]}, headers=keys[0])).is_success
        refused = await client.post(items, json={"items": [item("d")]}, headers=keys[0])
        assert refused.status_code == 429, refused.text
        # One request of four items is four appends: over the quota, refused whole.
        other = (await client.post("/v1/conversations", json={}, headers=keys[1])).json()["id"]
        batch = [item(str(n)) for n in range(4)]
        too_many = await client.post(
            f"/v1/conversations/{other}/items", json={"items": batch}, headers=keys[1]
        )
        assert too_many.status_code == 429, too_many.text
        async with app.state.resources.engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).where(
                    messages_table.c.conversation_id == uuid.UUID(other.removeprefix("conv_"))
                )
            )
    assert stored == 0


async def test_internal_calls_have_their_own_higher_limit_per_service_key(
    settings: ConversationSettings, caller: Caller
) -> None:
    mine, other = f"key-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    async with (
        limited_app(
            settings,
            internal_api_keys=f"{mine},{other}",
            rate_limit_internal="2/hour",
            rate_limit_requests="1/hour",
        ) as app,
        http(app) as client,
    ):
        cid = (
            await client.post(
                "/api/v1/conversations", json={"agent_id": "a"}, headers=caller.headers
            )
        ).json()["id"]
        url = f"/internal/v1/conversations/{cid}"
        for _ in range(2):
            ok = await client.get(url, headers={"Authorization": f"Bearer {mine}"})
            assert ok.status_code == 200
        refused = await client.get(url, headers={"Authorization": f"Bearer {mine}"})
        assert refused.status_code == 429
        assert refused.json()["limit_scope"] == "internal"
        # The user's own quota (1/hour, spent above) does not apply to the orchestrator, and each
        # service key has its own.
        assert (await client.get(url, headers={"Authorization": f"Bearer {other}"})).is_success


async def test_refused_credentials_spend_no_quota(settings: ConversationSettings) -> None:
    caller = new_caller()
    forged = Caller(caller.tenant, caller.user)
    async with limited_app(settings, rate_limit_requests="2/hour") as app, http(app) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer a.b.c"}):
            for _ in range(3):
                response = await client.get("/api/v1/conversations", headers=headers)
                assert response.status_code == 401
        for _ in range(2):
            assert (await client.get("/api/v1/conversations", headers=forged.headers)).is_success


async def test_sliding_window_counter_strategy_enforces_the_same_limits(
    settings: ConversationSettings, caller: Caller
) -> None:
    async with (
        limited_app(
            settings, rate_limit_requests="2/hour", rate_limit_strategy="sliding-window-counter"
        ) as app,
        http(app, caller.headers) as client,
    ):
        for _ in range(2):
            assert (await client.get("/api/v1/conversations")).status_code == 200
        refused = await client.get("/api/v1/conversations")
    assert_429(refused, "requests", 2)


@asynccontextmanager
async def limiter_redis(
    settings: ConversationSettings, **limits: str
) -> AsyncIterator[tuple[ConversationSettings, Redis]]:
    """Settings with ``limits`` and a client of their Redis, for limiters built by the test."""
    limited = make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        redis_mode=settings.redis_mode,
        queue_redis_url=settings.queue_redis_url,
        **limits,
    )
    redis = async_redis(limited.effective_redis_url(), cluster=limited.redis_cluster)
    try:
        yield limited, redis
    finally:
        await redis.aclose()


async def test_batched_counters_are_the_limits_package_own(
    settings: ConversationSettings,
) -> None:
    """The fixed-window fast path writes the keys ``limits`` reads: its stats agree."""
    async with limiter_redis(settings, rate_limit_requests="10/hour") as (limited, redis):
        limiter = RateLimiter(limited, redis)
        principal = Principal(tenant_id=f"t-{uuid.uuid4().hex}", user_id="u")
        for _ in range(3):
            await limiter.check_user(principal)
        reader = FixedWindowRateLimiter(limiter.storage)
        user = hashlib.blake2b(
            f"{principal.tenant_id}\x1f{principal.user_id}".encode(), digest_size=12
        ).hexdigest()
        stats = await reader.get_window_stats(parse("10/hour"), "u", "{" + user + "}")
        assert stats.remaining == 7
        await limiter.forget(principal)
        assert (
            await reader.get_window_stats(parse("10/hour"), "u", "{" + user + "}")
        ).remaining == 10
        # Keys are pseudonymous: neither the tenant nor the user id is stored in clear.
        keys = [key.decode() async for key in redis.scan_iter(match="cs:rl:*", count=1000)]
        assert keys
        assert not [key for key in keys if principal.tenant_id in key]


async def test_websocket_connections_are_limited_per_user(settings: ConversationSettings) -> None:
    caller, other = new_caller(), new_caller()
    async with (
        limited_app(settings, rate_limit_ws_connections=2) as app,
        serve(app) as base_url,
        ws_client(base_url, caller.token) as first,
        ws_client(base_url, caller.token) as second,
        ws_client(base_url, other.token) as someone_else,
    ):
        for client in (first, second, someone_else):
            await client.send({"type": "ping", "data": 1})
            assert (await client.recv())["type"] == "pong"
        async with ws_client(base_url, caller.token) as third:
            with pytest.raises(ConnectionClosed) as closed:
                await third.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOO_MANY_CONNECTIONS
        await second.connection.close()

        async def admitted() -> bool:
            async with ws_client(base_url, caller.token) as again:
                await again.send({"type": "ping", "data": 2})
                try:
                    return (await again.recv())["type"] == "pong"
                except ConnectionClosed:
                    return False

        # The lease is released when the server sees the close; poll until it has.
        await wait_until(admitted)


async def test_the_limiter_fails_open_when_redis_is_unreachable(
    settings: ConversationSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caller = new_caller()
    caplog.set_level(logging.WARNING, logger="conversation_service.services.rate_limits")
    async with (
        # Port 1 on loopback refuses connections: an unreachable Redis.
        limited_app(
            settings,
            redis_url="redis://127.0.0.1:1/0",
            rate_limit_requests="1/hour",
            rate_limit_messages="1/hour",
        ) as app,
        http(app, caller.headers) as client,
    ):
        cid = (await create_conversation(client))["id"]
        for i in range(3):
            posted = await client.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"}
            )
            assert posted.status_code == 201
        ready = await client.get("/health/ready")
    assert ready.status_code == 503  # Redis is down: not ready, but the API still answers
    assert ready.json()["checks"]["rate_limiter"] == DEGRADED
    warnings = [r for r in caplog.records if "fail-open" in r.getMessage()]
    assert len(warnings) == 1, "the outage is logged once, not once per request"


def test_limits_must_be_in_the_limits_notation() -> None:
    for bad in ("lots", "0/minute", "60 per fortnight", ""):
        with pytest.raises(ValidationError):
            make_settings("sqlite+aiosqlite:///x.db", "redis://x", rate_limit_requests=bad)
    good = make_settings(
        "sqlite+aiosqlite:///x.db", "redis://x", rate_limit_messages="10/second;600/hour"
    )
    assert good.rate_limit_messages == "10/second;600/hour"


def test_the_openapi_document_lists_429_on_limited_routes(settings: ConversationSettings) -> None:
    spec = create_app(settings).openapi()
    paths = spec["paths"]
    limited = [
        paths["/api/v1/conversations/{conversation_id}/messages"]["post"],
        paths["/api/v1/conversations/{conversation_id}/events"]["get"],
        paths["/internal/v1/conversations/{conversation_id}"]["get"],
        paths["/v1/conversations/{conversation_id}/items"]["post"],
        paths["/api/v1/users/me/data"]["delete"],
    ]
    assert all("429" in operation["responses"] for operation in limited)
    assert "429" not in paths["/health/ready"]["get"]["responses"]


async def test_after_a_failure_requests_skip_redis_until_it_is_worth_trying_again(
    settings: ConversationSettings,
) -> None:
    """The breaker: an outage costs each request nothing while Redis is known to be down."""
    unreachable = make_settings(settings.database_url, "redis://127.0.0.1:1/0")
    redis = Redis.from_url(unreachable.effective_redis_url(), socket_connect_timeout=1)
    now = [1000.0]
    metrics = RateLimitMetrics(CollectorRegistry())
    limiter = RateLimiter(
        unreachable, redis, metrics=metrics, retry_seconds=2.0, clock=lambda: now[0]
    )
    principal = Principal(tenant_id="t", user_id="u")
    try:
        await limiter.check_user(principal)  # tries Redis, fails, lets the request through
        assert limiter.status() == DEGRADED
        tried = metrics.fail_open._value.get()
        for _ in range(5):
            await limiter.check_user(principal)  # within the retry interval: Redis not tried
        assert metrics.fail_open._value.get() == tried == 1
        now[0] += 2.5
        await limiter.check_user(principal)  # worth trying again: tried, still down
        assert metrics.fail_open._value.get() == 2
        assert await limiter.acquire_connection(principal) is not None  # WebSockets too
    finally:
        await redis.aclose()


async def test_a_redis_that_never_answers_fails_open_after_the_check_timeout(
    settings: ConversationSettings,
) -> None:
    """A hung Redis (connection accepted, no reply) costs a request at most the check timeout."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads every command, answers none, until the client hangs up
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = make_settings(
        settings.database_url, f"redis://127.0.0.1:{port}/0", rate_limit_check_timeout=0.2
    )
    redis = Redis.from_url(hung.effective_redis_url())
    metrics = RateLimitMetrics(CollectorRegistry())
    limiter = RateLimiter(hung, redis, metrics=metrics)
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a timing
            await limiter.check_user(Principal(tenant_id="t", user_id="u"))
        assert limiter.status() == DEGRADED
        assert metrics.fail_open._value.get() == 1
    finally:
        await redis.aclose()
        server.close()


async def _until_answering(replicas: list[RateLimiter]) -> None:
    """Make each limiter's first Redis round trip (on a cluster: discovery, connections,
    script loads) on a key of its own, until it answers: a fresh client's first call on a cluster
    just healed from a failover has once failed open."""
    for replica in replicas:
        async with asyncio.timeout(30):
            while True:
                await replica.check_internal(f"warm-up-{uuid.uuid4().hex}")
                if replica.status() == "ok":
                    break
                await asyncio.sleep(RETRY_SECONDS)


async def test_blocks_taken_by_two_replicas_never_exceed_the_limit(
    settings: ConversationSettings,
) -> None:
    """High limits are spent from local blocks; across replicas the limit still holds."""
    async with limiter_redis(settings, rate_limit_internal="300/hour") as (limited, redis):
        replicas = [RateLimiter(limited, redis), RateLimiter(limited, redis)]
        await _until_answering(replicas)
        key = f"key-{uuid.uuid4().hex}"
        allowed = refused = 0
        for turn in range(400):
            try:
                await replicas[turn % 2].check_internal(key)
                allowed += 1
            except RateLimitedError:
                refused += 1
        # A check Redis did not answer fails open (its own test above): that is not this test.
        assert [r.status() for r in replicas] == ["ok", "ok"], "Redis failed during the test"
        # Blocks of 3: each replica may hold at most 2 unspent hits when the window fills.
        assert 296 <= allowed <= 300
        assert refused == 400 - allowed
        reader = FixedWindowRateLimiter(replicas[0].storage)
        digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        stats = await reader.get_window_stats(parse("300/hour"), "i", "{" + digest + "}")
        assert stats.remaining == 0
        for replica in replicas:
            await replica.aclose()
