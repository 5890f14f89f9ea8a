"""``CONVERSATION_REDIS_MODE`` and ``CONVERSATION_QUEUE_REDIS_URL``: RQ always gets one Redis."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from conversation_service.config.settings import ConversationSettings, RedisMode
from tests.conftest import INTERNAL_KEY, JWT_SECRET


def test_standalone_is_the_default_and_the_queue_shares_its_redis() -> None:
    settings = ConversationSettings(redis_url="redis://10.0.0.1:6379/2")
    assert settings.redis_mode is RedisMode.STANDALONE
    assert settings.effective_queue_redis_url() == "redis://10.0.0.1:6379/2"


def test_a_queue_redis_of_its_own_is_used_when_given() -> None:
    settings = ConversationSettings(
        redis_url="redis://10.0.0.1:7000",
        redis_mode="cluster",
        queue_redis_url="redis://10.0.0.9:6379/0",
    )
    assert settings.redis_cluster
    assert settings.effective_queue_redis_url() == "redis://10.0.0.9:6379/0"


@pytest.mark.parametrize("missing", ["CONVERSATION_QUEUE_REDIS_URL", "CONVERSATION_REDIS_URL"])
def test_cluster_mode_without_its_redis_urls_is_refused(missing: str) -> None:
    values = {"redis_url": "redis://10.0.0.1:7000", "queue_redis_url": "redis://10.0.0.9:6379"}
    del values[missing.removeprefix("CONVERSATION_").lower()]
    with pytest.raises(ValidationError) as refused:
        ConversationSettings(redis_mode="cluster", **values)
    assert missing in str(refused.value)


def test_serve_in_cluster_mode_without_a_queue_redis_fails_at_start_up(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        "CONVERSATION_REDIS_URL": "redis://127.0.0.1:1",
        "CONVERSATION_REDIS_MODE": "cluster",
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
    }
    env.pop("CONVERSATION_QUEUE_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "conversation_service.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "CONVERSATION_QUEUE_REDIS_URL" in result.stderr
