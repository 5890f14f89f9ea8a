"""An API process killed with SIGKILL in the middle of a streamed reply.

Two replicas share the database and Redis. A user watches the reply over a WebSocket on replica
A while the orchestrator streams it through A too; A is killed without warning (no 1012 close, no
shutdown hook). The orchestrator re-sends the batch it got no answer for to replica B (indexes
make the repeat harmless) and carries on; the user reconnects to B with the last event id it saw.
The user then has every delta exactly once and in order, the reply completes with all of it, and
the database holds it once. ``tests/test_replicas.py`` covers the graceful restart (SIGTERM).
"""

import os
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.db.tables import messages_table
from tests.conftest import INTERNAL_KEY, JWT_SECRET, new_caller
from tests.live_server import ServerProcess
from tests.websocket.helpers import SERVICE, TIMEOUT, complete, start_reply, ws_client

pytestmark = pytest.mark.slow


class KillableServer(ServerProcess):
    """A replica that can die the hard way."""

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()


def replica_env(settings: ConversationSettings) -> dict[str, str]:
    return {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": settings.database_url,
        "CONVERSATION_REDIS_URL": settings.effective_redis_url(),
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
        "CONVERSATION_LOG_LEVEL": "WARNING",
    }


async def send_deltas(
    http: httpx.AsyncClient, cid: str, mid: str, indexes: range
) -> httpx.Response:
    return await http.post(
        f"/internal/v1/conversations/{cid}/messages/{mid}/deltas",
        json={"deltas": [{"index": i, "text": f"{i} "} for i in indexes]},
        headers=SERVICE,
    )


def delta_indexes(frames: list[dict[str, Any]]) -> list[int]:
    return [f["data"]["index"] for f in frames if f["type"] == "message.delta"]


async def test_a_killed_replica_mid_reply_loses_and_repeats_nothing(
    settings: ConversationSettings,
) -> None:
    caller = new_caller()
    env = replica_env(settings)
    with tempfile.TemporaryDirectory(prefix="killed-") as tmp:
        a = KillableServer(env, cwd=Path(tmp), log_path=Path(tmp) / "a.log")
        b = KillableServer(env, cwd=Path(tmp), log_path=Path(tmp) / "b.log")
        for server in (a, b):
            server.start()
        try:
            for server in (a, b):
                server.wait_ready()
            async with (
                httpx.AsyncClient(
                    base_url=a.base_url, headers=caller.headers, timeout=TIMEOUT
                ) as on_a,
                httpx.AsyncClient(
                    base_url=b.base_url, headers=caller.headers, timeout=TIMEOUT
                ) as on_b,
            ):
                created = await on_a.post("/api/v1/conversations", json={"agent_id": "agent"})
                cid = created.json()["id"]
                async with ws_client(a.base_url, caller.token) as watcher:
                    await watcher.subscribe(cid)
                    mid = (await start_reply(on_a, cid))["id"]
                    assert (await send_deltas(on_a, cid, mid, range(0, 5))).status_code == 202
                    before = await watcher.recv_until(lambda f: f.get("data", {}).get("index") == 4)
                    a.kill()
                    # The batch in flight when A died got no answer: the orchestrator cannot
                    # know whether it was recorded, so it sends it again, to B.
                    with pytest.raises(httpx.TransportError):
                        await send_deltas(on_a, cid, mid, range(5, 10))
                    with pytest.raises(ConnectionClosed):
                        await watcher.recv_until(lambda f: False)
                assert (await send_deltas(on_b, cid, mid, range(5, 10))).status_code == 202
                async with ws_client(b.base_url, caller.token) as watcher:
                    await watcher.subscribe(cid, after=before[-1]["id"])
                    assert (await send_deltas(on_b, cid, mid, range(10, 15))).status_code == 202
                    # A retried batch repeats nothing.
                    assert (await send_deltas(on_b, cid, mid, range(10, 15))).json()[
                        "event_ids"
                    ] == [None] * 5
                    final = await complete(on_b, cid, mid)
                    after = await watcher.recv_until(lambda f: f["type"] == "message.completed")
        finally:
            for server in (a, b):
                server.stop()
    expected = "".join(f"{i} " for i in range(15))
    assert delta_indexes(before) == list(range(5))
    assert delta_indexes(after) == list(range(5, 15))
    ids = [f["id"] for f in before + after if f["id"] is not None]
    assert len(ids) == len(set(ids))
    assert final["content"] == expected
    assert after[-1]["data"]["message"]["content"] == expected
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(messages_table.c.role, messages_table.c.content).where(
                        messages_table.c.conversation_id == uuid.UUID(cid)
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(r.role, r.content) for r in rows] == [("assistant", expected)]
