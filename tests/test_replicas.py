"""Many replicas: real ``conversation-service serve`` processes sharing a database and Redis.

A client connected to one process receives what the orchestrator posts to another; two
processes publishing into one conversation at once give every viewer the same order; a client
resumes after its process restarts in the middle of a reply (while another deployment sharing
the Redis database sweeps idle streams); the idle sweep ends a stream once whatever the number of
replicas sweeping it.
"""

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.events.log import OPEN_STREAMS_KEY, EventPublisher, events_key
from conversation_service.events.store import StreamStore, index_member
from conversation_service.services.stream_expiry import sweep_idle_streams
from conversation_service.services.unit_of_work import Units
from conversation_service.utils.redis_client import async_redis
from tests.conftest import INTERNAL_KEY, JWT_SECRET, Caller, make_settings, new_caller, reset_schema
from tests.live_server import ServerProcess
from tests.websocket.helpers import (
    SERVICE,
    TIMEOUT,
    complete,
    event_key,
    post_deltas,
    start_reply,
    wait_until,
    ws_client,
)

pytestmark = pytest.mark.slow


def _redis_url(settings: ConversationSettings) -> str:
    assert settings.redis_url is not None
    return settings.redis_url


@asynccontextmanager
async def neighbour_sweeping(
    redis_url: str, directory: Path, *, cluster: bool = False
) -> AsyncIterator[None]:
    """Another deployment (its own SQLite database) sweeping the same Redis database eagerly."""
    settings = make_settings(f"sqlite+aiosqlite:///{directory / 'neighbour.db'}", redis_url)
    engine = create_engine(settings, null_pool=True)
    redis = async_redis(redis_url, cluster=cluster)
    await reset_schema(engine)

    class NoJobs:
        def submit(self, specs: Any) -> None:
            """A sweep records no jobs."""

    async def sweep() -> None:
        publisher, store = EventPublisher(redis), StreamStore(redis)
        while True:
            await sweep_idle_streams(Units(engine, NoJobs(), publisher), store, idle_seconds=0.05)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
        await engine.dispose()


def _env(settings: ConversationSettings, **extra: str) -> dict[str, str]:
    return {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": settings.database_url,
        "CONVERSATION_REDIS_URL": _redis_url(settings),
        "CONVERSATION_REDIS_MODE": settings.redis_mode.value,
        **(
            {"CONVERSATION_QUEUE_REDIS_URL": settings.queue_redis_url}
            if settings.queue_redis_url
            else {}
        ),
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
        "CONVERSATION_LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def replicas(env: dict[str, str], count: int = 2) -> Iterator[list[ServerProcess]]:
    """``count`` servers started in parallel, ready, stopped on exit."""
    with ExitStack() as stack:
        cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replicas-")))
        servers = [ServerProcess(env, cwd=cwd) for _ in range(count)]
        for server in servers:
            server.start()
            stack.callback(server.stop)
        for server in servers:
            server.wait_ready()
        yield servers


def _http(server: ServerProcess, caller: Caller) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=caller.headers, timeout=TIMEOUT)


