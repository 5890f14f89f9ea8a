"""Reads on a real PostgreSQL streaming replica (CONVERSATION_DATABASE_READ_URL).

The replica is a second ``postgres`` on loopback, made with ``pg_basebackup`` from the test
server (``tests/pg_replica.py``); ``recovery_min_apply_delay`` holds it behind the primary. Two
apps in this process stand for two API replicas sharing the database and its read replica.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import event

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.replica import ReadReplica, format_position, parse_position
from conversation_service.main import create_app
from conversation_service.routes.read_after import COOKIE, HEADER
from conversation_service.services import callbacks
from tests import pg_replica
from tests.conftest import POSTGRES_URL, Caller, create_conversation, make_settings, new_caller
from tests.websocket.helpers import SERVICE

needs_replica = pytest.mark.skipif(
    POSTGRES_URL is None or not pg_replica.available(),
    reason="needs TEST_POSTGRES_URL and PostgreSQL's server binaries",
)


@pytest.fixture(scope="module")
def replica() -> Iterator[pg_replica.Replica]:
    """A streaming replica of the test server for this module."""
    assert POSTGRES_URL is not None
    with pg_replica.streaming_replica(POSTGRES_URL) as running:
        yield running


@pytest.fixture(scope="module")
async def apps(replica: pg_replica.Replica, redis_url: str) -> AsyncIterator[list[FastAPI]]:
    """Two API replicas reading from the replica; they check its position only when asked to,
    so every statement on it in a test is one the test caused."""
    assert POSTGRES_URL is not None
    settings = make_settings(
        POSTGRES_URL,
        redis_url,
        database_read_url=replica.url,
        database_read_check_seconds=3600,
        db_pool_size=2,
    )
    engine = create_engine(settings, null_pool=True)
    try:
        await upgrade_async(engine)
    finally:
        await engine.dispose()
    replica.catch_up()
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(2):
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            started.append(app)
        yield started


@pytest.fixture
async def healthy(
    replica: pg_replica.Replica, apps: list[FastAPI]
) -> AsyncIterator[pg_replica.Replica]:
    """The replica running, caught up and known to be up by both apps, before and after."""

    async def restore() -> None:
        if not replica.running():
            replica.start()
        replica.catch_up()
        for app in apps:
            assert await _replica_of(app).check(5.0) == "ok"

    await restore()
    yield replica
    await restore()


def _replica_of(app: FastAPI) -> ReadReplica:
    replica: ReadReplica | None = app.state.resources.units.replica
    assert replica is not None
    return replica


def _client(app: FastAPI, caller: Caller) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=caller.headers
    )


class StatementCounter:
    """Statements each engine ran (SQLAlchemy's public cursor event)."""

    def __init__(self, **engines: Any) -> None:
        self.counts = dict.fromkeys(engines, 0)
        self.engines = engines

    def __enter__(self) -> "StatementCounter":
        for name, engine in self.engines.items():
            event.listen(engine.sync_engine, "before_cursor_execute", self._counter(name))
        return self

    def _counter(self, name: str) -> Any:
        def count(*_: Any) -> None:
            self.counts[name] += 1

        self._listeners = getattr(self, "_listeners", [])
        self._listeners.append((self.engines[name].sync_engine, count))
        return count

    def __exit__(self, *_: object) -> None:
        for target, fn in self._listeners:
            event.remove(target, "before_cursor_execute", fn)


def test_positions_print_as_postgresql_prints_them() -> None:
    assert format_position(parse_position("16/B374D848")) == "16/B374D848"
    assert parse_position("0/1") < parse_position("0/10") < parse_position("1/0")
    for bad in ("", "16", "16/", "/1", "G/1", "1/123456789", "1/2/3"):
        with pytest.raises(ValueError, match="not a WAL position"):
            parse_position(bad)


@pytest.mark.parametrize("database", ["sqlite+aiosqlite:///x.db", "mysql://x"])
def test_a_read_url_is_refused_unless_both_databases_are_postgresql(database: str) -> None:
    primary = database if database.startswith("sqlite") else "postgresql+asyncpg://p/db"
    read = "postgresql+asyncpg://r/db" if database.startswith("sqlite") else database
    with pytest.raises(ValidationError, match="CONVERSATION_DATABASE_READ_URL"):
        ConversationSettings(database_url=primary, database_read_url=read)


@needs_replica
async def test_a_read_without_a_position_is_served_by_the_lagging_replica(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    caller = new_caller()
    healthy.lag("1h")
    async with _client(apps[0], caller) as client:
        created = await create_conversation(client, title="written while the replica lags")
        assert healthy.behind()
        client.cookies.clear()
        stale = await client.get(f"/api/v1/conversations/{created['id']}")
    # The replica has not replayed the insert: this read did not go to the primary.
    assert stale.status_code == 404


@needs_replica
async def test_a_client_that_wrote_reads_its_write_through_either_api_replica_while_it_lags(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    caller = new_caller()
    healthy.lag("1h")
    async with _client(apps[0], caller) as first, _client(apps[1], caller) as second:
        created = await create_conversation(first)
        cid = created["id"]
        appended = await first.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "read me back"},
        )
        assert appended.status_code == 201, appended.text
        position = appended.headers[HEADER]
        assert healthy.behind()
        fallbacks = _replica_of(apps[1]).fallbacks
        # Another API replica, told the position by the header alone (no cookie jar).
        second.cookies.clear()
        history = await second.get(
            f"/api/v1/conversations/{cid}/messages", headers={HEADER: position}
        )
        assert history.status_code == 200, history.text
        assert [m["content"] for m in history.json()["data"]] == ["read me back"]
        assert _replica_of(apps[1]).fallbacks == fallbacks + 1
        scraped = (await second.get("/metrics")).text
        assert f"conversation_db_replica_primary_fallbacks_total {fallbacks + 1}.0" in scraped
        assert "conversation_db_replica_up 1.0" in scraped
        # A browser-like client: the cookie set by the write carries the position by itself.
        second.cookies.set(COOKIE, first.cookies[COOKIE])
        listed = await second.get("/api/v1/conversations")
        assert [c["id"] for c in listed.json()["data"]] == [cid]
        # Without either, the same read shows the replica's stale view.
        second.cookies.clear()
        assert (await second.get(f"/api/v1/conversations/{cid}/messages")).status_code == 404


@needs_replica
async def test_a_caught_up_replica_serves_a_read_after_a_write_with_no_extra_round_trip(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    app = apps[0]
    replica = _replica_of(app)
    caller = new_caller()
    async with _client(app, caller) as client:
        cid = (await create_conversation(client))["id"]
        appended = await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
        )
        position = appended.headers[HEADER]
        client.cookies.clear()
        healthy.catch_up()
        # What the background check does every CONVERSATION_DATABASE_READ_CHECK_SECONDS.
        assert await replica.check(5.0) == "ok"
        assert replica.replayed >= parse_position(position)
        primary = app.state.resources.engine
        url = f"/api/v1/conversations/{cid}/messages"
        with StatementCounter(replica=replica.engine, primary=primary) as without:
            assert (await client.get(url)).status_code == 200
        checks = replica.position_checks
        with StatementCounter(replica=replica.engine, primary=primary) as with_position:
            page = await client.get(url, headers={HEADER: position})
    assert [m["content"] for m in page.json()["data"]] == ["hi"]
    assert without.counts["replica"] > 0
    assert with_position.counts == without.counts == {**without.counts, "primary": 0}
    assert replica.position_checks == checks


@needs_replica
async def test_a_malformed_read_after_header_is_refused(apps: list[FastAPI]) -> None:
    async with _client(apps[0], new_caller()) as client:
        response = await client.get("/api/v1/conversations", headers={HEADER: "yesterday"})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert HEADER in response.json()["detail"]
        # A malformed cookie is ignored: the read is merely eventually consistent.
        client.cookies.set(COOKIE, "garbage")
        assert (await client.get("/api/v1/conversations")).status_code == 200


@needs_replica
async def test_with_the_replica_stopped_reads_go_to_the_primary_and_ready_says_degraded(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    app = apps[0]
    caller = new_caller()
    async with _client(app, caller) as client:
        cid = (await create_conversation(client))["id"]
        client.cookies.clear()
        healthy.stop()
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["database_replica"].startswith("degraded")
        assert "conversation_db_replica_up 0.0" in (await client.get("/metrics")).text
        # Even without a position: the only copy that answers is the primary.
        got = await client.get(f"/api/v1/conversations/{cid}")
        assert got.status_code == 200, got.text
        # The second API replica finds out by itself, on its next read.
        async with _client(apps[1], caller) as other:
            assert (await other.get(f"/api/v1/conversations/{cid}")).status_code == 200
        healthy.start()
        ready = await client.get("/health/ready")
        assert ready.json()["checks"]["database_replica"] == "ok"
    # The other API replica's next check (every CONVERSATION_DATABASE_READ_CHECK_SECONDS).
    assert await _replica_of(apps[1]).check(5.0) == "ok"


@needs_replica
async def test_a_callback_tells_the_orchestrator_where_to_read_its_context_from(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    app = apps[0]
    settings: ConversationSettings = app.state.resources.settings
    healthy.lag("1h")
    async with _client(app, new_caller()) as client:
        cid = (await create_conversation(client))["id"]
        appended = await client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "what the agent must see"}
        )
        assert appended.status_code == 201
    captured: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200)

    engine = app.state.resources.engine
    async with engine.begin() as conn:
        spec = await callbacks.record_callback(
            conn,
            settings,
            tenant_id="t-replica",
            conversation_id=None,
            event_type="message.created",
            data={"conversation_id": cid},
            url="http://127.0.0.1:9/hook",
        )
    allowed = settings.model_copy(update={"callback_allowed_hosts": ("127.0.0.1",)})
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as http:
        await callbacks.deliver(engine, allowed, uuid.UUID(spec.args["delivery_id"]), http)
    (callback,) = captured
    position = callback.headers[HEADER]
    assert parse_position(position) >= parse_position(appended.headers[HEADER])
    async with _client(apps[1], new_caller()) as orchestrator:
        url = f"/internal/v1/conversations/{cid}/context"
        context = await orchestrator.get(url, headers={**SERVICE, HEADER: position})
        assert context.status_code == 200, context.text
        assert "what the agent must see" in context.text
        assert (await orchestrator.get(url, headers=SERVICE)).status_code == 404


@needs_replica
async def test_api_keys_are_checked_on_the_primary_so_a_revocation_holds_at_once(
    apps: list[FastAPI], healthy: pg_replica.Replica
) -> None:
    healthy.lag("1h")
    async with _client(apps[0], new_caller()) as internal:
        created = await internal.post(
            "/internal/v1/api-keys", json={"tenant": "t-keys", "user": "u-keys"}, headers=SERVICE
        )
        assert created.status_code == 201, created.text
        key = created.json()
        sdk = {"Authorization": f"Bearer {key['key']}"}
        url = f"/v1/conversations/conv_{uuid.uuid4().hex}"
        # The key's first use is a read: it records last_used_at, which a standby cannot.
        async with _client(apps[1], new_caller()) as reader:
            assert (await reader.get(url, headers=sdk)).status_code == 404
            revoked = await internal.delete(f"/internal/v1/api-keys/{key['id']}", headers=SERVICE)
            assert revoked.status_code == 204
            assert healthy.behind()
            assert (await reader.get(url, headers=sdk)).status_code == 401