async def _conversation(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/v1/conversations", json={"agent_id": "agent-1"})
    assert response.status_code == 201, response.text
    cid: str = response.json()["id"]
    return cid


def _deltas(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(f["data"]["index"], f["data"]["text"]) for f in frames if f["type"] == "message.delta"]


async def test_viewers_on_every_replica_get_every_delta_in_one_order(
    settings: ConversationSettings,
) -> None:
    caller = new_caller()
    with replicas(_env(settings)) as (a, b):
        async with _http(a, caller) as http_a, _http(b, caller) as http_b:
            cid = await _conversation(http_a)
            async with (
                ws_client(a.base_url, caller.token) as on_a,
                ws_client(b.base_url, caller.token) as on_b,
            ):
                await on_a.subscribe(cid)
                await on_b.subscribe(cid)
                message = await start_reply(http_b, cid)
                mid = message["id"]
                # Both replicas publish into the conversation at the same time.
                await asyncio.gather(
                    *(
                        post_deltas(http_a if i % 2 else http_b, cid, mid, [(i, f"{i},")])
                        for i in range(40)
                    )
                )
                final = await complete(http_a, cid, mid)
                got_a = await on_a.recv_until(lambda f: f["type"] == "message.completed")
                got_b = await on_b.recv_until(lambda f: f["type"] == "message.completed")

    assert [f["id"] for f in got_a] == [f["id"] for f in got_b]
    assert [event_key(f["id"]) for f in got_a] == sorted(event_key(f["id"]) for f in got_a)
    assert sorted(_deltas(got_a)) == [(i, f"{i},") for i in range(40)]
    assert final["content"] == "".join(f"{i}," for i in range(40))


async def test_a_client_resumes_after_its_process_restarts_mid_reply(
    settings: ConversationSettings, tmp_path: Path
) -> None:
    caller = new_caller()
    with replicas(_env(settings)) as (a, b):
        async with _http(b, caller) as http_b:
            cid = await _conversation(http_b)
            message = await start_reply(http_b, cid)
            mid = message["id"]
            async with ws_client(a.base_url, caller.token) as ws:
                await ws.subscribe(cid)
                await post_deltas(http_b, cid, mid, [(i, f"{i} ") for i in range(5)])
                before = await ws.recv_until(lambda f: f.get("data", {}).get("index") == 4)
                a.stop()  # the client's process goes away mid-reply
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv_until(lambda f: False)
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1012
            await post_deltas(http_b, cid, mid, [(i, f"{i} ") for i in range(5, 10)])

            restarted = ServerProcess(_env(settings), cwd=a.cwd, port=a.port)
            restarted.start()
            try:
                # The reply pauses while the API restarts: long enough for the neighbour.
                async with neighbour_sweeping(
                    _redis_url(settings), tmp_path, cluster=settings.redis_cluster
                ):
                    await asyncio.to_thread(restarted.wait_ready)
                async with ws_client(restarted.base_url, caller.token) as ws:
                    await ws.subscribe(cid, after=before[-1]["id"])
                    async with _http(restarted, caller) as http_a:
                        await post_deltas(http_a, cid, mid, [(i, f"{i} ") for i in range(10, 15)])
                        await complete(http_a, cid, mid)
                    after = await ws.recv_until(lambda f: f["type"] == "message.completed")
            finally:
                restarted.stop()

    assert [i for i, _ in _deltas(before)] == list(range(5))
    assert [i for i, _ in _deltas(after)] == list(range(5, 15))
    ids = [f["id"] for f in before + after]
    assert len(ids) == len(set(ids))
    assert after[-1]["data"]["message"]["content"] == "".join(f"{i} " for i in range(15))


async def test_the_idle_sweep_ends_a_stream_once_across_replicas(
    settings: ConversationSettings,
) -> None:

    caller = new_caller()
    env = _env(settings, CONVERSATION_STREAM_IDLE_TIMEOUT="0.3")
    redis = async_redis(_redis_url(settings), cluster=settings.redis_cluster)
    try:
        with replicas(env) as (a, _b):
            async with _http(a, caller) as http:
                cid = await _conversation(http)
                mid = (await start_reply(http, cid))["id"]
                await post_deltas(http, cid, mid, [(0, "partial")])
                url = f"/api/v1/conversations/{cid}/messages/{mid}"

                async def ended() -> bool:
                    return bool((await http.get(url)).json()["status"] == "incomplete")

                async def forgotten() -> bool:
                    return await redis.zscore(OPEN_STREAMS_KEY, index_member(cid, mid)) is None

                await wait_until(ended)
                await wait_until(forgotten)
                message = (await http.get(url)).json()
                events = await redis.xrange(events_key(cid))
                late = await http.post(
                    f"/internal/v1/conversations/{cid}/messages/{mid}/deltas",
                    json={"deltas": [{"index": 1, "text": "late"}]},
                    headers=SERVICE,
                )
    finally:
        await redis.aclose()
    assert message["content"] == "partial"
    failed = [f for _, f in events or [] if f and b'"type":"message.failed"' in f[b"b"]]
    assert len(failed) == 1
    assert late.status_code == 409
